"""A fresh Runner run does not write over an earlier run's work dir.

The mmengine Runner writes, in ``work_dir``: the config (``<config name>.py``, written when the
Runner is built), ``iter_N.pth`` / ``epoch_N.pth`` / ``best_*.pth`` checkpoints,
``last_checkpoint`` (with ``distill.ResumeHook``, a ``.sha256`` beside each checkpoint) and a
``YYYYMMDD_HHMMSS/`` folder of logs per run. A second fresh run into
the same folder would overwrite the first one's config, checkpoints and ``last_checkpoint``
(which ``--resume`` then follows into the new run). So, as the classification engine's
``--overwrite``:

* a fresh run (no ``--resume``) into a work dir holding a config dump, a checkpoint or
  ``last_checkpoint`` raises ``FileExistsError`` before anything is written;
* ``--overwrite`` deletes exactly those files and the run's log folders (nothing else) first.

Log folders alone (a run that failed while the Runner was built) are not an earlier run: a new
run writes its own timestamped folder beside them.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

logger = logging.getLogger('distill.engines.mmengine')

LOG_FOLDER = re.compile(r'^\d{8}_\d{6}$')  # mmengine's run timestamp


def earlier_run_files(work_dir) -> list[Path]:
    """The files of ``work_dir`` that show an earlier run: config dump, checkpoints,
    ``last_checkpoint``."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    return sorted(p for p in work_dir.iterdir() if p.is_file() and (
        p.suffix in ('.py', '.pth', '.sha256') or p.name == 'last_checkpoint'))


def check_fresh_work_dir(work_dir, overwrite: bool = False, delete: bool = True) -> None:
    """Raise ``FileExistsError`` (nothing changed) if ``work_dir`` holds an earlier run, unless
    ``overwrite``: then (if ``delete``, i.e. on one process only) its files and log folders
    are deleted."""
    found = earlier_run_files(work_dir)
    if not found:
        return
    if not overwrite:
        shown = ', '.join(p.name for p in found[:6]) + (', ...' if len(found) > 6 else '')
        raise FileExistsError(
            f'work dir {work_dir} already holds an earlier run ({shown}); nothing was changed. '
            f'Pass --resume to continue it, --overwrite to delete its files and start again, '
            f'or another --work-dir')
    if not delete:
        return
    for path in found:
        path.unlink()
    for path in Path(work_dir).iterdir():
        if path.is_dir() and LOG_FOLDER.match(path.name):
            shutil.rmtree(path)
    logger.warning('--overwrite: deleted the earlier run in %s', work_dir)
