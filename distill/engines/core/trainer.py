"""The Accelerate trainer core shared by the classification and diffusion engines.

    trainer = Trainer(task, model, accelerator, TrainSettings(epochs=10), work_dir,
                      optimizer_cfg=dict(type='SGD', lr=0.05), schedule=[dict(type=...)])
    trainer.resume('auto')            # optional: True/'auto'/'latest' or a checkpoint folder
    records = trainer.run()

Written once here, for every task:

* the loop: ``accelerator.accumulate`` (gradient accumulation and DDP ``no_sync``), one
  optimiser step per group, the last group of an epoch possibly shorter (the task's loader is
  wrapped with Accelerate's ``prepare_data_loader`` for one process, which gives ``accumulate``
  its end-of-epoch sync and ``skip_first_batches`` its mid-epoch resume; the task shards itself);
* the NaN guard without a device read per step (``guards.DeferredChecks``): every step's loss
  terms and (``check_finite='step'``) a flag of the state after its optimiser step stay on the
  device until the next read, at logging steps (``log_every_steps``, at most ``MAX_PENDING``
  steps apart), before every evaluation and checkpoint and at the end of an epoch; a read
  raises for the first non-finite step, naming the term or tensor and that step. Before a
  checkpoint the whole state (optimiser moments included) is checked too, so a checkpoint holds
  finite weights, buffers and optimiser moments;
* the optimiser and schedule from mmengine's registries (``optimizers.py``), stepped per epoch
  or per optimiser step; ``distiller.set_progress(steps done / total)`` before every forward;
* SoKD's arch step: a distiller with ``arch_parameters()`` gets a second optimiser, stepped
  from ``arch_backward(train_batch, val_batch)`` when ``wants_arch_step(epoch, step_in_epoch)``;
  ``train_batch`` is the batch about to be trained on, ``val_batch`` one of
  ``task.arch_batches(epoch)`` (a separate shuffle of the training set); whatever it leaves
  in the main parameters' gradients is dropped;
* checkpoints (``checkpoints.py``: ``checkpoint-N`` folders by ``accelerator.save_state``,
  SHA-256 per file, rotation) every ``checkpoint_every_epochs`` / ``checkpoint_every_steps``;
  resume from the newest valid one, the config's optimiser settings applied over the restored
  state (``optimizers.restore_schedule``);
* one logging path: ``metrics.json`` (``metrics_file.MetricsFile``; records past the resumed
  point dropped) and Accelerate's trackers (TensorBoard when the accelerator has
  ``log_with``); one progress bar over the optimiser steps; the process group closed at the end
  when ``settings.close_process_group``.

One seeding rule: ``set_seed(seed)`` before the networks are built (the same initial weights on
every process), and every later random draw of epoch ``e`` on process ``r`` is seeded by
``derive_seed(seed, e, stream, r)`` (``torch.manual_seed`` at each epoch start; tasks seed their
shuffles and augmentation the same way), so a resumed run draws what an uninterrupted one drew.

What a task provides: ``distill.engines.core.task.Task`` (its docstring lists the hooks).
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from distill.engines.core import checkpoints as ckpt
from distill.engines.core.data_order import derive_seed
from distill.engines.core.task import Task, TrainSettings, flat_config  # noqa: F401
from distill.engines.core.guards import DeferredChecks, check_finite_state
from distill.engines.core.metrics_file import MetricsFile, tracker_scalars
from distill.engines.core.runtime import run_summary
from distill.engines.core.optimizers import (DEFAULT_ARCH_OPTIMIZER, apply_config_over_restored,
                                        build_optimizer, build_schedulers, restore_schedule,
                                        split_arch_parameters, step_schedulers)

logger = logging.getLogger('distill.trainer')

#: steps whose loss terms may wait on the device for a read (when logging is rarer or off)
MAX_PENDING = 200


class Trainer:
    """One run: build the optimisers, prepare the model, ``resume`` (optional), ``run``."""

    def __init__(self, task: Task, model: nn.Module, accelerator, settings: TrainSettings,
                 work_dir, optimizer_cfg: dict, schedule: list[dict] | None = None,
                 arch_optimizer_cfg: dict | None = None, tracker_config: dict | None = None):
        if (settings.epochs is None) == (settings.max_steps is None):
            raise ValueError('TrainSettings: give exactly one of epochs and max_steps')
        self.task, self.accelerator, self.settings = task, accelerator, settings
        self.work_dir = Path(work_dir)
        self.is_main = accelerator.is_main_process
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.optimizer_cfg, self.schedule = dict(optimizer_cfg), list(schedule or [])
        self.tracker_config = tracker_config
        self.run_config = None  # a config_diff.RunConfig: checked by resume (engines set it)
        main_params, arch_params = split_arch_parameters(model)
        optimizer = build_optimizer(self.optimizer_cfg, main_params)
        self.schedulers = build_schedulers(self.schedule, optimizer, settings.schedule_by_epoch)
        # the arch optimiser is not prepared: Accelerate's wrapper would skip its step inside
        # an accumulation group, where arch steps may fall; its state is checkpointed as an
        # extra file (arch_optimizer.pt)
        self.arch_params, self.arch_optimizer = arch_params, None
        self.arch_optimizer_cfg = dict(arch_optimizer_cfg or DEFAULT_ARCH_OPTIMIZER)
        if arch_params:
            self.arch_optimizer = build_optimizer(self.arch_optimizer_cfg, arch_params,
                                                  'arch_optimizer')
            if self.world > 1:  # DDP leaves them alone; _arch_step averages their grads
                ids = {id(p) for p in arch_params}
                names = [n for n, p in model.named_parameters() if id(p) in ids]
                nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                    model, names)
        self.ddp_model, self.optimizer = accelerator.prepare(model, optimizer)
        self.model = accelerator.unwrap_model(self.ddp_model)
        self.trainable = main_params
        self.epoch, self.global_step, self.batches_in_epoch = 1, 0, 0
        self.records: list[dict] = []
        self.checks = DeferredChecks()  # the loss terms and state flags not yet read
        self.metrics = None
        self.steps_per_epoch = len(task.train_loader(self, 1))
        if self.steps_per_epoch == 0:
            raise ValueError('the training loader gives no batch')
        accum = accelerator.gradient_accumulation_steps
        self.updates_per_epoch = -(-self.steps_per_epoch // accum)
        self.total_steps = (settings.max_steps if settings.max_steps is not None
                            else settings.epochs * self.updates_per_epoch)

    # ------------------------------------------------------------------ resume
    def resume(self, resume) -> Path | None:
        """Restore the newest valid checkpoint (``True``/'auto'/'latest') or the given folder;
        None (and a warning when asked to resume) if there is none. Call before ``run``."""
        if self.is_main and resume:
            ckpt.remove_orphan_temporaries(self.work_dir)  # of a save killed mid-write
        self.accelerator.wait_for_everyone()
        found = ckpt.find_resume_checkpoint(self.work_dir, resume)
        if found is None:
            if resume:
                logger.warning('--resume: no checkpoint in %s, starting from scratch',
                               self.work_dir)
            return None
        path, state = found
        if self.run_config is not None:  # each change logged, an architecture change refused
            self.run_config.check_resume(state['global_step'], 'step', self.is_main and logger
                                         .warning or None)
        ckpt.check_resume_position(path, state, self.world, self.steps_per_epoch)
        main, per_process = ckpt.load_checkpoint_dir(
            self.accelerator, path, state,
            ['arch_optimizer'] * bool(self.arch_optimizer) + list(self.task.main_states(self)),
            list(self.task.process_states(self)))
        changes = []
        if self.arch_optimizer is not None:
            self.arch_optimizer.load_state_dict(main.pop('arch_optimizer'))
            changes = apply_config_over_restored(self.arch_optimizer, self.arch_optimizer_cfg,
                                                 'arch_optimizer')
        self.task.load_states(self, main, per_process)
        self.global_step = int(state['global_step'])
        self.records = list(state.get('records', []))
        self.epoch, self.batches_in_epoch = int(state['epoch']), int(state['batches_in_epoch'])
        if self.batches_in_epoch >= self.steps_per_epoch:  # saved at the end of an epoch
            self.epoch, self.batches_in_epoch = self.epoch + 1, 0
        if self.settings.max_steps is None:  # the rest at this run's accumulation (changed?)
            left = -(-(self.steps_per_epoch - self.batches_in_epoch) // self.accelerator
                     .gradient_accumulation_steps)
            self.total_steps = self.global_step + max(
                0, left + (self.settings.epochs - self.epoch) * self.updates_per_epoch)
        done = self.epoch - 1 if self.settings.schedule_by_epoch else self.global_step
        self.schedulers, main_changes = restore_schedule(
            self.optimizer, self.optimizer_cfg, self.schedule, self.settings.schedule_by_epoch,
            done, self.settings.optimizer_option_names)
        for change in main_changes + changes:
            logger.warning('resume: the config changes %s', change)
        logger.info('resumed from %s at epoch %d (step %d)', path, self.epoch, self.global_step)
        return path

    # ------------------------------------------------------------------ helpers
    def check_state(self, values=None, optimizer=None, when='after the optimiser step'):
        """Every process checks its weights and buffers; any bad one stops them all."""
        check_finite_state(self.model, self.global_step, self.epoch, values, optimizer,
                           self._reduce_sum, when)

    @property
    def _reduce_sum(self):
        return (lambda t: self.accelerator.reduce(t, 'sum')) if self.world > 1 else None

    def read_checks(self) -> list:
        """The pending steps' values, read from the device in one copy (``DeferredChecks``);
        raises at the first non-finite one."""
        return self.checks.read(self.model, self._reduce_sum)

    def reduce_mean(self, values: dict) -> dict:
        if self.world == 1 or not values:
            return values
        names = sorted(values)
        stacked = torch.tensor([values[n] for n in names], dtype=torch.float64,
                               device=self.accelerator.device)
        stacked = self.accelerator.reduce(stacked, 'mean')
        return {name: float(v) for name, v in zip(names, stacked)}

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]['lr']

    def _finished(self) -> bool:
        if self.settings.max_steps is not None:
            return self.global_step >= self.settings.max_steps
        return self.epoch > self.settings.epochs

    def _every(self, every, count) -> bool:
        return bool(every) and count % every == 0

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
        return {(k if k.startswith('arch.') else f'arch.{k}'): v for k, v in (logs or {}).items()}

    # ------------------------------------------------------------------ the epoch
    def _loader(self, epoch):
        from accelerate.data_loader import prepare_data_loader
        # one process's view: the task's loader is already this process's shard; the wrapper
        # marks the end of the epoch for accumulate() and supports skip_first_batches
        loader = self.task.train_loader(self, epoch)
        if getattr(loader, 'generator', False) is None:
            # the loader's base seed (worker seeds) drawn from its own generator, not the global
            # one: a resumed run then continues the global RNG state that load_state restored
            loader.generator = torch.Generator().manual_seed(
                derive_seed(self.settings.seed, epoch, 'loader', self.rank))
        loader = prepare_data_loader(loader, num_processes=1, process_index=0,
                                     put_on_device=False, rng_types=[])
        if self.batches_in_epoch:  # resumed mid-epoch
            loader = self.accelerator.skip_first_batches(loader, self.batches_in_epoch)
        return loader

    def train_epoch(self, progress) -> dict:
        acc, model, epoch, settings = self.accelerator, self.model, self.epoch, self.settings
        if self.batches_in_epoch == 0:  # mid-epoch (resumed), load_state restored the RNGs
            torch.manual_seed(derive_seed(settings.seed, epoch, 'global', self.rank))
        wants_arch = self.arch_optimizer is not None and hasattr(model, 'wants_arch_step')
        arch_source = self.task.arch_batches(self, epoch) if wants_arch else None
        wants_arch = wants_arch and arch_source is not None
        set_progress = getattr(model, 'set_progress', None)
        self.ddp_model.train()
        sums, counts = defaultdict(float), defaultdict(int)
        window, window_count = defaultdict(float), 0

        def take_reads():  # the pending values, into the epoch means and the log window
            nonlocal window_count
            last_loss = None
            for kind, _, values in self.read_checks():
                if kind == 'terms':
                    values['loss'] = last_loss = sum(values.values())
                    window_count += 1
                for name, value in values.items():
                    sums[name] += value
                    counts[name] += 1
                    if kind == 'terms':
                        window[name] += value
            if last_loss is not None:
                progress.set_postfix(loss=f'{last_loss:.3f}', refresh=False)

        step = self.batches_in_epoch
        for batch in self._loader(epoch):
            if set_progress is not None:
                set_progress(self.global_step / self.total_steps)
            batch = self.task.prepare_batch(self, batch)
            if wants_arch and model.wants_arch_step(epoch, step):
                self.checks.add_values(self._arch_step(batch, arch_source),
                                       self.global_step + 1, epoch)
            with acc.accumulate(self.ddp_model):
                terms = self.task.forward(self, batch)
                self.checks.add_terms(terms, self.global_step + 1, epoch)  # read later
                acc.backward(sum(terms.values()))
                if acc.sync_gradients and settings.grad_clip:
                    acc.clip_grad_norm_(self.trainable, float(settings.grad_clip))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            step += 1
            if not acc.sync_gradients:
                continue
            self.global_step += 1
            self.batches_in_epoch = step  # batches of this epoch trained (for a checkpoint)
            if settings.check_finite == 'step':
                self.checks.add_state(self.model, self.global_step, epoch)
            if not settings.schedule_by_epoch:
                step_schedulers(self.schedulers)
            self.task.after_optimizer_step(self)
            progress.update(1)
            logs_now = self._every(settings.log_every_steps, self.global_step) or self._every(
                settings.metrics_every_steps, self.global_step)
            evaluates = self._every(settings.eval_every_steps, self.global_step)
            saves = self._every(settings.checkpoint_every_steps, self.global_step)
            if logs_now or evaluates or saves or len(self.checks) >= MAX_PENDING:
                take_reads()  # the only device-to-host read of a training step
            if logs_now and window_count:
                logs = {name: total / window_count for name, total in window.items()}
                window, window_count = defaultdict(float), 0
                logs['lr'] = self.lr
                acc.log({f'train/{k}': v for k, v in logs.items()}, step=self.global_step)
                if self._every(settings.metrics_every_steps, self.global_step):
                    self.add_record(dict(global_step=self.global_step, epoch=epoch,
                                         kind='train', **logs))
            if evaluates:
                record = self.task.evaluate(self)
                if record:
                    self.add_record(dict(global_step=self.global_step, epoch=epoch, **record))
            if saves:
                self.save()
            if self._finished():
                break
        take_reads()
        self.batches_in_epoch = step
        return self.reduce_mean({name: total / counts[name] for name, total in sums.items()})

    # ------------------------------------------------------------------ records, checkpoints
    def add_record(self, record: dict) -> None:
        """A record into ``metrics.json`` (main process), the trackers and ``records``."""
        self.records.append(record)
        if self.metrics is not None:
            self.metrics.append(record)
        if record.get('kind') != 'train':
            self.accelerator.log(tracker_scalars(record), step=self.global_step)
        describe = self.task.describe(record)
        if record.get('kind') != 'train' and self.is_main:
            where = (f"epoch {record.get('epoch')}/{self.settings.epochs}"
                     if self.settings.epochs else f'step {self.global_step}')
            parts = [where, f"lr {record.get('lr', self.lr):.4g}"]
            if 'loss' in record:
                parts.append(f"loss {record['loss']:.4f}")
            logger.info(' | '.join(parts + ([describe] if describe else [])))

    def save(self) -> Path:
        """A checkpoint of the current state, only from finite state (every process): the
        pending steps read and checked first, then the whole state, optimiser included."""
        self.read_checks()
        self.check_state(optimizer=self.optimizer,
                         when=f'before writing the checkpoint of epoch {self.epoch}')
        main = dict(self.task.main_states(self))
        if self.arch_optimizer is not None:
            main['arch_optimizer'] = self.arch_optimizer.state_dict()
        state = dict(global_step=self.global_step, epoch=self.epoch,
                     batches_in_epoch=self.batches_in_epoch, steps_per_epoch=self.steps_per_epoch,
                     records=self.records, seed=self.settings.seed)
        return ckpt.save_checkpoint(self.accelerator, self.work_dir, state, main,
                                    self.task.process_states(self), self.settings.keep_checkpoints,
                                    export=lambda folder: self.task.export_checkpoint(self, folder))

    # ------------------------------------------------------------------ the run
    def run(self) -> list[dict]:
        acc, settings = self.accelerator, self.settings
        if self.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_orphan_temporaries(self.work_dir)
            self.metrics = MetricsFile(self.work_dir / 'metrics.json')
            self.metrics.records = list(self.records)  # the checkpoint's: past it dropped
            self.metrics.truncate('global_step', self.global_step)
        if acc.log_with:
            acc.init_trackers(settings.project_name, config=self.tracker_config)
        if self.is_main:  # what this run is, before it starts (the engines share the line)
            logger.info(run_summary(self))
        from tqdm.auto import tqdm
        progress = tqdm(total=self.total_steps, initial=self.global_step, dynamic_ncols=True,
                        disable=not (self.is_main and settings.progress_bar), leave=False)
        succeeded = False
        try:
            while not self._finished():
                start, lr = time.time(), self.lr
                progress.set_description(f'epoch {self.epoch}')
                means = self.train_epoch(progress)
                if self.batches_in_epoch >= self.steps_per_epoch:  # not cut short by max_steps
                    if settings.schedule_by_epoch:
                        step_schedulers(self.schedulers)
                    if self._every(settings.eval_every_epochs, self.epoch):
                        record = dict(epoch=self.epoch, global_step=self.global_step, lr=lr,
                                      **means)
                        record.update(self.task.evaluate(self))
                        self.task.end_of_epoch(self, record)
                        record.update(num_processes=self.world,
                                      epoch_time_s=time.time() - start)
                        self.add_record(record)
                    if self._every(settings.checkpoint_every_epochs, self.epoch):
                        self.save()
                if self._finished():
                    break
                self.epoch, self.batches_in_epoch = self.epoch + 1, 0
            progress.close()
            final = self.task.finish(self)
            if final:
                self.add_record(dict(global_step=self.global_step, epoch=self.epoch, **final))
            acc.wait_for_everyone()
            succeeded = True
        finally:
            progress.close()
            for tracker in acc.trackers:
                tracker.finish()
            if succeeded and settings.close_process_group:
                acc.end_training()  # trackers and the process group (a gloo group left to
                #                     the interpreter's shutdown can abort a rank)
        return self.records
