"""The classification engine: train a distiller on Accelerate, evaluate, checkpoint, resume.

    from mmengine.config import Config
    from distill.engines.classification import train_classification
    result = train_classification(Config.fromfile('configs/classification/demo.py'))

The config is checked first (``classification_config``: an unknown key or an ill-typed value
fails naming it, before anything is built or written), and a fresh run refuses a work dir that
holds an earlier run unless ``overwrite``. Each step: ``terms = distiller(batch)``;
``check_finite_terms`` before backward (a NaN stops the run naming the term and the step);
``loss = sum(terms)``; backward; step; ``check_finite_state`` (a weight or buffer that became
inf stops the run there). Each epoch: top-1, top-5 and ECE of the student and the teacher on
the val set, one record in ``metrics.json``, TensorBoard scalars, ``epoch_{n}.pth`` and
``latest.pth`` (written only from finite state, with a checksum). Every random draw of an epoch
is seeded by (seed, epoch), so a resumed run ends with the same weights as an uninterrupted one.

Distillers with ``arch_parameters()`` (SoKD) also get a second optimiser, stepped from
``distiller.arch_backward(train_batch, val_batch)`` whenever
``distiller.wants_arch_step(epoch, step_in_epoch)`` says so.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from distill.engines.classification_checkpoint import (apply_config_over_restored,
                                                      check_fresh_work_dir, checkpoint_state,
                                                      find_resume_checkpoint,
                                                      remove_orphan_temporaries,
                                                      restore_checkpoint, save_checkpoints)
from distill.engines.classification_config import check_classification_config
from distill.engines.classification_data import (BatchPreparer, DataLoadError, ShardedBatches,
                                                derive_seed, make_loader, read_batches)
from distill.engines.classification_metrics import evaluate_classifiers
from distill.engines.classification_runtime import log_to, make_accelerator
from distill.engines.classification_state import (DEFAULT_ARCH_OPTIMIZER, build_lr_scheduler,
                                                 build_optimizer, split_arch_parameters)
from distill.engines.guards import check_finite_state, check_finite_terms
from distill.engines.metrics import MetricsFile
from distill.sokd.viz import record_policy

__all__ = ['train_classification', 'build_classification_datasets', 'make_accelerator',
           'TrainResult', 'DataLoadError']

logger = logging.getLogger('distill.classification')

DEFAULT_TRAIN = dict(seed=0, mixed_precision='no', gradient_accumulation_steps=1,
                     log_interval=50, find_unused_parameters=False, grad_clip=None,
                     keep_checkpoints=3, progress_bar=True, cpu=False, check_finite='step')


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
    return datasets


class _Run:
    """The state of one training run; ``train_classification`` is its public face."""

    def __init__(self, cfg, work_dir, resume, datasets, accelerator):
        from accelerate.utils import set_seed

        from distill import build_distiller

        self.cfg = cfg
        self.train_cfg = {**DEFAULT_TRAIN, **_cfg_dict(cfg, 'train')}
        self.data_cfg = _cfg_dict(cfg, 'data')
        self.schedule = _cfg_dict(cfg, 'schedule')
        self.epochs = int(self.schedule.get('epochs', 1))
        self.seed = int(self.train_cfg['seed'])
        self.work_dir = Path(work_dir)
        self.accum_steps = int(self.train_cfg['gradient_accumulation_steps'])
        self.accelerator = acc = accelerator
        self.is_main = acc.is_main_process
        self.rank, self.world = acc.process_index, acc.num_processes

        set_seed(self.seed)  # the same initial weights on every process and every run
        self.datasets = datasets or build_classification_datasets(self.data_cfg)
        distiller = build_distiller(cfg['distiller'])
        main_params, arch_params = split_arch_parameters(distiller)
        optimizer = build_optimizer(_cfg_dict(cfg, 'optimizer', dict(type='SGD', lr=0.05)),
                                    main_params)
        self.lr_scheduler = build_lr_scheduler(self.schedule, optimizer)
        self.arch_optimizer = None
        if arch_params:
            self.arch_params = arch_params
            self.arch_optimizer = build_optimizer(
                _cfg_dict(cfg, 'arch_optimizer', DEFAULT_ARCH_OPTIMIZER), arch_params,
                'arch_optimizer')
            if self.world > 1:  # DDP leaves them alone; _arch_step averages their grads
                ids = {id(p) for p in arch_params}
                names = [n for n, p in distiller.named_parameters() if id(p) in ids]
                nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                    distiller, names)
        self.distiller, self.optimizer = acc.prepare(distiller, optimizer)
        self.model = acc.unwrap_model(self.distiller)
        self.trainable = main_params

        batch_size = int(self.data_cfg.get('batch_size', 64))
        self.train_batches = ShardedBatches(len(self.datasets['train']), batch_size, True,
                                            self.seed, self.rank, self.world, 'train')
        self.arch_batches = ShardedBatches(len(self.datasets['train']), batch_size, True,
                                           self.seed, self.rank, self.world, 'arch')
        self.val_batches = ShardedBatches(
            len(self.datasets['val']), int(self.data_cfg.get('val_batch_size') or batch_size),
            False, self.seed, self.rank, self.world, 'val')
        self.prepare_batch = BatchPreparer(acc.device, self.data_cfg.get('augment'),
                                           self.data_cfg.get('normalize'))

        self.start_epoch, self.global_step, records = 1, 0, []
        found = find_resume_checkpoint(self.work_dir, resume)
        if resume and found is None:
            logger.warning('--resume: no checkpoint in %s, starting from scratch', self.work_dir)
        if found is not None:
            checkpoint, state = found
            restore_checkpoint(state, checkpoint, self.model, self.optimizer, self.lr_scheduler,
                               self.arch_optimizer, acc.scaler)
            for change in apply_config_over_restored(
                    self.optimizer, self.lr_scheduler,
                    _cfg_dict(cfg, 'optimizer', dict(type='SGD', lr=0.05)), self.schedule):
                logger.warning('resume: the config changes %s', change)
            self.start_epoch = int(state['epoch']) + 1
            self.global_step = int(state.get('global_step', 0))
            records = list(state['metrics'])
            logger.info('resumed from %s at epoch %d', checkpoint, self.start_epoch)
        self.metrics = MetricsFile(self.work_dir / 'metrics.json') if self.is_main else None
        if self.metrics is not None:
            self.metrics.records = list(records)
            self.metrics.truncate('epoch', self.start_epoch - 1)
        self.records = records
        self.offline_teacher_metrics = None
        self.last_values = None  # the loss terms of the last step, for the NaN error
        self.writer = None

    # ------------------------------------------------------------------------------ helpers
    def _loader(self, dataset, batch_lists):
        return make_loader(dataset, batch_lists, int(self.data_cfg.get('num_workers', 0)),
                           pin_memory=self.accelerator.device.type == 'cuda')

    def _check_state(self, epoch, values=None, optimizer=None, when='after the optimiser step'):
        """Every process checks its weights and buffers; any bad one stops them all."""
        reduce = (lambda t: self.accelerator.reduce(t, 'sum')) if self.world > 1 else None
        check_finite_state(self.model, self.global_step, epoch, values, optimizer, reduce, when)

    def _reduce_mean(self, values: dict) -> dict:
        if self.world == 1 or not values:
            return values
        names = sorted(values)
        stacked = torch.tensor([values[n] for n in names], dtype=torch.float64,
                               device=self.accelerator.device)
        stacked = self.accelerator.reduce(stacked, 'mean')
        return {name: float(v) for name, v in zip(names, stacked)}

    def _arch_batch_source(self, epoch):
        generator = self.prepare_batch.generator(derive_seed(self.seed, epoch, 'arch-aug',
                                                             self.rank))
        while True:  # as many passes as the arch steps need
            loader = self._loader(self.datasets['train'], self.arch_batches.batches(epoch))
            for batch in read_batches(loader, 'architecture', epoch):
                yield self.prepare_batch(batch, generator)

    def _arch_step(self, batch, arch_source) -> dict:
        """One step of the architecture optimiser. The main parameters' gradients (possibly
        mid-accumulation) are set aside meanwhile, so whatever ``arch_backward`` leaves in
        them is dropped."""
        self.arch_optimizer.zero_grad(set_to_none=True)
        main_grads = [param.grad for param in self.trainable]
        for param in self.trainable:
            param.grad = None
        try:
            logs = self.model.arch_backward(batch, next(arch_source))
        finally:
            for param, grad in zip(self.trainable, main_grads):
                param.grad = grad
        if self.world > 1:
            for param in self.arch_params:
                grad = param.grad if param.grad is not None else torch.zeros_like(param)
                param.grad = self.accelerator.reduce(grad, 'mean')
        self.arch_optimizer.step()
        return {(k if k.startswith('arch.') else f'arch.{k}'): float(v)
                for k, v in (logs or {}).items()}

    # ------------------------------------------------------------------------------ epoch
    def train_epoch(self, epoch) -> dict:
        acc, model = self.accelerator, self.model
        # global RNG (dropout, ...) and augmentation: functions of (seed, epoch, rank) only
        torch.manual_seed(derive_seed(self.seed, epoch, 'global', self.rank))
        augment_generator = self.prepare_batch.generator(
            derive_seed(self.seed, epoch, 'augment', self.rank))
        wants_arch = self.arch_optimizer is not None and hasattr(model, 'wants_arch_step')
        arch_source = self._arch_batch_source(epoch) if wants_arch else None
        batch_lists = self.train_batches.batches(epoch)
        steps, accum = len(batch_lists), self.accum_steps
        self.distiller.train()
        sums, arch_sums, arch_count = defaultdict(float), defaultdict(float), 0
        from tqdm.auto import tqdm
        progress = tqdm(total=steps, desc=f'epoch {epoch}/{self.epochs}', leave=False,
                        disable=not (self.is_main and self.train_cfg['progress_bar']),
                        dynamic_ncols=True)
        loader = self._loader(self.datasets['train'], batch_lists)
        for step, batch in enumerate(read_batches(loader, 'training', epoch)):
            done = (epoch - 1) * steps + step
            model.set_progress(done / (self.epochs * steps))
            batch = self.prepare_batch(batch, augment_generator)
            if wants_arch and model.wants_arch_step(epoch, step):
                arch_count += 1
                for name, value in self._arch_step(batch, arch_source).items():
                    arch_sums[name] += value
            group_start = step - step % accum
            group_size = min(accum, steps - group_start)
            sync = step == group_start + group_size - 1
            if step == group_start:
                self.optimizer.zero_grad(set_to_none=True)
            no_sync = (acc.no_sync(self.distiller) if not sync and self.world > 1
                       else contextlib.nullcontext())
            with no_sync:
                terms = self.distiller(batch)
                values = check_finite_terms(terms, self.global_step + 1, epoch,
                                            previous=self.last_values)
                loss = sum(terms.values())
                acc.backward(loss / group_size)
            if sync:
                if self.train_cfg['grad_clip']:
                    acc.clip_grad_norm_(self.trainable, float(self.train_cfg['grad_clip']))
                self.optimizer.step()
            self.global_step += 1
            if sync and self.train_cfg['check_finite'] == 'step':
                self._check_state(epoch, values)
            self.last_values = dict(values)
            values['loss'] = sum(values.values())
            for name, value in values.items():
                sums[name] += value
            progress.update(1)
            progress.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
            if self.writer is not None and self.global_step % int(
                    self.train_cfg['log_interval']) == 0:
                for name, value in values.items():
                    self.writer.add_scalar(f'train/{name}', value, self.global_step)
                self.writer.add_scalar('train/lr', self.optimizer.param_groups[0]['lr'],
                                       self.global_step)
        progress.close()
        means = {name: total / steps for name, total in sums.items()}
        if arch_count:
            means.update({name: total / arch_count for name, total in arch_sums.items()})
        return self._reduce_mean(means)

    def evaluate(self) -> dict:
        acc, model = self.accelerator, self.model
        models = {'student': model.student}
        if getattr(model, 'online', True):
            models['teacher'] = model.teacher
        loader = self._loader(self.datasets['val'], self.val_batches.batches(0))
        batches = (self.prepare_batch(b) for b in read_batches(loader, 'validation', 0))
        summaries = evaluate_classifiers(models, batches, lambda t: acc.reduce(t, 'sum'),
                                         acc.autocast, device=acc.device)
        if 'teacher' not in models:  # a frozen teacher: evaluated once per run
            if self.offline_teacher_metrics is None:
                loader = self._loader(self.datasets['val'], self.val_batches.batches(0))
                batches = (self.prepare_batch(b) for b in read_batches(loader, 'validation', 0))
                self.offline_teacher_metrics = evaluate_classifiers(
                    {'teacher': model.teacher}, batches, lambda t: acc.reduce(t, 'sum'),
                    acc.autocast, device=acc.device)['teacher']
            summaries['teacher'] = self.offline_teacher_metrics
        record = {'val/num_samples': summaries['student'].pop('num_samples')}
        for name, summary in summaries.items():
            record.update({f'val/{name}/{k}': v for k, v in summary.items()
                           if k != 'num_samples'})
        return record

    def save(self, epoch):
        acc = self.accelerator
        # a checkpoint only from finite state (weights, BN statistics, optimiser moments)
        self._check_state(epoch, optimizer=self.optimizer,
                          when=f'before writing the checkpoint of epoch {epoch}')
        acc.wait_for_everyone()
        if self.is_main:
            meta = dict(seed=self.seed, num_processes=self.world,
                        config=self.cfg.pretty_text if hasattr(self.cfg, 'pretty_text') else '')
            state = checkpoint_state(self.model, self.optimizer, self.lr_scheduler,
                                     self.arch_optimizer, acc.scaler, epoch, self.global_step,
                                     self.records, meta)
            save_checkpoints(state, self.work_dir, self.train_cfg['keep_checkpoints'])
        acc.wait_for_everyone()

    # ------------------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        if self.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            remove_orphan_temporaries(self.work_dir)
            if hasattr(self.cfg, 'dump'):
                self.cfg.dump(str(self.work_dir / 'config.py'))
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.work_dir / 'tensorboard'))
            except ImportError:
                logger.warning('tensorboard is not installed: no TensorBoard logs')
        try:
            for epoch in range(self.start_epoch, self.epochs + 1):
                start = time.time()
                lr = self.optimizer.param_groups[0]['lr']
                record = dict(epoch=epoch, global_step=None, lr=lr)
                record.update(self.train_epoch(epoch))
                record['global_step'] = self.global_step
                self.lr_scheduler.step()
                record.update(self.evaluate())
                # SoKD: the policy in metrics.json and TensorBoard, its chart after the search
                record_policy(self.model, record, epoch, self.work_dir if self.is_main else None,
                              last_epoch=self.epochs)
                record.update(num_processes=self.world, epoch_time_s=time.time() - start)
                self.records.append(record)
                if self.is_main:
                    self.metrics.append(record)
                    self._log_epoch(record)
                self.save(epoch)
            if self.is_main:  # the two trained networks, loadable alone (teacher_ckpt=...)
                from distill.checkpoint import save_atomic
                save_atomic(self.model.student.state_dict(), self.work_dir / 'student.pth')
                save_atomic(self.model.teacher.state_dict(), self.work_dir / 'teacher.pth')
        finally:
            if self.writer is not None:
                self.writer.close()
        return TrainResult(self.work_dir, self.records, self.model)

    def _log_epoch(self, record):
        epoch = record['epoch']
        for name, value in record.items():
            if isinstance(value, (int, float)) and name not in ('epoch', 'global_step'):
                tag = name if name.startswith('val/') else f'epoch/{name}'
                if self.writer is not None:
                    self.writer.add_scalar(tag, value, epoch)
        parts = [f"epoch {epoch}/{self.epochs}", f"lr {record['lr']:.4g}",
                 f"loss {record.get('loss', float('nan')):.4f}"]
        for name in ('student', 'teacher'):
            if f'val/{name}/top1' in record:
                parts.append(f"{name} top1 {record[f'val/{name}/top1']:.2f} "
                             f"top5 {record[f'val/{name}/top5']:.2f} "
                             f"ECE {record[f'val/{name}/ece']:.2f}")
        logger.info(' | '.join(parts) + f" | {record['epoch_time_s']:.1f}s")


def train_classification(cfg, work_dir=None, resume=None, datasets: dict | None = None,
                         accelerator=None, overwrite: bool = False) -> TrainResult:
    """Train ``cfg`` (an mmengine ``Config`` or dict with keys distiller, data, optimizer,
    schedule, train, work_dir) and return the records and the trained distiller.

    ``resume``: None/False (start fresh), True (continue from ``work_dir/latest.pth`` if there
    is one, else the newest valid ``epoch_N.pth``) or a checkpoint path. ``datasets``: prebuilt
    ``{'train', 'val'}`` datasets instead of ``data.train`` / ``data.val``. A fresh run (no
    ``resume``) into a work dir that holds an earlier run raises ``FileExistsError`` and changes
    nothing, unless ``overwrite`` (which deletes the earlier run's files first).
    """
    check_classification_config(cfg, DEFAULT_TRAIN, prebuilt_datasets=datasets is not None)
    work_dir = Path(work_dir or cfg.get('work_dir') or 'work_dirs/classification')
    if not resume and not overwrite:
        check_fresh_work_dir(work_dir)
    if accelerator is None:
        accelerator = make_accelerator({**DEFAULT_TRAIN, **_cfg_dict(cfg, 'train')})
    if not resume and overwrite and accelerator.is_main_process:
        check_fresh_work_dir(work_dir, overwrite=True)
    accelerator.wait_for_everyone()  # nothing is written before every process has checked
    with log_to(work_dir, accelerator.is_main_process):
        return _Run(cfg, work_dir, resume, datasets, accelerator).run()
