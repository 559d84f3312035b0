"""The one checkpoint format of the Accelerate engines (classification and diffusion).

A checkpoint is a folder ``checkpoint-{N}`` in the work dir, ``N`` the optimiser steps done::

    checkpoint-12/
        model.safetensors, optimizer.bin, scaler.pt, random_states_{rank}.pkl
                              ``accelerator.save_state``: every prepared model and optimiser,
                              the gradient scaler, each process's RNG states
        {name}.pt             a task's extra state saved by the main process (``ema.pt``,
                              ``arch_optimizer.pt``), written with ``torch.save``
        {name}_{rank}.pt      a task's extra state of each process (``noise_generator_0.pt``)
        unet/, unet_ema/      diffusion: the student (and its EMA) as diffusers' examples
                              save them, ``UNet2DModel.from_pretrained`` folders (the task's
                              ``export_checkpoint``; resume does not read them)
        training_state.json   written last: global_step, epoch, batches_in_epoch (batches of
                              that epoch already trained), num_processes, the metrics records
                              so far, and the SHA-256 of every other file of the folder

Writing is atomic at the folder level: every process writes into ``.checkpoint-{N}.tmp/``,
the main process adds ``training_state.json`` and renames the folder. A save killed midway
leaves only a ``.*.tmp`` folder, which ``remove_orphan_temporaries`` deletes on the next start;
a ``checkpoint-N`` is therefore always complete. The ``keep`` newest are kept
(``prune_checkpoints``, after the new one is in place).

Resume (``find_resume_checkpoint``): the newest ``checkpoint-N`` whose files match their
SHA-256 (``torch.load`` does not check the zip CRCs and safetensors has no checksum, so a flipped
byte would load silently); a damaged one is skipped with a warning naming the file, and an
explicit path must itself be intact. Loading is weights-only throughout:
``accelerator.load_state`` reads with ``accelerate.utils.load`` (``weights_only=True``) and
safetensors; the task's extra files with ``distill.checkpoint.load_checkpoint``. That is why a
task's extra state is not given to ``accelerator.register_for_checkpointing``, whose custom
objects Accelerate unpickles with ``weights_only=False``.

Kept as our own rather than ``ProjectConfiguration(automatic_checkpoint_naming=True,
total_limit=N)``: that names folders by a save counter (``checkpoints/checkpoint_3``), not by
step, prunes before the new checkpoint is written (a crash then leaves fewer good ones) and
knows nothing of the checksums.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from distill.checkpoint import (CorruptCheckpointError, foreign_global, load_checkpoint,
                                save_atomic)
from distill.engines.core.targets import check_deletions

logger = logging.getLogger('distill.trainer')

CHECKPOINT_PATTERN = re.compile(r'^checkpoint-(\d+)$')
STATE_FILE = 'training_state.json'


def checkpoint_step(path) -> int:
    return int(CHECKPOINT_PATTERN.match(Path(path).name).group(1))


def list_checkpoints(work_dir) -> list[Path]:
    """``checkpoint-N`` folders of ``work_dir``, oldest (smallest N) first."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    found = [p for p in work_dir.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=checkpoint_step)


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


def read_verified_state(path) -> dict:
    """The training state of a checkpoint folder after checking every file against its
    SHA-256; ``CorruptCheckpointError`` naming the first file missing, changed or unreadable."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CorruptCheckpointError(f'{path} is not a complete checkpoint (no {STATE_FILE})')
    try:
        state = json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(f'{state_file} is not valid JSON: {err}') from err
    recorded = state.get('sha256') or {}
    if not recorded:
        raise CorruptCheckpointError(f'{state_file} records no checksum')
    actual = file_digests(path)
    for name, digest in recorded.items():
        if actual.get(name) != digest:
            what = 'is missing' if name not in actual else 'does not match its checksum'
            raise CorruptCheckpointError(f'{path / name} {what} (the file changed after it '
                                         f'was written: disk or copy damage)')
    return state


def find_resume_checkpoint(work_dir, resume):
    """``(path, state)`` to resume from, or None for a fresh start.

    ``resume``: False/None (fresh), True/'auto'/'latest' (the newest intact checkpoint of
    ``work_dir``; each damaged one skipped is named in a warning; None when there is none at
    all; an error when every one is damaged) or a path/name (which must be intact: an explicit
    choice is not replaced by another)."""
    if not resume:
        return None
    work_dir = Path(work_dir)
    if resume is True or resume in ('auto', 'latest'):
        skipped = []
        for path in reversed(list_checkpoints(work_dir)):
            try:
                state = read_verified_state(path)
            except CorruptCheckpointError as err:
                logger.warning('skipping %s on resume: %s', path, err)
                skipped.append(path.name)
                continue
            if skipped:
                logger.warning('resuming from %s, the newest valid checkpoint (damaged: %s)',
                               path, ', '.join(skipped))
            return path, state
        if skipped:
            raise CorruptCheckpointError(
                f'resume: no valid checkpoint in {work_dir} (damaged: {", ".join(skipped)}); '
                f'start a fresh run there with the overwrite flag (classification --overwrite, '
                f'diffusion --overwrite_output_dir) or in another folder')
        return None
    path = Path(resume)
    if not path.is_absolute() and not path.exists():
        path = work_dir / path
    if not path.is_dir():
        raise FileNotFoundError(f'--resume {resume}: no such checkpoint folder')
    try:
        return path, read_verified_state(path)
    except CorruptCheckpointError as err:
        raise CorruptCheckpointError(f'--resume {resume}: {err}. Resume without a path to '
                                     f'continue from the newest valid checkpoint') from err


def check_keep_checkpoints(key: str, value) -> None:
    """The one rule of every engine for how many checkpoints a run keeps (classification's
    ``train.keep_checkpoints``, diffusion's ``--checkpoints_total_limit``): None or 0 keeps
    them all, N > 0 the N newest. Anything else is refused naming ``key``: a negative N would
    read as "all but the newest |N|" and delete each checkpoint as soon as it is written."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        from distill.config_checks import ConfigError
        raise ConfigError(f'{key} must be an int >= 0 (the newest N kept; 0 or None: all), '
                          f'got {value!r}')


def prune_checkpoints(work_dir, keep: int | None) -> list[Path]:
    """Delete all but the ``keep`` newest ``checkpoint-N`` (none when ``keep`` is falsy)."""
    check_keep_checkpoints('keep_checkpoints', keep)
    if not keep:
        return []
    removed = list_checkpoints(work_dir)[:-keep]
    for path in removed:
        shutil.rmtree(path)
    return removed


def save_checkpoint(accelerator, work_dir, state: dict, main_states: dict | None = None,
                    process_states: dict | None = None, keep: int | None = None,
                    export=None) -> Path:
    """Write ``checkpoint-{state['global_step']}``; every process must call it.

    ``state``: JSON-able training state (global_step, epoch, batches_in_epoch, records, ...).
    ``main_states``: ``{name: object}`` written by the main process as ``{name}.pt``;
    ``process_states``: ``{name: object}`` written by each process as ``{name}_{rank}.pt``;
    ``export(folder)``: the main process's extra files (diffusers' ``unet/``), checksummed
    with the rest."""
    work_dir = Path(work_dir)
    final = work_dir / f'checkpoint-{int(state["global_step"])}'
    tmp = work_dir / f'.{final.name}.tmp'
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    rank = accelerator.process_index
    for name, obj in (process_states or {}).items():
        save_atomic(obj, tmp / f'{name}_{rank}.pt')
    if accelerator.is_main_process:
        for name, obj in (main_states or {}).items():
            save_atomic(obj, tmp / f'{name}.pt')
        if export is not None:
            export(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        record = dict(state, num_processes=accelerator.num_processes, sha256=file_digests(tmp))
        state_tmp = tmp / f'.{STATE_FILE}.tmp'
        state_tmp.write_text(json.dumps(record))
        os.replace(state_tmp, tmp / STATE_FILE)
        if final.exists():  # the same step saved again (a resumed run that failed after it)
            shutil.rmtree(final)
        os.replace(tmp, final)
        prune_checkpoints(work_dir, keep)
    accelerator.wait_for_everyone()
    return final


def check_resume_position(path, state: dict, num_processes: int, steps_per_epoch: int) -> None:
    """A checkpoint's position in its epoch (batches done) means the same batches in this run
    only with the same number of processes and batches per epoch; each change is refused,
    naming its cause: the process count first (it changes the batches per epoch too), then
    another batch size or data set."""
    saved_world = state.get('num_processes', num_processes)
    if saved_world != num_processes:
        raise ValueError(
            f'{path} was written by a run of {saved_world} process(es) and this run has '
            f'{num_processes}: the process count changed from {saved_world} to '
            f'{num_processes}, which changes the batches of every epoch and their order, so '
            f'the saved position in the epoch would map onto other batches. Resume with '
            f'{saved_world} process(es), or start a fresh run')
    saved_steps = state.get('steps_per_epoch', steps_per_epoch)
    if saved_steps != steps_per_epoch:
        raise ValueError(
            f'{path} was written with {saved_steps} batches per epoch and this run has '
            f'{steps_per_epoch} (another batch size or data set): resuming would map its '
            f'position in the epoch onto other batches, re-training or skipping part of an '
            f'epoch. Resume with the settings of that run, or start a fresh run')


def load_checkpoint_dir(accelerator, path, state: dict, main_names=(), process_names=()):
    """Restore a verified checkpoint into the prepared objects; return ``(main_states,
    process_states)``, the task's extra objects by name (this process's for the latter)."""
    path = Path(path)
    if state.get('num_processes', accelerator.num_processes) != accelerator.num_processes:
        raise ValueError(f'{path} was written by {state["num_processes"]} processes; resuming '
                         f'with {accelerator.num_processes} would change the data order')
    check_random_states(path / f'random_states_{accelerator.process_index}.pkl')
    accelerator.load_state(str(path))
    main = {}
    for name in main_names:
        if not (path / f'{name}.pt').is_file():
            raise FileNotFoundError(f'{path} has no {name}.pt, which this run needs')
        main[name] = load_checkpoint(path / f'{name}.pt')
    rank = accelerator.process_index
    per_process = {name: load_checkpoint(path / f'{name}_{rank}.pt') for name in process_names}
    return main, per_process


def check_random_states(path: Path) -> None:
    """Read this process's RNG file as ``accelerator.load_state`` will, first: Accelerate logs
    an unreadable one at INFO level and goes on with the RNG as it was, so the resumed run
    would silently differ from an uninterrupted one; here a file that names code (a pickle that
    would run it) or cannot be read stops the resume, naming the file."""
    if not path.is_file():
        return
    from accelerate.utils import load
    try:
        load(path, map_location='cpu')
    except Exception as err:  # noqa: BLE001 - classified below
        foreign = foreign_global(err)
        if foreign is not None:
            raise RuntimeError(f'{path} was refused: loading it would call {foreign}, which is '
                               f'not an RNG state') from None
        raise CorruptCheckpointError(f'{path} is not a readable RNG state (truncated or '
                                     f'corrupted?): {type(err).__name__}: {err}') from err


def remove_orphan_temporaries(work_dir, warn=None) -> list[Path]:
    """Delete what a run killed mid-write left: ``.*.tmp`` files and folders in ``work_dir``
    (a half-written checkpoint folder, metrics file or artefact; every engine writes through
    such a temporary, ``distill.checkpoint.write_atomic``), and say so with ``warn`` (the
    trainer's logger by default). Main process, at the start; the one rule of every engine."""
    removed = []
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return removed
    for path in sorted(work_dir.glob('.*.tmp')):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    if removed:
        (warn or logger.warning)(f'removed {len(removed)} half-written temporary file(s) of an '
                                 f'interrupted run: {", ".join(p.name for p in removed)}')
    return removed


def earlier_run_entries(work_dir, run_entries) -> list[Path]:
    """Entries of ``work_dir`` an earlier run wrote: ``checkpoint-N`` folders and the names (or
    glob patterns) of ``run_entries``."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    found = set(list_checkpoints(work_dir))
    for pattern in run_entries:
        found.update(path for path in work_dir.glob(pattern) if not _empty_records(path))
    return sorted(found)


def _empty_records(path: Path) -> bool:
    """A metrics file with no record (``[]``: what a run that failed before its first step
    leaves) is no earlier run; it is rewritten by the next one."""
    if path.name != 'metrics.json' or not path.is_file() or path.stat().st_size > 16:
        return False
    return path.read_text().strip() in ('', '[]')


def check_fresh_work_dir(work_dir, run_entries, overwrite: bool = False, logs=(),
                         hint: str = 'Pass --resume to continue it, --overwrite to delete it '
                                     'and start again, or another work dir',
                         inputs: dict | None = None) -> None:
    """A fresh run refuses a work dir holding an earlier run (``FileExistsError``, nothing
    changed); with ``overwrite`` that run's entries, its ``logs`` (names or patterns: a log
    file, a tracker folder, which alone, as a run that failed before its first step leaves
    them, do not make an earlier run) and any ``.*.tmp`` are deleted, nothing else, and never
    one of the run's ``inputs`` (``{role: path}``: the config being run, a teacher; refused,
    nothing deleted, ``targets.check_deletions``). Call the deleting form on one process."""
    found = earlier_run_entries(work_dir, run_entries)
    if found and not overwrite:
        shown = ', '.join(p.name for p in found[:6]) + (', ...' if len(found) > 6 else '')
        raise FileExistsError(f'work dir {work_dir} already holds an earlier run ({shown}); '
                              f'nothing was changed. {hint}')
    if not overwrite:
        return
    work_dir = Path(work_dir)
    root = work_dir.resolve()  # never a folder outside the work dir, nor the work dir itself
    extra = [p for pattern in logs for p in work_dir.glob(pattern)
             if p.resolve().is_relative_to(root) and p.resolve() != root]
    doomed = found + extra + sorted(work_dir.glob('.*.tmp'))
    check_deletions(doomed, inputs or {}, '--overwrite')
    deleted = []
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
            deleted.append(path.name + '/')
        elif path.exists():
            path.unlink()
            deleted.append(path.name)
    if found:
        logger.warning('--overwrite: deleted the earlier run in %s: %s', work_dir,
                       ', '.join(deleted))
