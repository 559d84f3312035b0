"""The classification engine: train a distiller on the Accelerate trainer core.

    from mmengine.config import Config
    from distill.engines.classification.train import train_classification
    result = train_classification(Config.fromfile('configs/classification/demo.py'))

The config is checked first (``classification_config``: an unknown key or an ill-typed value
fails naming it, before anything is built or written), and a fresh run refuses a work dir that
holds an earlier run unless ``overwrite``. The loop, the NaN guard, checkpoints, resume,
logging and SoKD's arch step are the trainer core's (``distill.engines.core.trainer``); this module
gives it the classification hooks (``classification_task``): each epoch, top-1, top-5 and ECE
of the student and the teacher on the val set, one record in ``metrics.json`` and the
trackers (TensorBoard under ``work_dir/tensorboard``), a ``checkpoint-N`` folder (N the
optimiser steps done, written only from finite state, with a SHA-256 per file); at the end
``student.pth`` and ``teacher.pth``. The run's config is ``config.py``; a resume logs each key
it changes, refuses another architecture and records its own as ``config.resumed-at-N.py``
(``distill.engines.core.config_diff``, the rule of every engine).

Config sections: ``distiller``, ``data`` (train, val, batch_size, ...), ``optimizer``
(``dict(type='SGD', lr=...)``, any of mmengine's ``OPTIMIZERS``), ``schedule`` (``epochs`` and
either ``milestones``/``gamma`` of a step decay per epoch or ``param_scheduler``, mmengine
``PARAM_SCHEDULERS`` configs stepped per epoch), ``train`` (``DEFAULT_TRAIN``),
``arch_optimizer`` (SoKD).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from distill.engines.core.checkpoints import check_fresh_work_dir
from distill.engines.core.config_diff import ResumeRules, RunConfig, record_pattern
from distill.engines.classification.config import check_classification_config
from distill.engines.classification.data import DataLoadError
from distill.engines.classification.task import ClassificationTask
from distill.engines.core.optimizers import scheduler_configs
from distill.engines.core.targets import check_output
from distill.engines.core.work_dir_lock import hold_work_dir
from distill.engines.core.runtime import log_to, make_accelerator
from distill.engines.core.trainer import Trainer, TrainSettings, flat_config

__all__ = ['train_classification', 'build_classification_datasets', 'make_accelerator',
           'TrainResult', 'DataLoadError', 'DEFAULT_TRAIN']

logger = logging.getLogger('distill.trainer')  # the run's train.log

DEFAULT_TRAIN = dict(seed=0, mixed_precision='no', gradient_accumulation_steps=1,
                     log_interval=50, find_unused_parameters=False, grad_clip=None,
                     keep_checkpoints=3, progress_bar=True, cpu=False, check_finite='step',
                     channels_last=False)
DEFAULT_OPTIMIZER = dict(type='SGD', lr=0.05)
# what a run writes in its work dir besides checkpoint-N (--overwrite deletes exactly these)
RUN_ENTRIES = ('metrics.json', 'student.pth', 'teacher.pth', 'config.py',
               record_pattern('config.py'), 'policy.png')
#: what a resume may change (config_diff): not the networks, nor the number of classes
RESUME_RULES = ResumeRules(networks=('distiller.student', 'distiller.teacher'),
                           ignored=('work_dir',),
                           fresh_hint='start a fresh run (--overwrite, or another --work-dir)')
# written before the first step: alone, they do not make an earlier run
RUN_LOGS = ('train.log', 'tensorboard')


@dataclass
class TrainResult:
    work_dir: Path
    records: list          # the epoch records of metrics.json
    distiller: nn.Module   # the trained distiller (unwrapped from DDP)


def _cfg_dict(cfg, key, default=None) -> dict:
    value = cfg.get(key, default) if hasattr(cfg, 'get') else default
    return dict(value) if value is not None else {}


def build_classification_datasets(data_cfg: dict) -> dict:
    """``{'train': Dataset, 'val': Dataset}`` from ``data.train`` and ``data.val``."""
    from distill.data import build_dataset
    datasets = {}
    for split in ('train', 'val'):
        if split not in data_cfg:
            raise KeyError(f'the config has no data.{split}')
        dataset = build_dataset(data_cfg[split])
        if len(dataset) == 0:
            raise ValueError(f'data.{split} ({dict(data_cfg[split])}) holds no sample')
        datasets[split] = dataset
    align_class_labels(datasets['train'], datasets['val'])
    return datasets


def align_class_labels(train, val) -> None:
    """Datasets that label by class names (``ImageFolder``: sorted folder names) give label k
    to the k-th name of their own list: a ``val`` tree missing one class of ``train`` would
    shift every later class's label by one, silently. So ``val`` is labelled by ``train``'s
    names (a warning lists the classes it lacks), and a ``val`` class that ``train`` does not
    have is an error."""
    train_classes, val_classes = getattr(train, 'classes', None), getattr(val, 'classes', None)
    if train_classes is None or val_classes is None or list(train_classes) == list(val_classes):
        return
    unknown = sorted(set(val_classes) - set(train_classes))
    if unknown:
        raise ValueError(f'data.val has class(es) {unknown} that data.train has not '
                         f'(train: {list(train_classes)}): the two splits must name the same '
                         f'classes')
    if not hasattr(val, 'samples'):
        raise ValueError(f'data.val names the classes {list(val_classes)}, data.train '
                         f'{list(train_classes)}: the labels would not match')
    index = {name: label for label, name in enumerate(train_classes)}
    val.samples = [(path, index[val_classes[label]]) for path, label in val.samples]
    missing = sorted(set(train_classes) - set(val_classes))
    val.classes, val.class_to_idx = list(train_classes), index
    logger.warning('data.val has no %s folder(s) of data.train: its images are labelled by '
                   "data.train's class names (without this every later class would be "
                   'labelled one off)', missing)


def check_data_fits_model(distiller, train_set, val_set=None) -> None:
    """Before the first step: the training images' channels go through the student, and its
    logits cover the data set's classes and every label of both splits (``data/labels.py``,
    where a data set has its labels at hand: ``labels`` or ``targets``); each mismatch is named
    with the setting to change (torch would fail inside the first forward or loss, naming
    neither; on a GPU with a device-side assert)."""
    from distill.data.labels import check_label_values, dataset_labels
    import torch
    from distill.config_checks import ConfigError
    sample = train_set[0]['inputs']
    inputs = torch.zeros(2, *sample.shape)
    logits = []
    try:
        distiller.probe_forward(distiller.student, lambda model: logits.append(
            distiller.adapter.run(model, dict(inputs=inputs), compute_loss=False).outputs))
    except RuntimeError as err:
        raise ConfigError(f'data.train gives images of shape {tuple(sample.shape)} '
                          f'(channels, height, width), which the student cannot take: '
                          f'{str(err).splitlines()[0]}. Match the networks\' in_channels to the '
                          f'data (data.train.channels where the data set has it)') from None
    classes = getattr(train_set, 'classes', None)
    if classes is not None and logits and logits[0].shape[-1] < len(classes):
        raise ConfigError(f'data.train has {len(classes)} classes but the student predicts '
                          f'{logits[0].shape[-1]}: set num_classes={len(classes)} for '
                          f'distiller.student and distiller.teacher')
    for split, dataset in (('train', train_set), ('val', val_set)):
        labels = dataset_labels(dataset) if dataset is not None and logits else None
        if labels is not None:
            root = getattr(dataset, 'root', None)
            check_label_values(labels, logits[0].shape[-1], f'data.{split} ('
                               f'{type(dataset).__name__}{f" at {root}" if root else ""})',
                               fix='fix those labels, or give distiller.student and '
                                   'distiller.teacher a num_classes that covers them')


def _run(cfg, work_dir: Path, resume, datasets, accelerator, close_group) -> TrainResult:
    from accelerate.utils import set_seed

    from distill import build_distiller

    train_cfg = {**DEFAULT_TRAIN, **_cfg_dict(cfg, 'train')}
    data_cfg, schedule = _cfg_dict(cfg, 'data'), _cfg_dict(cfg, 'schedule')
    seed = int(train_cfg['seed'])
    set_seed(seed)  # the same initial weights on every process and every run
    datasets = datasets or build_classification_datasets(data_cfg)
    distiller = build_distiller(cfg['distiller'])
    check_data_fits_model(distiller, datasets['train'], datasets['val'])
    if train_cfg['channels_last']:  # NHWC weights and batches (BatchPreparer): GPU convs
        distiller = distiller.to(memory_format=torch.channels_last)
    settings = TrainSettings(
        seed=seed, epochs=int(schedule.get('epochs', 1)), grad_clip=train_cfg['grad_clip'],
        check_finite=train_cfg['check_finite'], keep_checkpoints=train_cfg['keep_checkpoints'],
        log_every_steps=int(train_cfg['log_interval']),
        progress_bar=bool(train_cfg['progress_bar']), close_process_group=close_group,
        project_name='tensorboard')  # the trackers' folder in the work dir
    task = ClassificationTask(datasets, data_cfg, seed, accelerator, work_dir,
                              channels_last=bool(train_cfg['channels_last']))
    run_config = RunConfig(cfg, work_dir, RESUME_RULES)
    trainer = Trainer(task, distiller, accelerator, settings, work_dir,
                      _cfg_dict(cfg, 'optimizer', DEFAULT_OPTIMIZER), scheduler_configs(schedule),
                      arch_optimizer_cfg=_cfg_dict(cfg, 'arch_optimizer') or None,
                      tracker_config=flat_config(cfg))
    trainer.run_config = run_config
    trainer.resume(resume)
    # config.py of a fresh run; config.resumed-at-N.py of a resumed one that changes it
    run_config.write(accelerator.is_main_process, logger.warning)
    records = trainer.run()
    return TrainResult(work_dir, records, trainer.model)


def train_classification(cfg, work_dir=None, resume=None, datasets: dict | None = None,
                         accelerator=None, overwrite: bool = False,
                         close_process_group: bool = False) -> TrainResult:
    """Train ``cfg`` (an mmengine ``Config`` or dict with keys distiller, data, optimizer,
    schedule, train, work_dir) and return the records and the trained distiller.

    ``resume``: None/False (start fresh), True/'auto' (continue from the newest valid
    ``checkpoint-N`` of ``work_dir``; damaged ones are skipped with a warning naming the file)
    or a checkpoint folder. ``datasets``: prebuilt ``{'train', 'val'}`` datasets instead of
    ``data.train`` / ``data.val``. A fresh run (no ``resume``) into a work dir that holds an
    earlier run raises ``FileExistsError`` and changes nothing, unless ``overwrite`` (which
    deletes the earlier run's files first). ``close_process_group``: end the process group
    after a successful run (entry points).
    """
    check_classification_config(cfg, DEFAULT_TRAIN, prebuilt_datasets=datasets is not None)
    work_dir = Path(work_dir or cfg.get('work_dir') or 'work_dirs/classification')
    inputs = run_inputs(cfg)
    # the config dump never replaces the config being run (work_dir/config.py run again)
    check_output(work_dir / 'config.py', inputs, "the work dir's config dump",
                 hint='run a copy of the config kept outside the work dir')
    train_cfg = {**DEFAULT_TRAIN, **_cfg_dict(cfg, 'train')}
    if accelerator is None:
        accelerator = make_accelerator(
            work_dir, train_cfg['mixed_precision'], train_cfg['gradient_accumulation_steps'],
            train_cfg['cpu'], train_cfg['find_unused_parameters'])
    else:
        accelerator.gradient_accumulation_steps = int(train_cfg['gradient_accumulation_steps'])
    # one run per work dir, from before the first write to the end (main process)
    lock = hold_work_dir(work_dir, accelerator.is_main_process)
    try:
        if not resume and not overwrite:
            check_fresh_work_dir(work_dir, RUN_ENTRIES)
        if not resume and overwrite and accelerator.is_main_process:
            check_fresh_work_dir(work_dir, RUN_ENTRIES, overwrite=True, logs=RUN_LOGS,
                                 inputs=inputs)
        accelerator.wait_for_everyone()  # nothing is written before every process has checked
        with log_to(work_dir, accelerator.is_main_process):
            return _run(cfg, work_dir, resume, datasets, accelerator, close_process_group)
    finally:
        if lock is not None:
            lock.release()


def run_inputs(cfg) -> dict:
    """What a run reads and must not write over or delete: its config file and the teacher's
    checkpoint."""
    distiller = cfg.get('distiller') if hasattr(cfg, 'get') else None
    return {'the config being run': getattr(cfg, 'filename', None),
            'the teacher checkpoint (distiller.teacher_ckpt)':
                distiller.get('teacher_ckpt') if isinstance(distiller, dict) else None}
