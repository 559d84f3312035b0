"""Config of a diffusion run: an mmengine Python config, the diffusers example's flags on top.

Precedence: defaults below < config file < ``--cfg-options k=v`` < named flags
(``--output_dir``, ``--mixed_precision``, ...), each of which overrides the top-level key of
the same name; the flags of diffusers' ``train_unconditional.py`` whose key lives elsewhere
(``--prediction_type``, ``--ddpm_num_steps``, ``--logger``, ``--random_flip``, ...) are mapped
to it (``RENAMED_FLAGS``, ``SWITCHES``), and ``--resolution`` sets the data's and the UNets'.
Its ``--num_epochs`` sets ``max_train_steps`` from the number of batches per epoch.
``--teacher_model_name_or_path DIR`` replaces the teacher by the local
``save_pretrained`` directory ``DIR`` (its class read from ``DIR/config.json``) and makes the
run offline (frozen teacher); to fine-tune a pretrained teacher online instead, write
``teacher=dict(type=..., pretrained=DIR)`` and ``distiller.online=True`` in the config.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULTS = dict(
    output_dir='work_dirs/diffusion', seed=0, mixed_precision='no',
    gradient_accumulation_steps=1, train_batch_size=16, max_train_steps=10000,
    learning_rate=1e-4, lr_scheduler='cosine', lr_warmup_steps=500,
    adam_beta1=0.95, adam_beta2=0.999, adam_weight_decay=1e-6, adam_epsilon=1e-8,
    max_grad_norm=1.0, use_ema=True, ema_max_decay=0.9999, ema_inv_gamma=1.0, ema_power=0.75,
    checkpointing_steps=500, checkpoints_total_limit=None, resume_from_checkpoint=None,
    validation_steps=500, num_validation_images=8, num_inference_steps=50,
    report_to='tensorboard', logging_dir='logs', logging_steps=50, dataloader_num_workers=0,
    train_data_dir=None, num_epochs=None, overwrite_output_dir=False,
    validation_epochs=None, checkpointing_epochs=None,
    evaluation=dict(num_images=64, num_buckets=4, num_samples=16, inception_weights=None),
)

# the top-level keys that are not DEFAULTS: the networks and the other sections
SECTIONS = ('student', 'teacher', 'distiller', 'noise_scheduler', 'data', 'vae',
            'conditioning', 'tracker_project_name')

# flag -> (type, help); each overrides the config key of the same name
FLAGS = dict(
    output_dir=(str, 'where checkpoints, logs, metrics.json and the student go'),
    mixed_precision=(str, "'no', 'fp16' or 'bf16'"),
    gradient_accumulation_steps=(int, 'micro-batches per optimiser step'),
    checkpointing_steps=(int, 'save checkpoint-N every N optimiser steps'),
    checkpoints_total_limit=(int, 'keep at most this many checkpoints'),
    resume_from_checkpoint=(str, "'latest' or a checkpoint-N folder"),
    report_to=(str, "'tensorboard' or 'none'"),
    seed=(int, 'seed of weights, data order, noise'),
    train_data_dir=(str, 'a folder of your images (any depth); default: the config data'),
    max_train_steps=(int, 'optimiser steps'),
    train_batch_size=(int, 'images per process per micro-batch'),
    learning_rate=(float, 'peak learning rate'),
    lr_scheduler=(str, 'cosine, cosine_with_restarts, linear, polynomial, constant or '
                       'constant_with_warmup (as diffusers\' get_scheduler, on mmengine '
                       'schedulers)'),
    lr_warmup_steps=(int, 'warm-up optimiser steps'),
    validation_steps=(int, 'DDIM grid every N steps (0: never)'),
    num_inference_steps=(int, 'DDIM steps for validation grids'),
    teacher_model_name_or_path=(str, 'a local UNet or pipeline folder: offline teacher'),
    model_config_name_or_path=(str, "a folder (or its config.json) of the student UNet's "
                                    "architecture, as diffusers' example takes it"),
    num_epochs=(int, 'train for this many epochs (sets max_train_steps from the data size)'),
    dataloader_num_workers=(int, 'data loading worker processes'),
    logging_dir=(str, 'TensorBoard folder, under output_dir'),
    logging_steps=(int, 'a training record (window means) into metrics.json every N steps'),
    adam_beta1=(float, 'AdamW beta1'),
    adam_beta2=(float, 'AdamW beta2'),
    adam_weight_decay=(float, 'AdamW weight decay'),
    adam_epsilon=(float, 'AdamW epsilon'),
    ema_inv_gamma=(float, 'EMA warm-up inverse gamma'),
    ema_power=(float, 'EMA warm-up power'),
    ema_max_decay=(float, 'EMA maximum decay'),
)
# flags of train_unconditional.py whose config key has another name or place
RENAMED_FLAGS = dict(
    logger=(str, 'report_to', "'tensorboard' or 'none' (train_unconditional.py's name for "
                              "--report_to)"),
    ddpm_num_inference_steps=(int, 'num_inference_steps', 'DDIM steps for validation grids'),
    prediction_type=(str, 'noise_scheduler.prediction_type', "'epsilon' or 'v_prediction'"),
    ddpm_num_steps=(int, 'noise_scheduler.num_train_timesteps', 'diffusion timesteps'),
    ddpm_beta_schedule=(str, 'noise_scheduler.beta_schedule', "'linear', 'squaredcos_cap_v2'"),
    eval_batch_size=(int, 'num_validation_images', 'images of each validation grid'),
    save_images_epochs=(int, 'validation_epochs', 'validation grid every N epochs (instead of '
                                                  '--validation_steps)'),
    save_model_epochs=(int, 'checkpointing_epochs', 'checkpoint every N epochs (instead of '
                                                    '--checkpointing_steps)'),
)
# flags of train_unconditional.py that need the internet: refused with what to do instead
# (dataset_name) or accepted with a warning that they change nothing (cache_dir)
OFFLINE_FLAGS = dict(
    dataset_name='--dataset_name downloads a data set from the Hugging Face hub, which this '
                 'engine does not do: give --train_data_dir, a local folder of images',
    cache_dir='--cache_dir changes nothing here: nothing is downloaded',
)
# on/off flags: --use_ema / --no-use_ema, --random_flip / --no-random_flip
SWITCHES = dict(use_ema=('use_ema', 'keep an EMA of the student (the saved student is it)'),
                random_flip=('data.random_flip', 'flip training images horizontally'),
                center_crop=('data.center_crop', 'crop image folders at the centre (else the '
                                                 'top-left corner) after resizing'),
                overwrite_output_dir=('overwrite_output_dir',
                                      'start afresh in an output_dir that holds an earlier run, '
                                      'deleting its checkpoints, metrics, pipeline and logs'))
# the keys of the sections the engine reads (beside the distiller, which build_distiller
# checks): data (distill.data.images.build_image_datasets, random_flip), evaluation
# (DiffusionRun.evaluate), conditioning (diffusion_conditioning), vae (diffusion_latents),
# noise_scheduler (its own,
# plus the scheduler class's arguments: adapters.diffusers.build_noise_scheduler); student
# and teacher UNet configs are checked against the diffusers class in check_sections
SECTION_KEYS = dict(
    data=('type', 'resolution', 'train_data_dir', 'num_heldout', 'center_crop', 'seed',
          'num_classes', 'num_objects', 'num_samples', 'random_flip', 'root', 'channels'),
    evaluation=('num_images', 'num_buckets', 'num_samples', 'num_inference_steps',
                'inception_weights', 'feature_network', 'fid_images', 'skip'),
    conditioning=('embeddings', 'sequence_length'),
    vae=('pretrained', 'subfolder'),
)


def build_parser() -> argparse.ArgumentParser:
    from distill.engines.core.cli_errors import add_debug_option
    from distill.engines.core.cli_options import ConfigOptionsAction
    parser = argparse.ArgumentParser(description='Distil a diffusers UNet (ADM, KD, DML)')
    parser.add_argument('config', help='mmengine Python config, e.g. configs/diffusion/...')
    for flag, (kind, text) in FLAGS.items():
        parser.add_argument(f'--{flag}', type=kind, default=None, help=text)
    for flag, (kind, _, text) in RENAMED_FLAGS.items():
        parser.add_argument(f'--{flag}', type=kind, default=None, help=text)
    for flag, (_, text) in SWITCHES.items():
        parser.add_argument(f'--{flag}', action=argparse.BooleanOptionalAction, default=None,
                            help=text)
    for flag in OFFLINE_FLAGS:
        parser.add_argument(f'--{flag}', type=str, default=None, help=OFFLINE_FLAGS[flag])
    parser.add_argument('--resolution', type=int, default=None,
                        help='image side: data.resolution and the sample_size of the UNets '
                             'built from a config (not of a pretrained teacher)')
    # accelerate launch / torch.distributed.launch may pass it; the rank comes from the env
    parser.add_argument('--local_rank', '--local-rank', type=int, default=-1,
                        help=argparse.SUPPRESS)
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptionsAction, default=None,
                        help='override config keys, e.g. distiller.loss_weights.co=0.5')
    add_debug_option(parser)
    return parser


def set_resolution(cfg, resolution: int) -> None:
    """``--resolution``: the data and every UNet whose architecture the config gives."""
    cfg.data.resolution = resolution
    for name in ('student', 'teacher'):
        network = cfg.get(name)
        if isinstance(network, dict) and 'pretrained' not in network:
            network['sample_size'] = resolution


def teacher_from_directory(path: str) -> dict:
    """The teacher config of ``--teacher_model_name_or_path``: a UNet folder
    (``save_pretrained``'s ``config.json`` and weights) or a pipeline folder (``model_index.json``
    and its ``unet/``, what diffusers' training examples and this engine write)."""
    folder = Path(path)
    if (folder / 'model_index.json').is_file() and (folder / 'unet' / 'config.json').is_file():
        folder = folder / 'unet'
    config_file = folder / 'config.json'
    if not config_file.is_file():
        raise FileNotFoundError(f'--teacher_model_name_or_path {path!r}: neither a UNet folder '
                                f'(config.json) nor a pipeline folder (model_index.json and '
                                f'unet/config.json), as save_pretrained writes them')
    class_name = json.loads(config_file.read_text()).get('_class_name', 'UNet2DModel')
    return dict(type=class_name, pretrained=str(folder))


def unet_from_config(path: str) -> dict:
    """``--model_config_name_or_path``: the student's architecture from a UNet folder's (or a
    pipeline folder's ``unet/``) ``config.json``, or that file itself; new weights."""
    path = Path(path)
    for candidate in (path, path / 'config.json', path / 'unet' / 'config.json'):
        if candidate.is_file():
            config = json.loads(candidate.read_text())
            kind = config.get('_class_name', 'UNet2DModel')
            return dict(type=kind, **{k: v for k, v in config.items() if not k.startswith('_')})
    raise FileNotFoundError(f'--model_config_name_or_path {str(path)!r}: no config.json there '
                            f'(nor in its unet/)')


def load_config_file(path, cfg_options: dict | None = None):
    """``DEFAULTS`` < the config file < ``cfg_options``, as an ``mmengine.Config``."""
    from mmengine.config import Config

    from distill.config_checks import check_top_level_keys
    cfg = Config(dict(DEFAULTS))
    from_file = Config.fromfile(str(path)).to_dict()
    cfg.merge_from_dict(from_file)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    # a typo (max_train_step=5) fails naming itself instead of leaving the default in force
    check_top_level_keys(cfg, [*DEFAULTS, *SECTIONS], cfg_options, from_file,
                         'diffusion config')
    return cfg


def check_sections(cfg) -> None:
    """An unknown key inside a section the engine reads fails naming it and the closest valid
    ones (``data.num_sample`` -> ``data.num_samples``), instead of leaving the default in force
    (or, for a UNet argument, a bare TypeError once the run has started)."""
    from distill.config_checks import ConfigError, check_keys, check_kwargs
    for section, keys in SECTION_KEYS.items():
        value = cfg.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f'{section} must be a dict, got {value!r}')
        check_keys(section, value, keys)
    import diffusers
    for name in ('student', 'teacher'):  # UNet configs: the diffusers class's arguments
        network = cfg.get(name)
        kind = network.get('type') if isinstance(network, dict) else None
        if kind in ('UNet2DModel', 'UNet2DConditionModel'):
            check_kwargs(name, {k: v for k, v in network.items()
                                if k not in ('pretrained', 'subfolder')}, getattr(diffusers, kind))
    scheduler = cfg.get('noise_scheduler')
    if isinstance(scheduler, dict):
        cls = getattr(diffusers, scheduler.get('type', 'DDPMScheduler'), None)
        if cls is None:
            raise ConfigError(f"noise_scheduler.type={scheduler.get('type')!r} is not a "
                              f'diffusers scheduler class')
        rest = {k: v for k, v in scheduler.items() if k not in ('pretrained', 'subfolder')}
        check_kwargs('noise_scheduler', rest, cls)


def load_config(args: argparse.Namespace):
    """The run's ``mmengine.Config``: the file, ``--cfg-options``, then the named flags."""
    cfg = load_config_file(args.config, args.cfg_options)
    if getattr(args, 'dataset_name', None):
        from distill.config_checks import ConfigError
        raise ConfigError(OFFLINE_FLAGS['dataset_name'])
    if getattr(args, 'cache_dir', None):
        import logging
        logging.getLogger('distill.diffusion').warning(OFFLINE_FLAGS['cache_dir'])
    for flag in FLAGS:
        value = getattr(args, flag, None)
        if value is None or flag in ('teacher_model_name_or_path', 'model_config_name_or_path'):
            continue
        cfg[flag] = value
    named = {key: getattr(args, flag, None) for flag, (_, key, _) in RENAMED_FLAGS.items()}
    named.update({key: getattr(args, flag, None) for flag, (key, _) in SWITCHES.items()})
    cfg.merge_from_dict({key: value for key, value in named.items() if value is not None})
    if getattr(args, 'resolution', None) is not None:
        set_resolution(cfg, args.resolution)
    if getattr(args, 'num_epochs', None) is not None and args.max_train_steps is not None:
        raise ValueError('give --num_epochs or --max_train_steps, not both')
    if getattr(args, 'max_train_steps', None) is not None:
        cfg.num_epochs = None  # the command line's step count wins over a config's epochs
    if getattr(args, 'model_config_name_or_path', None):
        cfg.student = unet_from_config(args.model_config_name_or_path)
    if args.teacher_model_name_or_path:
        cfg.teacher = teacher_from_directory(args.teacher_model_name_or_path)
        cfg.distiller.online = False  # a pretrained teacher given here is the offline setting
    missing = [key for key in ('student', 'teacher', 'distiller', 'noise_scheduler', 'data')
               if key not in cfg]
    if missing:
        raise KeyError(f'{args.config} lacks {missing}; see configs/diffusion/ for examples')
    check_sections(cfg)
    lr_schedule(cfg.lr_scheduler, 0, 1)  # a name that is no schedule fails here, named
    if cfg.mixed_precision not in ('no', 'fp16', 'bf16'):
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got "
                         f'{cfg.mixed_precision!r}')
    from distill.engines.core.checkpoints import check_keep_checkpoints
    check_keep_checkpoints('--checkpoints_total_limit', cfg.checkpoints_total_limit)
    return cfg


# diffusers' --lr_scheduler names that map onto mmengine's schedulers (the trainer core's)
LR_SCHEDULERS = ('constant', 'constant_with_warmup', 'linear', 'cosine', 'cosine_with_restarts',
                 'polynomial')
#: diffusers' get_scheduler defaults for the two: one cosine cycle, a linear decay to 1e-7
POLYNOMIAL_LR_END, POLYNOMIAL_POWER = 1e-7, 1.0


#: the flags that set each key of ``optimizer_config`` (named in resume messages)
OPTIMIZER_FLAGS = dict(lr='--learning_rate', betas='--adam_beta1/--adam_beta2',
                       weight_decay='--adam_weight_decay', eps='--adam_epsilon')


def optimizer_config(cfg) -> dict:
    """AdamW with the flags of train_unconditional.py, for mmengine's ``OPTIMIZERS``."""
    return dict(type='AdamW', lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)


def lr_schedule(name, warmup_steps: int, total_steps: int) -> list[dict]:
    """diffusers' ``get_scheduler`` schedules as mmengine ``PARAM_SCHEDULERS`` configs stepped
    per optimiser step (the trainer core replays them on resume): after step ``k`` the lr is
    diffusers' value, but for the warm-up, which rises from ``lr / (warmup + 1)`` instead of
    0 (``LinearLR`` needs a positive start; the first step is then not wasted). A list of
    mmengine scheduler configs is used as it is."""
    from distill.config_checks import ConfigError, closest
    if isinstance(name, (list, tuple)):
        return [dict(c) for c in name]
    if name not in LR_SCHEDULERS:
        near = closest(str(name), list(LR_SCHEDULERS))
        raise ConfigError(f'lr_scheduler={name!r} is not one of {", ".join(LR_SCHEDULERS)}'
                          + (f'; did you mean {" or ".join(near)}?' if near else '')
                          + ' (or give a list of mmengine PARAM_SCHEDULERS configs)')
    # mmengine's LinearLR reaches end_factor at end - 1: hence the + 1s
    steps = dict(by_epoch=False)
    schedule = []
    if warmup_steps and name != 'constant':
        schedule.append(dict(type='LinearLR', start_factor=1 / (warmup_steps + 1),
                             end_factor=1.0, begin=0, end=warmup_steps + 1, **steps))
    if total_steps <= warmup_steps:  # a run shorter than its warm-up: no decay phase
        return schedule
    if name == 'linear':
        schedule.append(dict(type='LinearLR', start_factor=1.0, end_factor=0.0,
                             begin=warmup_steps, end=total_steps + 1, **steps))
    elif name == 'polynomial':
        schedule.append(dict(type='PolyLR', eta_min=POLYNOMIAL_LR_END, power=POLYNOMIAL_POWER,
                             begin=warmup_steps, end=total_steps + 1, **steps))
    elif name in ('cosine', 'cosine_with_restarts'):  # num_cycles=1: the same single cosine
        schedule.append(dict(type='CosineAnnealingLR', T_max=total_steps - warmup_steps,
                             eta_min=0.0, begin=warmup_steps, end=total_steps + 1, **steps))
    return schedule
