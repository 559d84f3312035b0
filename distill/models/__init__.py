"""Classification model zoo: CIFAR ResNets, Wide ResNets, a tiny CNN, and timm models.

Every model maps images to logits with ``forward(x)`` and exposes the hand-over point that
feature distillers need: ``head_input`` names the module whose output ``forward_head`` turns
into logits, so a distiller can refine that feature and still get logits from it.

    >>> model = build_model(dict(type='resnet8x4', num_classes=100))
    >>> model = build_model(dict(type='timm/resnet18', num_classes=10, pretrained=False))
"""
import difflib

import torch.nn as nn

from distill.registry import MODELS

from . import cifar_resnet, cifar_wrn, tiny, unets  # noqa: F401  (importing registers the models)
from .cifar_resnet import CifarResNet
from .cifar_wrn import WideResNet
from .tiny import TinyCNN

__all__ = ['build_model', 'CifarResNet', 'WideResNet', 'TinyCNN']

TIMM_PREFIX = 'timm/'


def build_model(cfg):
    """Build a model from a config dict such as ``dict(type='resnet8x4', num_classes=100)``.

    ``type`` is a name registered in ``distill.registry.MODELS``, or ``'timm/<name>'`` for
    ``timm.create_model(<name>, **rest)``.  An ``nn.Module`` is returned unchanged.
    """
    if isinstance(cfg, nn.Module):
        return cfg
    cfg = dict(cfg)  # a copy, also turns an mmengine ConfigDict into a plain dict
    model_type = cfg.get('type')
    if isinstance(model_type, str) and model_type.startswith(TIMM_PREFIX):
        cfg.pop('type')
        return create_timm_model(model_type[len(TIMM_PREFIX):], **cfg)
    if isinstance(model_type, str) and model_type in MODELS.module_dict:
        # Scope-qualified, so it is found even when an mmengine Runner has set another
        # default scope (mmseg, mmdet), which would otherwise redirect the look-up there.
        cfg['type'] = f'{MODELS.scope}.{model_type}'
    elif isinstance(model_type, str) and MODELS.get(model_type) is None:
        raise KeyError(_unknown_model_message(model_type))
    return MODELS.build(cfg)


def create_timm_model(name, **kwargs):
    """``timm.create_model(name, **kwargs)``, with ``head_input`` set for distillers.

    timm's own ``forward_head(features)`` is kept; ``head_input`` names the last feature stage
    from timm's ``feature_info`` ('layer4' for ResNets), whose output is what
    ``forward_head`` takes for CNNs whose ``forward_features`` ends with that stage.
    """
    try:
        import timm
    except ImportError as err:
        raise ImportError(
            f"model 'timm/{name}' needs timm, which is not installed: pip install timm") from err
    model = timm.create_model(name, **kwargs)
    feature_info = getattr(model, 'feature_info', None)
    if not hasattr(model, 'head_input') and feature_info:
        model.head_input = feature_info[-1]['module']
    return model


def _unknown_model_message(name):
    known = sorted(MODELS.module_dict)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f' Did you mean {", ".join(map(repr, close))}?' if close else ''
    return (f'unknown model type {name!r}.{hint} Registered models: {", ".join(known)}; '
            f"timm models are named 'timm/<name>'.")
