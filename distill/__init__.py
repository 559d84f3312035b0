"""distill: knowledge distillation across vision tasks (ADM, SoKD and baselines)."""
from distill.registry import ADAPTERS, CONNECTORS, DATASETS, DISTILLERS, LOSSES, MODELS

__version__ = '0.2.0'
__all__ = ['DISTILLERS', 'LOSSES', 'CONNECTORS', 'ADAPTERS', 'MODELS', 'DATASETS',
           'build_distiller']


def build_distiller(cfg):
    """Build a distiller from a config dict, e.g. ``dict(type='ADM', student=..., ...)``."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"build_distiller needs a dict with a 'type' key, got {cfg!r}")
    from distill.config_checks import check_built_distiller, check_distiller_cfg
    check_distiller_cfg(cfg)  # type, loss weights, tap pairs: named before anything is built
    distiller = DISTILLERS.build(dict(cfg))
    check_built_distiller(distiller)  # logits agree, no 1x1 taps
    return distiller
