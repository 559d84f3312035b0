"""Checkpoints of the diffusion engine: ``output_dir/checkpoint-{step}`` as diffusers names them.

``accelerator.save_state`` writes models, optimiser, lr schedule and RNG states; beside it go
what Accelerate does not know about, each loadable with ``weights_only=True``:

* ``ema.pt``                  the student's EMA (main process);
* ``noise_generator_{r}.pt``  process r's generator of noise, timesteps and flips;
* ``training_state.json``     step, epoch and batches consumed in that epoch, and the SHA-256
                              of every other file of the folder; written last, after every
                              process has finished: a checkpoint without it is incomplete and
                              ``latest`` skips it, as it skips (with a warning naming the file)
                              one whose files no longer match their SHA-256.

A fresh run (no ``resume_from_checkpoint``) refuses an ``output_dir`` that holds an earlier run
(``check_fresh_output_dir``) unless ``overwrite_output_dir``; the ``.*.tmp`` files a save killed
mid-write left are removed before resuming (``remove_orphan_temporaries``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch

from distill.checkpoint import CorruptCheckpointError, load_checkpoint, save_atomic

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r'^checkpoint-(\d+)$')
STATE_FILE = 'training_state.json'
# what a run writes in output_dir (besides checkpoint-N and its logging_dir)
RUN_ENTRIES = ('metrics.json', 'model_index.json', 'unet', 'scheduler', 'teacher', 'validation')


def list_checkpoints(output_dir) -> list[Path]:
    """``checkpoint-N`` folders of ``output_dir``, oldest (smallest N) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in output_dir.iterdir()
             if path.is_dir() and (m := CHECKPOINT_PATTERN.match(path.name))]
    return [path for _, path in sorted(found)]


def file_digests(folder) -> dict:
    """``{relative path: sha256}`` of every file under ``folder`` but the state file."""
    folder = Path(folder)
    digests = {}
    for path in sorted(folder.rglob('*')):
        if path.is_file() and path.name != STATE_FILE and not path.name.endswith('.tmp'):
            with open(path, 'rb') as file:
                digests[str(path.relative_to(folder))] = hashlib.file_digest(
                    file, 'sha256').hexdigest()
    return digests


def verify_checkpoint_dir(path) -> None:
    """``CorruptCheckpointError`` naming the first file of a checkpoint folder that is missing
    or no longer matches the SHA-256 recorded when it was written (older checkpoints without
    digests pass)."""
    path = Path(path)
    try:
        recorded = json.loads((path / STATE_FILE).read_text()).get('sha256') or {}
    except json.JSONDecodeError as err:
        raise CorruptCheckpointError(f'{path / STATE_FILE} is not valid JSON: {err}') from err
    actual = file_digests(path)
    for name, digest in recorded.items():
        if actual.get(name) != digest:
            what = 'is missing' if name not in actual else 'does not match its checksum'
            raise CorruptCheckpointError(f'{path / name} {what} (written with the checkpoint)')


def resolve_resume(output_dir, resume_from_checkpoint: str | None) -> Path | None:
    """``'latest'`` -> the newest complete and intact checkpoint (None if there is none, as in
    diffusers' examples; a damaged one is skipped with a warning naming the file); a name or
    path -> that folder, which must be complete and intact."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == 'latest':
        complete = [p for p in list_checkpoints(output_dir) if (p / STATE_FILE).is_file()]
        for path in reversed(complete):
            try:
                verify_checkpoint_dir(path)
                return path
            except CorruptCheckpointError as err:
                logger.warning('skipping %s on resume: %s', path.name, err)
        if complete:  # every one damaged: say so rather than start afresh
            raise CorruptCheckpointError(f'--resume_from_checkpoint latest: every checkpoint '
                                         f'in {output_dir} is damaged '
                                         f'({", ".join(p.name for p in complete)})')
        return None
    path = Path(resume_from_checkpoint)
    if not path.is_absolute() and not path.exists():
        path = Path(output_dir) / path
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f'--resume_from_checkpoint {resume_from_checkpoint!r}: '
                                f'{str(path)!r} is not a complete checkpoint (no {STATE_FILE})')
    verify_checkpoint_dir(path)
    return path


def prune_checkpoints(output_dir, total_limit: int | None) -> list[Path]:
    """Before saving a new checkpoint, delete the oldest so that at most ``total_limit``
    remain after it (diffusers' ``--checkpoints_total_limit``). Main process only."""
    if not total_limit:
        return []
    existing = list_checkpoints(output_dir)
    excess = len(existing) - (total_limit - 1)
    removed = existing[:max(excess, 0)]
    for path in removed:
        shutil.rmtree(path)
    return removed


def save_checkpoint(accelerator, output_dir, step: int, epoch: int, batches_in_epoch: int,
                    noise_generator: torch.Generator, ema=None,
                    total_limit: int | None = None) -> Path:
    """Save everything a resume needs. Must run on every process (``save_state`` gathers and
    each process writes its own RNG states)."""
    output_dir = Path(output_dir)
    if accelerator.is_main_process:
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    path = output_dir / f'checkpoint-{step}'
    accelerator.save_state(str(path))
    rank = accelerator.process_index
    save_atomic(noise_generator.get_state(), path / f'noise_generator_{rank}.pt')
    if ema is not None and accelerator.is_main_process:
        save_atomic(ema.state_dict(), path / 'ema.pt')
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = dict(global_step=step, epoch=epoch, batches_in_epoch=batches_in_epoch,
                     num_processes=accelerator.num_processes, sha256=file_digests(path))
        tmp = path / f'.{STATE_FILE}.tmp'
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path / STATE_FILE)
    accelerator.wait_for_everyone()
    return path


def load_checkpoint_dir(accelerator, path, noise_generator: torch.Generator, ema=None) -> dict:
    """Restore a checkpoint written by ``save_checkpoint``; returns its training state."""
    path = Path(path)
    state = json.loads((path / STATE_FILE).read_text())
    if state.get('num_processes', accelerator.num_processes) != accelerator.num_processes:
        raise ValueError(f'{path} was written by {state["num_processes"]} processes; resuming '
                         f'with {accelerator.num_processes} would change the data order')
    accelerator.load_state(str(path))
    noise_generator.set_state(load_checkpoint(path / f'noise_generator_'
                                                     f'{accelerator.process_index}.pt'))
    if ema is not None:
        ema_file = path / 'ema.pt'
        if not ema_file.is_file():
            raise FileNotFoundError(f'{path} has no ema.pt but this run uses EMA (use_ema)')
        ema.load_state_dict(load_checkpoint(ema_file))
    return state


def earlier_run_entries(output_dir) -> list[Path]:
    """The entries of ``output_dir`` that an earlier run wrote: ``checkpoint-N``, ``metrics.json``,
    the pipeline (``model_index.json``, ``unet/``, ``scheduler/``, ``teacher/``), ``validation/``.
    Its TensorBoard logs alone (a run that failed at its first step) are not: a new run writes
    new event files beside them."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if p.name in RUN_ENTRIES
                  or CHECKPOINT_PATTERN.match(p.name))


def check_fresh_output_dir(output_dir, logging_dir: str = 'logs', overwrite: bool = False,
                           delete: bool = True, resuming: bool = False) -> None:
    """``FileExistsError`` (nothing changed) if ``output_dir`` holds an earlier run, unless
    ``overwrite``: then (with ``delete``: on one process) its entries, ``logging_dir`` and any
    ``.*.tmp`` are deleted, and nothing else. ``resuming``: a resume found no complete
    checkpoint there, so it would start a new run."""
    found = earlier_run_entries(output_dir)
    if found and not overwrite:
        shown = ', '.join(p.name for p in found[:6]) + (', ...' if len(found) > 6 else '')
        how = (' but no complete checkpoint to resume from, so this would be a new run '
               'on top of it; nothing was changed. Pass '
               if resuming else '; nothing was changed. Pass --resume_from_checkpoint latest '
                                'to continue it, ')
        raise FileExistsError(
            f'output_dir {output_dir} already holds an earlier run ({shown}){how}'
            f'--overwrite_output_dir to delete it and start again, or another --output_dir')
    if not (overwrite and delete):
        return
    output_dir = Path(output_dir)
    logs = output_dir / logging_dir
    inside = logs.resolve().is_relative_to(output_dir.resolve())  # never a folder outside
    extra = [logs] if logs.exists() and inside and logs.resolve() != output_dir.resolve() else []
    for path in found + extra + sorted(output_dir.glob('.*.tmp')):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if found:
        logger.warning('--overwrite_output_dir: deleted the earlier run in %s', output_dir)


def remove_orphan_temporaries(output_dir) -> list[Path]:
    """Delete the ``.*.tmp`` files (``save_atomic``'s, the state file's) that a save killed
    mid-write left in ``output_dir`` and its ``checkpoint-N`` folders. Main process, before
    resuming, while nothing is being written."""
    from distill.engines.classification_checkpoint import \
        remove_orphan_temporaries as remove_in  # one folder, with a warning naming the files
    removed = []
    for folder in [Path(output_dir), *list_checkpoints(output_dir)]:
        if folder.is_dir():
            removed += remove_in(folder)
    return removed


# the run's key -> the optimiser's param_group entry it sets (AdamW)
OPTIMISER_KEYS = dict(learning_rate='lr', adam_weight_decay='weight_decay', adam_beta1='betas.0',
                      adam_beta2='betas.1', adam_epsilon='eps')


def apply_run_hyperparameters(optimizer, lr_scheduler, values: dict) -> list[str]:
    """After ``load_state``: put this run's ``values`` (``OPTIMISER_KEYS``) on top of the
    optimiser state restored from the checkpoint, where they differ, and return one line per
    change naming the key, both values and what was applied.

    ``load_state`` restores every ``param_group`` entry and the schedule's ``base_lrs``, so a
    ``--learning_rate`` or ``--adam_weight_decay`` given on resume would otherwise be silently
    dropped. A new learning rate becomes the schedule's peak (``base_lrs``); the schedule
    continues from the restored step, so the lr is the new peak times the schedule's factor
    at that step. The moments (Adam's ``exp_avg``) are kept."""
    groups = optimizer.param_groups
    schedule = getattr(lr_scheduler, 'scheduler', lr_scheduler)  # Accelerate's wrapper
    notes = []
    for key, value in values.items():
        entry = OPTIMISER_KEYS[key]
        if entry == 'lr':
            restored = schedule.base_lrs[0]
        elif entry.startswith('betas.'):
            restored = groups[0]['betas'][int(entry[-1])]
        else:
            restored = groups[0][entry]
        if float(restored) == float(value):
            continue
        if entry == 'lr':
            schedule.base_lrs = [float(value)] * len(groups)
            factors = [fn(schedule.last_epoch) for fn in schedule.lr_lambdas]
            for group, factor in zip(groups, factors):
                group['initial_lr'] = float(value)
                group['lr'] = float(value) * factor
            schedule._last_lr = [group['lr'] for group in groups]
            applied = f"the schedule's peak; lr now {groups[0]['lr']:.6g}"
        elif entry.startswith('betas.'):
            for group in groups:
                betas = list(group['betas'])
                betas[int(entry[-1])] = float(value)
                group['betas'] = tuple(betas)
            applied = 'applied'
        else:
            for group in groups:
                group[entry] = float(value)
            applied = 'applied'
        notes.append(f'{key}={value:g} (this run) replaces {restored:g} restored from the '
                     f'optimiser state: {applied}')
    return notes
