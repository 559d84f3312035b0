"""Build MMSegmentation / MMDetection models from what a distillation config names.

A network is given as an inline model dict (``dict(type='EncoderDecoder', ...)``), as a path to
a local config file whose ``model`` is taken, or as an installed package config such as
``'mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py'``.
"""
from __future__ import annotations

import copy
import importlib
import os.path as osp

from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope
from torch import nn

#: the task packages a distillation model can build from, by their mmengine scope
TASK_SCOPES = ('mmseg', 'mmdet')


def resolve_config_path(path: str) -> str:
    """A local path (checked) or ``pkg::rel/path.py`` resolved inside the installed package."""
    if '::' in path:
        from mmengine.config.utils import (_get_external_cfg_base_path,
                                           _get_package_and_cfg_path)
        from mmengine.utils import get_installed_path
        package, rel_path = _get_package_and_cfg_path(path)
        return _get_external_cfg_base_path(get_installed_path(package), rel_path)
    expanded = osp.abspath(osp.expanduser(path))
    if not osp.isfile(expanded):
        raise FileNotFoundError(f'model config file not found: {path!r} (looked at {expanded})')
    return expanded


def load_model_cfg(spec) -> ConfigDict:
    """The model config dict of ``spec`` (a dict, or a config file holding ``model=...``)."""
    if isinstance(spec, (str, bytes)) or hasattr(spec, '__fspath__'):
        path = resolve_config_path(str(spec))
        cfg = Config.fromfile(path)
        if 'model' not in cfg:
            raise KeyError(f'config file {path} has no `model` entry')
        return ConfigDict(copy.deepcopy(cfg.model))
    if isinstance(spec, dict):
        return ConfigDict(copy.deepcopy(dict(spec)))
    raise TypeError(f'a network is a model config dict or a config file path, got {spec!r}')


def task_registry(scope: str):
    """The MODELS registry of a task package, with all its modules registered."""
    if scope not in TASK_SCOPES:
        raise ValueError(f'unknown task scope {scope!r}; expected one of {TASK_SCOPES}')
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    return importlib.import_module(f'{scope}.registry').MODELS


def build_mm_model(spec, scope: str, drop_pretrained: bool = False) -> nn.Module:
    """Build a segmentor (``scope='mmseg'``) or detector (``'mmdet'``) from ``spec``.

    ``drop_pretrained`` removes ``pretrained`` and backbone ``init_cfg`` entries, so nothing is
    downloaded (tests, or a teacher whose weights come from ``teacher_ckpt`` anyway).
    """
    if isinstance(spec, nn.Module):
        return spec
    cfg = load_model_cfg(spec)
    if drop_pretrained:
        cfg.pop('pretrained', None)
        if isinstance(cfg.get('backbone'), dict):
            cfg.backbone.pop('init_cfg', None)
            cfg.backbone.pop('pretrained', None)
    registry = task_registry(scope)
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg)
