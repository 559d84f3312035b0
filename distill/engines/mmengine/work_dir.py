"""A fresh Runner run does not write over an earlier run's work dir.

The mmengine Runner writes, in ``work_dir``: the config (``<config name>.py``, written when the
Runner is built, and again as ``<timestamp>/vis_data/config.py``), ``iter_N.pth`` /
``epoch_N.pth`` / ``best_<metric>_iter_N.pth`` checkpoints, ``last_checkpoint`` (with
``distill.ResumeHook``, a ``.sha256`` beside each checkpoint) and a ``YYYYMMDD_HHMMSS/`` folder
of logs per run. A second fresh run into the same folder would overwrite the first one's
config, checkpoints and ``last_checkpoint`` (which ``--resume`` then follows into the new
run). So, with the rule of every engine (``distill.engines.core.checkpoints.check_fresh_work_dir``):

* a fresh run (no ``--resume``) into a work dir holding such a file raises
  ``FileExistsError`` before anything is written;
* ``--overwrite`` deletes exactly those files and the run's log folders, and lists them. A
  ``.py`` file counts as the Runner's only when it has the name of this run's config (which
  the Runner would overwrite) or the content of an earlier run's ``vis_data/config.py``; any
  other file of the user's (``plot_results.py``, ``my_best_model.pth``) stays.

Log folders and a config dump alone (a run that failed before its first checkpoint, e.g. while
the Runner was built) are not an earlier run: the fixed rerun starts without ``--overwrite``,
writing its own timestamped folder beside them.

``claim_work_dir``, once every check has passed and before the first write, applies the rules
of every engine (``distill.engines.core``): the config dump (``<work dir>/<config name>``) never
replaces the config being run (a config edited inside its own work dir, which ``--overwrite``
would also delete), ``--overwrite`` deletes no input of the run (the config, ``teacher_ckpt``,
``load_from``), and the run holds the work dir's lock (``work_dir_lock``) to its end, so a
second run into it is refused naming the first one's pid.
"""
from __future__ import annotations

import os.path as osp
from pathlib import Path

from distill.engines.core.checkpoints import check_fresh_work_dir as check_fresh_entries
from distill.engines.core.checkpoints import earlier_run_entries
from distill.engines.core.config_diff import record_pattern
from distill.engines.core.targets import check_deletions, check_output
from distill.engines.core.work_dir_lock import hold_work_dir

#: what the Runner (and ResumeHook) write in the work dir, besides the config dump
CHECKPOINT_ENTRIES = tuple(f'{stem}{suffix}' for stem in (
    'iter_[0-9]*.pth', 'epoch_[0-9]*.pth', 'best_*_iter_[0-9]*.pth', 'best_*_epoch_[0-9]*.pth')
    for suffix in ('', '.sha256')) + ('last_checkpoint',)
#: mmengine's run timestamp folders (logs, vis_data)
LOG_FOLDERS = ('[0-9]' * 8 + '_' + '[0-9]' * 6,)


def config_dumps(work_dir, config_name: str | None = None) -> list[str]:
    """The ``.py`` files of ``work_dir`` the Runner wrote: this run's config name and its
    records of resumed stretches (``<name>.resumed-at-N.py``, ``ResumeHook``), and any whose
    content is an earlier run's ``<timestamp>/vis_data/config.py``."""
    work_dir = Path(work_dir)
    names = set()
    if config_name and (work_dir / osp.basename(config_name)).is_file():
        names.add(osp.basename(config_name))
    if config_name:
        names.update(p.name for p in work_dir.glob(record_pattern(osp.basename(config_name))))
    dumped = {p.read_bytes() for pattern in LOG_FOLDERS
              for p in work_dir.glob(f'{pattern}/vis_data/config.py')}
    names.update(p.name for p in work_dir.glob('*.py') if p.read_bytes() in dumped)
    return sorted(names)


def earlier_run_files(work_dir, config_name: str | None = None) -> list[Path]:
    """The files of ``work_dir`` that show an earlier run: config dump, checkpoints (and
    their ``.sha256``), ``last_checkpoint``."""
    if not Path(work_dir).is_dir():
        return []
    entries = CHECKPOINT_ENTRIES + tuple(config_dumps(work_dir, config_name))
    return [p for p in earlier_run_entries(work_dir, entries) if p.is_file()]


def check_fresh_work_dir(work_dir, overwrite: bool = False, delete: bool = True,
                         config_name: str | None = None) -> None:
    """Raise ``FileExistsError`` (nothing changed) if ``work_dir`` holds an earlier run, unless
    ``overwrite``: then (if ``delete``, i.e. on one process only) its files and log folders
    are deleted and listed. ``config_name``: this run's config file (its dump's name)."""
    if not overwrite and not earlier_run_entries(work_dir, CHECKPOINT_ENTRIES):
        return  # a run that failed before its first checkpoint: nothing of it to lose
    entries = CHECKPOINT_ENTRIES + tuple(config_dumps(work_dir, config_name)) \
        if Path(work_dir).is_dir() else CHECKPOINT_ENTRIES
    if overwrite and not delete:
        return
    check_fresh_entries(work_dir, entries, overwrite=overwrite, logs=LOG_FOLDERS,
                        hint='Pass --resume to continue it, --overwrite to delete its files and '
                             'start again, or another --work-dir')


def run_inputs(cfg, config_name: str, resume: bool) -> dict:
    """What a Runner run reads and must not write over or delete: the config being run, the
    teacher checkpoint and the weights it starts from (``load_from``, when not resuming)."""
    model = cfg.get('model')
    return {'the config being run': config_name,
            'the teacher checkpoint (model.teacher_ckpt)':
                model.get('teacher_ckpt') if isinstance(model, dict) else None,
            'the checkpoint of load_from': None if resume else cfg.get('load_from')}


def check_config_dump(work_dir, config_name: str, overwrite: bool = False) -> None:
    """The Runner dumps the config it runs (``--cfg-options`` and the entry point's changes
    merged) into the work dir under the config's name, also for a test: refused when that is
    the config being run (edited inside its own work dir), which it would replace (and
    ``--overwrite`` delete first)."""
    what = ("the work dir's config dump, which --overwrite deletes and the Runner rewrites,"
            if overwrite else "the work dir's config dump, which the Runner rewrites,")
    check_output(Path(work_dir) / osp.basename(config_name),
                 {'the config being run': config_name}, what,
                 hint='run a copy of the config kept outside the work dir')


def claim_work_dir(cfg, config_name: str, resume: bool = False, overwrite: bool = False,
                   main: bool = True):
    """Before the first write of a run into ``cfg.work_dir`` (see the module): refuse a config
    dump over the config being run and an ``--overwrite`` that would delete an input, then take
    the work dir's lock on the main process (released at exit). Returns the lock (None on the
    other processes)."""
    work_dir = cfg.work_dir
    inputs = run_inputs(cfg, config_name, resume)
    check_config_dump(work_dir, config_name, overwrite)
    if overwrite and Path(work_dir).is_dir():
        entries = CHECKPOINT_ENTRIES + tuple(config_dumps(work_dir, config_name))
        doomed = earlier_run_entries(work_dir, entries)
        doomed += [p for pattern in LOG_FOLDERS for p in Path(work_dir).glob(pattern)]
        check_deletions(doomed, inputs, '--overwrite')
    return hold_work_dir(work_dir, main)
