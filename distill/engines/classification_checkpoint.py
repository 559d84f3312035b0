"""Checkpoints of the classification engine: written, verified, chosen on resume.

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
    meta           seed, number of processes, the config as text
    checksum       SHA-256 of all of the above (``distill.checkpoint.state_digest``)

On resume the checksum is recomputed; a file that does not load or does not match is skipped
with a warning naming it, and the newest valid checkpoint is used instead. A fresh run refuses
a work dir that holds an earlier run (``check_fresh_work_dir``).
"""
from __future__ import annotations

import bisect
import logging
import re
import shutil
from collections import Counter
from pathlib import Path

from distill.checkpoint import (CorruptCheckpointError, load_checkpoint, save_atomic,
                                state_digest)

logger = logging.getLogger('distill.classification')

REQUIRED_KEYS = {'model', 'optimizer', 'lr_scheduler', 'epoch', 'metrics'}
# what a run writes in its work dir; --overwrite removes exactly these
RUN_FILES = ('latest.pth', 'epoch_*.pth', 'metrics.json', 'student.pth', 'teacher.pth',
             'config.py', 'train.log', 'tensorboard', '.*.tmp')


def checkpoint_state(model, optimizer, lr_scheduler, arch_optimizer, grad_scaler, epoch,
                     global_step, records, meta) -> dict:
    state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                 lr_scheduler=lr_scheduler.state_dict(),
                 arch_optimizer=arch_optimizer.state_dict() if arch_optimizer else None,
                 grad_scaler=grad_scaler.state_dict() if grad_scaler is not None else None,
                 epoch=epoch, global_step=global_step, metrics=list(records), meta=meta)
    state['checksum'] = state_digest(state)
    return state


def _epoch_number(path: Path) -> int:
    return int(re.findall(r'\d+', path.stem)[0])


def epoch_checkpoints(work_dir: Path) -> list[Path]:
    """``epoch_{n}.pth`` of ``work_dir``, newest (highest n) first."""
    return sorted((p for p in Path(work_dir).glob('epoch_*.pth')
                   if re.fullmatch(r'epoch_\d+\.pth', p.name)), key=_epoch_number, reverse=True)


def save_checkpoints(state: dict, work_dir: Path, keep: int | None = None) -> Path:
    """Write ``epoch_{n}.pth`` then ``latest.pth`` atomically; keep the ``keep`` newest
    ``epoch_*.pth`` (all when ``keep`` is falsy)."""
    work_dir = Path(work_dir)
    epoch_path = save_atomic(state, work_dir / f'epoch_{state["epoch"]}.pth')
    save_atomic(state, work_dir / 'latest.pth')
    if keep:
        for old in epoch_checkpoints(work_dir)[keep:]:
            old.unlink()
    return epoch_path


def load_verified(path) -> dict:
    """Load a classification checkpoint and check its checksum; ``CorruptCheckpointError``
    naming the file if it cannot be read, is not one, or was changed since it was written."""
    state = load_checkpoint(path)  # weights_only: damage raises CorruptCheckpointError
    if not isinstance(state, dict) or REQUIRED_KEYS - set(state):
        lacks = sorted(REQUIRED_KEYS - set(state)) if isinstance(state, dict) else 'everything'
        raise CorruptCheckpointError(f'{path} is not a classification training checkpoint: it '
                                     f'lacks {lacks}')
    stored = state.pop('checksum', None)
    if stored is None:
        logger.warning('%s has no checksum (written by an older version): not verified', path)
    elif state_digest(state) != stored:
        raise CorruptCheckpointError(f'{path} does not match its checksum: the file changed '
                                     f'after it was written (disk or copy damage)')
    return state


def find_resume_checkpoint(work_dir: Path, resume):
    """``(path, state)`` to resume from, or None for a fresh start.

    ``resume`` is False/None (fresh run), True/'auto' (the newest valid checkpoint of
    ``work_dir``: ``latest.pth`` or, when it is damaged or older, the newest valid
    ``epoch_{n}.pth``; every file skipped is named in a warning) or a path (which must exist
    and be valid: an explicit choice is not replaced by another file).
    """
    if not resume:
        return None
    if resume is not True and resume != 'auto':
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f'--resume {path}: no such checkpoint')
        try:
            return path, load_verified(path)
        except CorruptCheckpointError as err:
            raise CorruptCheckpointError(f'--resume {path}: {err}. Pass --resume without a '
                                         f'path to continue from the newest valid checkpoint '
                                         f'of the work dir') from err
    work_dir = Path(work_dir)
    skipped = []

    def try_load(path):
        try:
            return load_verified(path)
        except CorruptCheckpointError as err:
            logger.warning('skipping %s on resume: %s', path, err)
            skipped.append(path.name)
            return None

    best = None
    latest = work_dir / 'latest.pth'
    if latest.is_file():
        state = try_load(latest)
        if state is not None:
            best = latest, state
    for path in epoch_checkpoints(work_dir):
        if best is not None and _epoch_number(path) <= int(best[1]['epoch']):
            break  # latest.pth is at least as new
        state = try_load(path)
        if state is not None:
            best = path, state
            break
    if best is None and skipped:
        raise CorruptCheckpointError(f'--resume: no valid checkpoint in {work_dir} (damaged: '
                                     f'{", ".join(skipped)}); start a fresh run with '
                                     f'--overwrite or another --work-dir')
    if best is not None and skipped:
        logger.warning('resuming from %s, the newest valid checkpoint (damaged: %s)',
                       best[0], ', '.join(skipped))
    return best


def restore_checkpoint(state: dict, path, model, optimizer, lr_scheduler, arch_optimizer,
                       grad_scaler) -> dict:
    """Load a verified ``checkpoint_state`` into the objects; return it."""
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


def _differs(old, new) -> bool:
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(old) != list(new)  # betas: a tuple in the optimiser, a list in a config
    return old != new


def apply_config_over_restored(optimizer, lr_scheduler, optimizer_cfg: dict,
                               schedule: dict) -> list[str]:
    """After a restore, the config's optimiser settings (``lr``, ``weight_decay``, momentum,
    ...) and lr schedule (``milestones``, ``gamma``) win over the checkpoint's: a value changed
    by ``--cfg-options`` (or in the file) since the checkpoint was written is applied, with the
    lr decayed as the schedule says for the epochs already done. Returns the changes, for a
    log line; without this they would be silently replaced by the checkpoint's values."""
    changes = []
    for key, value in optimizer_cfg.items():
        if key == 'type':
            continue
        for group in optimizer.param_groups:
            current = group.get('initial_lr', group['lr']) if key == 'lr' else group.get(key)
            if key in group and _differs(current, value):
                changes.append(f'optimizer.{key}: {current} (checkpoint) -> {value} (config)')
                group['initial_lr' if key == 'lr' else key] = value
    milestones = Counter(schedule.get('milestones', []))
    gamma = float(schedule.get('gamma', 0.1))
    if milestones != lr_scheduler.milestones:
        changes.append(f'schedule.milestones: {sorted(lr_scheduler.milestones.elements())} '
                       f'(checkpoint) -> {sorted(milestones.elements())} (config)')
        lr_scheduler.milestones = milestones
    if gamma != lr_scheduler.gamma:
        changes.append(f'schedule.gamma: {lr_scheduler.gamma} (checkpoint) -> {gamma} (config)')
        lr_scheduler.gamma = gamma
    if changes:  # MultiStepLR's closed form at the epochs done
        decays = bisect.bisect_right(sorted(milestones.elements()), lr_scheduler.last_epoch)
        lr_scheduler.base_lrs = [group['initial_lr'] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group['lr'] = group['initial_lr'] * gamma ** decays
        lr_scheduler._last_lr = [group['lr'] for group in optimizer.param_groups]
    return changes


def remove_orphan_temporaries(work_dir: Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a run killed mid-write left behind."""
    removed = []
    for path in sorted(Path(work_dir).glob('.*.tmp')):
        if path.is_file():
            path.unlink()
            removed.append(path)
    if removed:
        logger.warning('removed %d half-written temporary file(s) of an interrupted run: %s',
                       len(removed), ', '.join(p.name for p in removed))
    return removed


def check_fresh_work_dir(work_dir: Path, overwrite: bool = False) -> None:
    """A fresh run needs a work dir with nothing in it but, at most, the ``train.log`` of a run
    that failed before it started. Otherwise ``FileExistsError`` (nothing is changed), or with
    ``overwrite`` the earlier run's files (``RUN_FILES``) are deleted first."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return
    entries = sorted(p.name for p in work_dir.iterdir() if p.name != 'train.log')
    if not entries:
        return
    if not overwrite:
        shown = ', '.join(entries[:6]) + (', ...' if len(entries) > 6 else '')
        raise FileExistsError(
            f'work dir {work_dir} already holds an earlier run ({shown}); nothing was changed. '
            f'Pass --resume to continue it, --overwrite to delete its files and start again, '
            f'or another --work-dir')
    for pattern in RUN_FILES:
        for path in work_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    logger.warning('--overwrite: deleted the earlier run in %s', work_dir)
