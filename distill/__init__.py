"""distill: knowledge distillation across vision tasks (ADM, SoKD and baselines)."""
from distill.registry import ADAPTERS, CONNECTORS, DATASETS, DISTILLERS, LOSSES, MODELS

__version__ = '0.1.0'
__all__ = ['DISTILLERS', 'LOSSES', 'CONNECTORS', 'ADAPTERS', 'MODELS', 'DATASETS',
           'build_distiller']


def build_distiller(cfg):
    """Build a distiller from a config dict, e.g. ``dict(type='ADM', student=..., ...)``."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"build_distiller needs a dict with a 'type' key, got {cfg!r}")
    return DISTILLERS.build(dict(cfg))
