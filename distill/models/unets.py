"""diffusers UNets in the model zoo: ``dict(type='UNet2DModel', **config)`` builds a random
``diffusers.UNet2DModel``, ``dict(type='UNet2DModel', pretrained=DIR)`` loads a local
``save_pretrained`` directory (nothing is downloaded); likewise ``UNet2DConditionModel``.

They are registered with the other models (``distill.models`` imports this module), not by the
diffusion adapter, so building a distiller's networks does not depend on the adapter having
been imported first. diffusers is imported only when a UNet is built: the zoo works without it.
"""
from __future__ import annotations

import os

from distill.registry import MODELS


def _diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise ImportError('UNet models need diffusers, which is not installed: '
                          'bash scripts/install.sh diffusion') from err
    return diffusers


def _load_local(cls, pretrained: str, subfolder: str | None, config: dict):
    if config:
        raise ValueError(f'{cls.__name__}: give either pretrained={pretrained!r} or a config, '
                         f'not both (got also {sorted(config)})')
    where = os.path.join(pretrained, subfolder) if subfolder else pretrained
    if not os.path.isdir(where):
        raise FileNotFoundError(f'{cls.__name__}: no local directory {where!r} (a directory '
                                f'written by save_pretrained; nothing is downloaded)')
    return cls.from_pretrained(pretrained, subfolder=subfolder, local_files_only=True)


def plain_config(value):
    """mmengine configs may hold lists where diffusers documents tuples; both work, but a
    ConfigDict must become a dict for diffusers' config machinery."""
    return dict(value) if isinstance(value, dict) else value


@MODELS.register_module(name='UNet2DModel')
def build_unet2d(pretrained: str | None = None, subfolder: str | None = None, **config):
    """``diffusers.UNet2DModel(**config)``, or ``from_pretrained(pretrained)`` (local only)."""
    if pretrained:
        return _load_local(_diffusers().UNet2DModel, pretrained, subfolder, config)
    return _diffusers().UNet2DModel(**{k: plain_config(v) for k, v in config.items()})


@MODELS.register_module(name='UNet2DConditionModel')
def build_unet2d_condition(pretrained: str | None = None, subfolder: str | None = None,
                           **config):
    """``diffusers.UNet2DConditionModel(**config)``, or a local ``from_pretrained``."""
    if pretrained:
        return _load_local(_diffusers().UNet2DConditionModel, pretrained, subfolder, config)
    return _diffusers().UNet2DConditionModel(**{k: plain_config(v) for k, v in config.items()})
