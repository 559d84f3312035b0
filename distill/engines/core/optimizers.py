"""Optimisers and learning-rate schedules of the Accelerate engines, from mmengine's registries.

``optimizer=dict(type='SGD', lr=0.05, momentum=0.9)`` is built by mmengine's ``OPTIMIZERS``
(every ``torch.optim`` class, plus whatever a project registers). The schedule is a list of
mmengine ``PARAM_SCHEDULERS`` configs (``MultiStepLR``, ``CosineAnnealingLR``, ``LinearLR``
for a warm-up, ...); the classification shorthand ``schedule=dict(epochs=.., milestones=..,
gamma=..)`` means ``[dict(type='MultiStepLR', milestones=.., gamma=..)]``.

Resume rule (``restore_schedule``): the config wins. Explicit optimiser settings of the config
(lr, weight decay, momentum, ...) are applied over the restored optimiser state, each change
returned for a log line; then the schedulers are rebuilt from the config and replayed over the
epochs (or steps) already done, from the initial lr. An uninterrupted run performs the same
operations in the same order, so the lr is bit-identical, and a schedule changed in the config
since the checkpoint takes effect instead of being silently replaced by the checkpoint's.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from distill.config_checks import ConfigError, accepted_kwargs, check_keys, check_number, closest
from distill.distillers.sokd import ARCH_OPTIMIZER

# SoKD's architecture optimiser when a config gives none: the method's own recommendation,
# one definition for both engines (its why: ``distill.distillers.sokd``)
DEFAULT_ARCH_OPTIMIZER = ARCH_OPTIMIZER


def _optimizers():
    import mmengine.optim  # noqa: F401  (registers torch.optim's classes in OPTIMIZERS)
    from mmengine.registry import OPTIMIZERS
    return OPTIMIZERS


def optimizer_class(what: str, cfg: dict) -> type:
    """The class ``cfg['type']`` names in mmengine's ``OPTIMIZERS``; a ``ConfigError`` naming
    the key and the closest names otherwise."""
    registry = _optimizers()
    name = cfg.get('type')
    found = registry.get(name) if isinstance(name, str) else None
    if not (isinstance(found, type) and issubclass(found, torch.optim.Optimizer)):
        near = closest(str(name), list(registry.module_dict))
        hint = f'; did you mean {" or ".join(near)}?' if near else '.'
        raise ConfigError(f'{what}.type={name!r} is not an optimiser of mmengine\'s OPTIMIZERS '
                          f'(torch.optim){hint} Some are: SGD, Adam, AdamW')
    return found


def check_optimizer_cfg(what: str, cfg: dict) -> None:
    if not cfg:
        return
    optim_class = optimizer_class(what, cfg)
    check_keys(what, [k for k in cfg if k != 'type'], accepted_kwargs(optim_class) or cfg)
    for key in ('lr', 'weight_decay', 'momentum'):
        if key in cfg:
            check_number(f'{what}.{key}', cfg[key])


def build_optimizer(cfg: dict, params, what: str = 'optimizer') -> torch.optim.Optimizer:
    check_optimizer_cfg(what, dict(cfg))
    params = list(params)
    if not params:
        raise ValueError(f'{what}: no trainable parameter to optimise')
    return _optimizers().build(dict(cfg, params=params))


def scheduler_configs(schedule: dict) -> list[dict]:
    """The mmengine scheduler configs of a ``schedule`` section: ``param_scheduler`` (a dict or
    a list) if given, else ``MultiStepLR`` over ``milestones`` (none: a constant lr)."""
    if schedule.get('param_scheduler') is not None:
        given = schedule['param_scheduler']
        return [dict(c) for c in (given if isinstance(given, (list, tuple)) else [given])]
    return [dict(type='MultiStepLR', milestones=list(schedule.get('milestones', [])),
                 gamma=float(schedule.get('gamma', 0.1)))]


def build_schedulers(configs: list[dict], optimizer, by_epoch: bool) -> list:
    from mmengine.registry import PARAM_SCHEDULERS
    import mmengine.optim  # noqa: F401  (registers the schedulers)
    schedulers = []
    for cfg in configs:
        cfg = dict(cfg)
        cfg.setdefault('by_epoch', by_epoch)
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()" on replay
            warnings.simplefilter('ignore')
            schedulers.append(PARAM_SCHEDULERS.build(dict(cfg, optimizer=optimizer)))
    return schedulers


def step_schedulers(schedulers, times: int = 1) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for _ in range(times):
            for scheduler in schedulers:
                scheduler.step()


def _differs(old, new) -> bool:
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(old) != list(new)  # betas: a tuple in the optimiser, a list in a config
    return old != new


def apply_config_over_restored(optimizer, optimizer_cfg: dict, what: str = 'optimizer',
                               names: dict | None = None) -> list[str]:
    """Set the config's optimiser settings over a restored optimiser state (``lr`` as the
    initial lr, which the schedule then decays); return the changes for a log line, each
    named as the user gave it: ``names[key]`` (a command-line flag) or ``what.key``."""
    changes = []
    for key, value in optimizer_cfg.items():
        if key == 'type':
            continue
        label = (names or {}).get(key, f'{what}.{key}')
        for group in optimizer.param_groups:
            slot = 'initial_lr' if key == 'lr' and 'initial_lr' in group else key
            if key in group and _differs(group[slot], value):
                changes.append(f'{label}: {group[slot]} (checkpoint) -> {value} (config)')
                group[slot] = value
    return sorted(set(changes), key=changes.index)


def restore_schedule(optimizer, optimizer_cfg: dict, configs: list[dict], by_epoch: bool,
                     done: int, names: dict | None = None) -> tuple[list, list[str]]:
    """After ``optimizer`` was restored: the config's settings over it, the schedulers rebuilt
    and replayed ``done`` times. Returns ``(schedulers, changes)``."""
    changes = apply_config_over_restored(optimizer, optimizer_cfg, names=names)
    for group in optimizer.param_groups:
        if 'initial_lr' in group:
            group['lr'] = group['initial_lr']
    schedulers = build_schedulers(configs, optimizer, by_epoch)
    step_schedulers(schedulers, done)
    return schedulers, changes


def split_arch_parameters(model: nn.Module):
    """(main parameters, architecture parameters) of a distiller.

    A distiller with ``arch_parameters()`` (SoKD's augmentation policy) has parameters that a
    second optimiser updates from ``arch_backward``; they stay out of the main optimiser. The
    main one gets every other parameter that requires grad (a frozen teacher has none)."""
    arch = list(model.arch_parameters()) if hasattr(model, 'arch_parameters') else []
    arch_ids = {id(p) for p in arch}
    main = [p for p in model.parameters() if p.requires_grad and id(p) not in arch_ids]
    return main, arch
