"""The runtime around a classification run: its Accelerator and its log file."""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import torch

logger = logging.getLogger('distill.classification')


@contextlib.contextmanager
def log_to(work_dir: Path, enabled: bool):
    """Log lines of this run to stdout and ``work_dir/train.log`` (main process only)."""
    handlers = []
    if enabled:
        work_dir.mkdir(parents=True, exist_ok=True)
        fmt = logging.Formatter('%(asctime)s %(levelname)s %(message)s', '%H:%M:%S')
        handlers = [logging.StreamHandler(sys.stdout),
                    logging.FileHandler(work_dir / 'train.log')]
        for handler in handlers:
            handler.setFormatter(fmt)
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def make_accelerator(train_cfg: dict):
    """An ``Accelerator`` for ``train`` settings. Without a GPU it runs on the CPU, so that
    ``accelerate launch --multi_gpu --num_processes N`` gives N CPU processes (DDP over gloo)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    ddp_kwargs = DistributedDataParallelKwargs(
        find_unused_parameters=bool(train_cfg['find_unused_parameters']))
    return Accelerator(mixed_precision=train_cfg['mixed_precision'],
                       cpu=bool(train_cfg['cpu']) or not torch.cuda.is_available(),
                       kwargs_handlers=[ddp_kwargs])
