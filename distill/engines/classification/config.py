"""Strict config checks of the classification engine, run before anything is built.

Every key of a section the engine reads (``data``, ``schedule``, ``train``, ``optimizer``,
``arch_optimizer``, the dataset configs) must be one it knows, and values have the right type:
``--cfg-options schedule.epoch=2`` fails naming ``schedule.epoch`` and suggesting
``schedule.epochs`` instead of running the default schedule. At the top level, names that are
not sections are config variables (``num_classes = 6``) and stay allowed, unless they are a
near-miss of a section (``schedul``). The distiller is checked by ``distill.build_distiller``.
"""
from __future__ import annotations

import difflib

from distill.config_checks import (ConfigError, accepted_kwargs, check_keys, check_number,
                                   check_registered, check_top_level_keys)
from distill.engines.core.checkpoints import check_keep_checkpoints
from distill.engines.core.optimizers import check_optimizer_cfg

SECTIONS = ('distiller', 'data', 'optimizer', 'schedule', 'train', 'arch_optimizer',
            'work_dir')
DATA_KEYS = ('train', 'val', 'batch_size', 'val_batch_size', 'num_workers', 'augment',
             'normalize', 'on_device')
SCHEDULE_KEYS = ('epochs', 'milestones', 'gamma', 'param_scheduler')
# where a key given at the top level by mistake belongs (--cfg-options loss_weights.co=0.1)
KNOWN_SUBKEYS = dict(
    distiller=('type', 'student', 'teacher', 'adapter', 'online', 'loss_weights', 'temperature',
               'taps', 'connector', 'teacher_ckpt', 'random_teacher', 'tau', 'tau_schedule'),
    data=DATA_KEYS, schedule=SCHEDULE_KEYS, optimizer=('lr', 'momentum', 'weight_decay',
                                                       'betas', 'nesterov', 'eps'))
CHOICES = dict(mixed_precision=('no', 'fp16', 'bf16'), check_finite=('step', 'epoch'))


def _check_int(key, value, minimum, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f'{key} must be an int >= {minimum}, got {value!r}')


def _as_dict(key, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f'{key} must be a dict, got {value!r} ({type(value).__name__})')
    return value


def check_cfg_options(options: dict, cfg, train_defaults: dict) -> None:
    """``--cfg-options`` keys must start with a section or a variable the config defines: a
    new top-level name there is a typo (``loss_weights.co=0.1`` for
    ``distiller.loss_weights.co=0.1``), which a config file's own variables cannot be."""
    subkeys = {**KNOWN_SUBKEYS, 'train': tuple(train_defaults)}
    for key in options or {}:
        head = key.split('.')[0]
        if head in SECTIONS or head in cfg:
            continue
        homes = [f'{section}.{key}' for section, keys in subkeys.items() if head in keys]
        near = homes or difflib.get_close_matches(head, SECTIONS, n=1, cutoff=0.6)
        hint = f'; did you mean {" or ".join(near)}?' if near else '.'
        raise ConfigError(f'--cfg-options {key}: {head!r} is neither a section nor a name of '
                          f'the config{hint} The sections are: {", ".join(SECTIONS)}')


def check_schedule(schedule) -> None:
    schedule = _as_dict('schedule', schedule)
    check_keys('schedule', schedule, SCHEDULE_KEYS)
    _check_int('schedule.epochs', schedule.get('epochs', 1), 1)
    milestones = schedule.get('milestones', [])
    if not isinstance(milestones, (list, tuple)):
        raise ConfigError(f'schedule.milestones must be a list of epochs, got {milestones!r}')
    for i, epoch in enumerate(milestones):
        _check_int(f'schedule.milestones[{i}]', epoch, 1)
    check_number('schedule.gamma', schedule.get('gamma', 0.1), positive=True)
    given = schedule.get('param_scheduler')
    if given is None:
        return
    if 'milestones' in schedule or 'gamma' in schedule:
        raise ConfigError('schedule: give either milestones/gamma (a step decay) or '
                          'param_scheduler, not both')
    import mmengine.optim  # noqa: F401  (registers the schedulers)
    from mmengine.registry import PARAM_SCHEDULERS
    for i, item in enumerate(given if isinstance(given, (list, tuple)) else [given]):
        key = f'schedule.param_scheduler[{i}]'
        if not isinstance(item, dict) or 'type' not in item:
            raise ConfigError(f"{key} must be a dict with a 'type' (e.g. "
                              f"dict(type='CosineAnnealingLR', T_max=10)), got {item!r}")
        check_registered(f'{key}.type', PARAM_SCHEDULERS, item['type'])


def check_train(train, defaults: dict) -> None:
    train = _as_dict('train', train)
    check_keys('train', train, defaults)
    merged = {**defaults, **train}
    for key, choices in CHOICES.items():
        if merged[key] not in choices:
            raise ConfigError(f'train.{key} must be one of {", ".join(map(repr, choices))}, '
                              f'got {merged[key]!r}')
    _check_int('train.seed', merged['seed'], 0)
    _check_int('train.gradient_accumulation_steps', merged['gradient_accumulation_steps'], 1)
    _check_int('train.log_interval', merged['log_interval'], 1)
    check_keep_checkpoints('train.keep_checkpoints', merged['keep_checkpoints'])
    check_number('train.grad_clip', merged['grad_clip'], positive=True, allow_none=True)
    if not isinstance(merged['channels_last'], bool):
        raise ConfigError(f"train.channels_last is True or False, got {merged['channels_last']!r}")


def check_dataset(key, cfg) -> None:
    from distill.registry import DATASETS
    cfg = _as_dict(key, cfg)
    if 'type' not in cfg:
        raise ConfigError(f"{key} needs a 'type' (e.g. 'CIFAR100', 'ImageFolder', "
                          f"'ShapesClassification'), got {dict(cfg)}")
    check_registered(f'{key}.type', DATASETS, cfg['type'])
    dataset_class = DATASETS.get(cfg['type'])
    if dataset_class is None:
        return
    names = accepted_kwargs(dataset_class)
    if names is None and cfg['type'] == 'ShapesClassification':
        # its **kwargs go to render_shapes (all but the sample index)
        import inspect

        from distill.data.shapes import render_shapes
        own = inspect.signature(dataset_class).parameters.values()
        names = [p.name for p in own if p.kind is not p.VAR_KEYWORD] + [
            n for n in accepted_kwargs(render_shapes) if n != 'index']
    if names is not None:
        check_keys(key, [k for k in cfg if k != 'type'], names)


def check_data(data, prebuilt: bool) -> None:
    data = _as_dict('data', data)
    check_keys('data', data, DATA_KEYS)
    _check_int('data.batch_size', data.get('batch_size', 64), 1)
    _check_int('data.val_batch_size', data.get('val_batch_size'), 1, allow_none=True)
    _check_int('data.num_workers', data.get('num_workers', 0), 0)
    if not isinstance(data.get('on_device', True), bool):
        raise ConfigError(f"data.on_device is True or False, got {data.get('on_device')!r}")
    check_keys('data.augment', _as_dict('data.augment', data.get('augment')), ('padding', 'flip'))
    check_keys('data.normalize', _as_dict('data.normalize', data.get('normalize')),
               ('mean', 'std'))
    for split in ('train', 'val'):
        if split in data:
            check_dataset(f'data.{split}', data[split])
        elif not prebuilt:
            raise ConfigError(f'the config has no data.{split}')


def check_classification_config(cfg, train_defaults: dict, prebuilt_datasets: bool = False):
    """Raise ``ConfigError`` naming the first unknown key or ill-typed value."""
    # a near-miss of a section (schedul) is a typo; other names are the config's variables
    check_top_level_keys(cfg, SECTIONS, what='config section', cutoff=0.75)
    if 'distiller' not in cfg:
        raise ConfigError('the config has no distiller section')
    check_schedule(cfg.get('schedule'))
    check_train(cfg.get('train'), train_defaults)
    check_data(cfg.get('data'), prebuilt_datasets)
    for section in ('optimizer', 'arch_optimizer'):
        check_optimizer_cfg(section, _as_dict(section, cfg.get(section)))
