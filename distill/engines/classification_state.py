"""Optimisers and the learning-rate schedule of the classification engine (checkpoints:
``classification_checkpoint``)."""
from __future__ import annotations

import torch
from torch import nn

from distill.config_checks import check_kwargs, check_number

# no weight decay: an L2 pull on alpha outweighs the hypergradient and the search stands still
DEFAULT_ARCH_OPTIMIZER = dict(type='Adam', lr=3e-3, betas=(0.5, 0.999), weight_decay=0.0)


def build_optimizer(cfg: dict, params, what: str = 'optimizer') -> torch.optim.Optimizer:
    """``torch.optim.<type>(params, **rest)`` from ``dict(type='SGD', lr=..., ...)``."""
    cfg = dict(cfg)
    name = cfg.pop('type', None)
    optim_class = getattr(torch.optim, str(name), None)
    if not (isinstance(optim_class, type) and issubclass(optim_class, torch.optim.Optimizer)):
        raise KeyError(f'{what}.type={name!r} is not an optimiser of torch.optim '
                       f'(e.g. SGD, AdamW)')
    check_kwargs(what, cfg, optim_class)
    for key in ('lr', 'weight_decay', 'momentum'):
        if key in cfg:
            check_number(f'{what}.{key}', cfg[key])
    params = list(params)
    if not params:
        raise ValueError(f'{what}: no trainable parameter to optimise')
    return optim_class(params, **cfg)


def build_lr_scheduler(schedule: dict, optimizer) -> torch.optim.lr_scheduler.MultiStepLR:
    """Step decay by ``gamma`` at each epoch of ``milestones`` (stepped once per epoch)."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(schedule.get('milestones', [])),
        gamma=float(schedule.get('gamma', 0.1)))


def split_arch_parameters(distiller: nn.Module):
    """(main parameters, architecture parameters) of a distiller.

    A distiller with ``arch_parameters()`` (SoKD's augmentation policy) has parameters that a
    second optimiser updates from ``arch_backward``; they stay out of the main optimiser. The
    main one gets every other parameter that requires grad (a frozen teacher has none).
    """
    arch_params = list(distiller.arch_parameters()) if hasattr(distiller,
                                                               'arch_parameters') else []
    arch_ids = {id(p) for p in arch_params}
    main_params = [p for p in distiller.parameters()
                   if p.requires_grad and id(p) not in arch_ids]
    return main_params, arch_params
