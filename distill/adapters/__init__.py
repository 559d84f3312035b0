"""Adapters: model + batch -> task loss and outputs.

The classifier adapter is always there. The others import their task framework (diffusers,
mmseg, mmdet), so they are imported only when a config names them: ``build_adapter`` does that.
"""
from __future__ import annotations

import importlib


from distill.adapters.base import Adapter, ModelOutput, NoHeadError
from distill.adapters.classifier import ClassifierAdapter
from distill.registry import ADAPTERS

__all__ = ['Adapter', 'ModelOutput', 'NoHeadError', 'ClassifierAdapter', 'build_adapter']

# adapter type -> the module that registers it (and imports its framework)
OPTIONAL_ADAPTERS = {
    'DiffusionAdapter': 'distill.adapters.diffusers',
    'MMSegAdapter': 'distill.adapters.mmseg',
    'MMDetAdapter': 'distill.adapters.mmdet',
}


def build_adapter(cfg) -> Adapter:
    """An adapter instance as given, or one built from ``dict(type=..., ...)``."""
    if isinstance(cfg, Adapter):
        return cfg
    module = OPTIONAL_ADAPTERS.get(str(cfg.get('type', '')).replace('distill.', ''))
    if module is not None:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(f"adapter {cfg['type']!r} needs a package that is not installed "
                              f'({err}); install the matching extra, e.g. '
                              f"pip install 'distill[seg]'") from err
    return ADAPTERS.build(dict(cfg))
