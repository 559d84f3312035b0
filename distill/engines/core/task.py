"""What a task gives the trainer core (``distill.engines.core.trainer.Trainer``): its hooks
(``Task``) and the run's settings (``TrainSettings``); the seeding rule is
``distill.engines.core.data_order``.

What a task provides (subclass ``Task``; every hook has a default but ``train_loader``):

    train_loader(trainer, epoch)     this process's batches of epoch ``epoch`` (1-based), an
                                     iterable with ``len``, the same length on every process
    prepare_batch(trainer, batch)    to device, augment, encode (default: as is)
    forward(trainer, batch)          the named loss terms (default: ``trainer.ddp_model(batch)``)
    arch_batches(trainer, epoch)     an iterator of val batches for the arch step, or None
    after_optimizer_step(trainer)    e.g. an EMA update
    evaluate(trainer)                a dict of record entries ('val/...'), at the eval cadence
    end_of_epoch(trainer, record)    add to the epoch record (e.g. SoKD's policy)
    describe(record)                 the task's part of the log line of a record
    data_summary()                   its data and batch size, for the run's first log line
    main_states / process_states     extra state to checkpoint, ``{name: state}`` (weights-only
                                     types), of the main process / of each process
    load_states(trainer, main, per_process)  the same, given back on resume
    finish(trainer)                  artefacts at the end (every process calls it); may return a
                                     final record for metrics.json
"""
from __future__ import annotations

from dataclasses import dataclass


def flat_config(cfg) -> dict:
    """Scalars of a config, flattened (``distiller.loss_weights.co``), for the trackers
    (TensorBoard's hparams take only numbers, strings and booleans)."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f'{prefix}.{key}' if prefix else str(key), item)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix] = value
        elif value is None:
            flat[prefix] = 'None'
    walk('', cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg or {}))
    return flat


@dataclass
class TrainSettings:
    seed: int = 0
    epochs: int | None = None            # the run's length: epochs, or
    max_steps: int | None = None         # optimiser steps (the run stops at whichever is set)
    grad_clip: float | None = None       # max gradient norm of the main parameters
    check_finite: str = 'step'           # 'step': state checked after every optimiser step;
    #                                      'epoch': only before each checkpoint
    schedule_by_epoch: bool = True       # the lr schedule steps per epoch, or per optimiser step
    checkpoint_every_epochs: int | None = 1
    checkpoint_every_steps: int | None = None
    keep_checkpoints: int | None = 3     # the newest kept (None/0: all)
    eval_every_epochs: int | None = 1    # an epoch record (train means + evaluate) every n
    eval_every_steps: int | None = None  # a record of evaluate() every n optimiser steps
    log_every_steps: int = 50            # train scalars to the trackers
    metrics_every_steps: int | None = None  # and a 'train' record to metrics.json
    progress_bar: bool = True
    close_process_group: bool = False    # end_training at the end (entry points)
    project_name: str = 'distill'        # the trackers' run name
    # optimiser keys as the user sets them (e.g. lr -> '--learning_rate'), for resume messages
    optimizer_option_names: dict | None = None


class Task:
    """The per-task hooks of ``Trainer`` (listed in the module docstring)."""

    def train_loader(self, trainer, epoch: int):
        raise NotImplementedError

    def prepare_batch(self, trainer, batch):
        return batch

    def forward(self, trainer, batch) -> dict:
        return trainer.ddp_model(batch)

    def arch_batches(self, trainer, epoch: int):
        return None

    def after_optimizer_step(self, trainer) -> None:
        pass

    def evaluate(self, trainer) -> dict:
        return {}

    def end_of_epoch(self, trainer, record: dict) -> None:
        pass

    def describe(self, record: dict) -> str:
        return ''

    def data_summary(self) -> str:
        return ''

    def main_states(self, trainer) -> dict:
        return {}

    def process_states(self, trainer) -> dict:
        return {}

    def export_checkpoint(self, trainer, folder) -> None:
        """Write the networks into a checkpoint folder in the task's own framework's format
        (the main process, before the folder's checksums are taken): diffusion's ``unet/``."""

    def load_states(self, trainer, main: dict, per_process: dict) -> None:
        pass

    def finish(self, trainer) -> dict | None:
        return None
