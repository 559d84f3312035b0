"""The runtime around a run of the Accelerate engines: its Accelerator and its log file."""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import torch

from distill.taps import describe_auto_taps

# the loggers whose lines go to train.log: the trainer core's, the tasks' and the data sets'
# (an image folder's empty classes); what taps='auto' chose is in the first line, run_summary:
# the distiller may be built before the log is open
RUN_LOGGERS = ('distill.trainer', 'distill.classification', 'distill.diffusion', 'distill.data')


@contextlib.contextmanager
def log_to(work_dir: Path, enabled: bool, names=RUN_LOGGERS, file_name: str = 'train.log'):
    """Log lines of this run to stdout and ``work_dir/train.log`` (main process only)."""
    handlers, loggers = [], [logging.getLogger(name) for name in names]
    if enabled:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        fmt = logging.Formatter('%(asctime)s %(levelname)s %(message)s', '%H:%M:%S')
        handlers = [logging.StreamHandler(sys.stdout),
                    logging.FileHandler(Path(work_dir) / file_name)]
        for handler in handlers:
            handler.setFormatter(fmt)
        for logger in loggers:
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
    try:
        yield
    finally:
        for logger in loggers:
            for handler in handlers:
                logger.removeHandler(handler)
        for handler in handlers:
            handler.close()


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
        return True
    except ImportError:
        return False


def make_accelerator(work_dir, mixed_precision: str = 'no', gradient_accumulation_steps: int = 1,
                     cpu: bool = False, find_unused_parameters: bool = False,
                     log_with: str | None = 'tensorboard', logging_dir: str = '.'):
    """An ``Accelerator`` whose trackers write under ``work_dir/logging_dir``, in a folder
    named by ``init_trackers``'s project name (``TrainSettings.project_name``: classification's
    is 'tensorboard', so its events land in ``work_dir/tensorboard``). Without a GPU it
    runs on the CPU, so that ``accelerate launch --multi_gpu --num_processes N`` gives N CPU
    processes (DDP over gloo). ``log_with='tensorboard'`` is dropped (with a warning) when
    tensorboard is not installed; another logger that is not installed, and fp16 on a CPU, are
    errors (Accelerate would log nothing, or run fp32, without a word)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    on_cpu = bool(cpu) or not torch.cuda.is_available()
    if mixed_precision == 'fp16' and on_cpu:  # Accelerate would run fp32 without a word
        raise ValueError("mixed precision 'fp16' needs a CUDA device and this run is on the "
                         "CPU: use 'bf16' (CPU autocast) or 'no'")
    if log_with not in (None, 'none', 'tensorboard', 'all'):
        import importlib.util
        if importlib.util.find_spec(str(log_with)) is None:  # it would log nothing, silently
            raise ValueError(f'logger {log_with!r} is not installed (pip install {log_with}); '
                             f"or log with 'tensorboard' or 'none'")
    if log_with == 'tensorboard' and not tensorboard_available():
        logging.getLogger('distill.trainer').warning(
            'tensorboard is not installed: no TensorBoard logs')
        log_with = None
    ddp_kwargs = DistributedDataParallelKwargs(find_unused_parameters=bool(find_unused_parameters))
    return Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=int(gradient_accumulation_steps),
        cpu=on_cpu,
        log_with=None if log_with in (None, 'none') else log_with,
        project_config=ProjectConfiguration(project_dir=str(work_dir),
                                            logging_dir=str(Path(work_dir) / logging_dir)),
        kwargs_handlers=[ddp_kwargs])


def run_summary(trainer) -> str:
    """The first log line of a run: its data, steps, processes, precision and device, and the
    tap pairs ``taps='auto'`` chose (``distiller.auto_tap_pairs``)."""
    acc, data = trainer.accelerator, trainer.task.data_summary()
    pairs = getattr(trainer.model, 'auto_tap_pairs', None)
    return (f"{'resuming' if trainer.global_step else 'starting'}: {data + '; ' if data else ''}"
            f'{trainer.steps_per_epoch} micro-batches per epoch per process, '
            f'{trainer.total_steps} optimiser steps ({trainer.global_step} done), '
            f'{trainer.world} process(es) x accumulation {acc.gradient_accumulation_steps}, '
            f'precision {acc.mixed_precision}, device {acc.device}'
            + (f'; {describe_auto_taps(pairs)}' if pairs else ''))
