"""Optimisers, the learning-rate schedule and checkpoints of the classification engine.

A checkpoint (``latest.pth`` and ``epoch_{n}.pth`` in the work dir, written atomically) holds
only tensors and plain containers, so it loads with ``torch.load(weights_only=True)``:

    model          the distiller's state dict (student, teacher, connectors, ...)
    optimizer      the main optimiser's state dict
    lr_scheduler   the MultiStepLR state dict
    arch_optimizer the architecture optimiser's state dict (SoKD-style distillers), or None
    grad_scaler    the fp16 gradient scaler's state dict, or None
    epoch          the last finished epoch (1-based); training resumes at epoch + 1
    global_step    optimiser steps taken so far (one per batch)
    metrics        the list of epoch records of ``metrics.json`` so far
    meta           seed, number of processes, library version, the config as text
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from distill.checkpoint import load_checkpoint, save_atomic

DEFAULT_ARCH_OPTIMIZER = dict(type='Adam', lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3)


def build_optimizer(cfg: dict, params, what: str = 'optimizer') -> torch.optim.Optimizer:
    """``torch.optim.<type>(params, **rest)`` from ``dict(type='SGD', lr=..., ...)``."""
    cfg = dict(cfg)
    name = cfg.pop('type', None)
    optim_class = getattr(torch.optim, str(name), None)
    if not (isinstance(optim_class, type) and issubclass(optim_class, torch.optim.Optimizer)):
        raise KeyError(f'{what}.type={name!r} is not an optimiser of torch.optim '
                       f'(e.g. SGD, AdamW)')
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


def checkpoint_state(model, optimizer, lr_scheduler, arch_optimizer, grad_scaler, epoch,
                     global_step, records, meta) -> dict:
    return dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                lr_scheduler=lr_scheduler.state_dict(),
                arch_optimizer=arch_optimizer.state_dict() if arch_optimizer else None,
                grad_scaler=grad_scaler.state_dict() if grad_scaler is not None else None,
                epoch=epoch, global_step=global_step, metrics=list(records), meta=meta)


def save_checkpoints(state: dict, work_dir: Path, keep: int | None = None) -> Path:
    """Write ``epoch_{n}.pth`` then ``latest.pth`` atomically; keep the ``keep`` newest
    ``epoch_*.pth`` (all when ``keep`` is falsy)."""
    work_dir = Path(work_dir)
    epoch_path = save_atomic(state, work_dir / f'epoch_{state["epoch"]}.pth')
    save_atomic(state, work_dir / 'latest.pth')
    if keep:
        numbered = sorted(work_dir.glob('epoch_*.pth'),
                          key=lambda p: int(re.findall(r'\d+', p.stem)[0]))
        for old in numbered[:-keep]:
            old.unlink()
    return epoch_path


def find_resume_checkpoint(work_dir: Path, resume) -> Path | None:
    """``resume`` is False/None (fresh run), True (``work_dir/latest.pth`` if it exists) or a
    path (which must exist)."""
    if not resume:
        return None
    if resume is True or resume == 'auto':
        latest = Path(work_dir) / 'latest.pth'
        return latest if latest.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f'--resume {path}: no such checkpoint')
    return path


def restore_checkpoint(path, model, optimizer, lr_scheduler, arch_optimizer, grad_scaler):
    """Load a checkpoint of ``checkpoint_state`` into the objects; return it (for epoch,
    global_step, metrics)."""
    state = load_checkpoint(path)
    missing = {'model', 'optimizer', 'lr_scheduler', 'epoch', 'metrics'} - set(state)
    if missing:
        raise KeyError(f'{path} is not a classification training checkpoint: it lacks '
                       f'{sorted(missing)}')
    model.load_state_dict(state['model'])
    optimizer.load_state_dict(state['optimizer'])
    lr_scheduler.load_state_dict(state['lr_scheduler'])
    if arch_optimizer is not None:
        if state.get('arch_optimizer') is None:
            raise KeyError(f'{path} has no arch_optimizer state but this distiller has '
                           f'architecture parameters')
        arch_optimizer.load_state_dict(state['arch_optimizer'])
    if grad_scaler is not None and state.get('grad_scaler') is not None:
        grad_scaler.load_state_dict(state['grad_scaler'])
    return state
