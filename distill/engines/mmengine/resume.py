"""``distill.ResumeHook``: on the mmengine Runner, checkpoints carry a checksum, ``--resume``
resumes from the newest checkpoint that verifies, and the config's optimiser settings win over
the ones restored from the checkpoint.

* ``before_run`` (before the Runner loads anything): every local ``CheckpointHook`` writes
  through the ``distill_checksum`` file backend (atomic write + ``<name>.sha256``,
  ``checkpoint_files.py``); on rank 0 the ``.<name>.*.tmp`` files of a killed write are deleted.
  With ``resume=True`` and no file given (``--resume`` alone), the hook picks the checkpoint:
  the newest that matches its checksum, skipping (with a warning naming it) a truncated or
  changed one, where mmengine would follow ``last_checkpoint`` into the damaged file. A file
  given explicitly (``--resume FILE``) is verified and refused if it does not match.
* ``after_load_checkpoint`` (when resuming; mmengine calls it with the checkpoint dict before
  it loads the optimiser and scheduler states from that same dict): an ``lr``,
  ``weight_decay`` or ``momentum`` the config sets differently from the checkpoint (e.g.
  ``--cfg-options optim_wrapper.optimizer.lr=0.01``) is written into the checkpoint's
  optimiser state and its schedulers' base values, scaled so the schedule continues from the
  new base value; each change is logged, naming the key. mmengine would otherwise restore the
  old value and drop the override without a word. A change that cannot be applied (a
  scheduled value whose checkpoint base is 0) is refused, naming the key.
* ``after_load_checkpoint`` also compares the config the checkpoint was trained with (the
  Runner's dump of it in the checkpoint's ``meta``) with this run's (``core/config_diff.py``,
  the rule of every engine): every changed key is logged as a warning, ``old -> new``; a change
  of the networks' architecture or of the number of classes is refused, naming the key, before
  any weight is loaded; a run whose config differs records it as
  ``<config name>.resumed-at-N.py`` (N the iteration, or the epoch of an epoch-based loop)
  beside the first run's dump, which the entry points keep as it was (the Runner rewrites it
  when it is built). A changed number of processes is named too (checkpoints record it): the
  batch of an iteration and the data order change with it.
* Checkpoints also hold torch's RNG state (``distill_rng``, written in
  ``before_save_checkpoint``, restored in ``before_train``, after mmengine's resume has
  reseeded): with the Runner's replay of the skipped iterations' data, a resumed run ends with
  the weights of the uninterrupted one (rank 0's state is restored on every process, exact
  when the processes share a seed, mmengine's default ``diff_rank_seed=False``). A
  validation inside training (``before_val``/``after_val``) leaves torch's, numpy's and
  Python's random streams as it found them, so a checkpoint written at a validation iteration
  resumes exactly too.

``tasks/{segmentation,detection}/train.py`` add it to ``custom_hooks``; a plain
``tools/train.py`` run gets it with ``custom_hooks = [dict(type='distill.ResumeHook')]``. It
reads the Runner's ``_resume`` / ``_load_from`` (mmengine 0.10 has no public accessor); the
hook does nothing if they are missing.
"""
from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import numpy as np
from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

from distill.engines.core.checkpoints import remove_orphan_temporaries
from distill.engines.core.config_diff import ResumeRules, RunConfig
from distill.engines.mmengine.checkpoint_files import (BACKEND_NAME, CorruptCheckpointError,
                                                       check_loads, newest_valid_checkpoint,
                                                       verify_checkpoint)
from distill.registry import HOOKS

#: the checkpoint entry holding torch's RNG state (a key mmengine's Runner.resume ignores)
RNG_KEY = 'distill_rng'
#: the checkpoint entry holding the number of processes that wrote it
WORLD_KEY = 'distill_world_size'
#: optimiser hyperparameters the config's value wins for on resume (numbers, maybe scheduled)
HYPERPARAMETERS = ('lr', 'weight_decay', 'momentum')


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def _is_local(path) -> bool:
    return path is None or '://' not in str(path)


def use_checksum_backend(runner) -> None:
    """Local ``CheckpointHook``s with no backend of their own write through ours."""
    for hook in runner.hooks:
        if (isinstance(hook, CheckpointHook) and hook.backend_args is None
                and getattr(hook, 'file_client_args', None) is None and _is_local(hook.out_dir)):
            hook.backend_args = dict(backend=BACKEND_NAME)


def resume_checkpoint(work_dir, given=None, folders=()) -> str | None:
    """The file to resume from: ``given`` after checking it, or the newest valid checkpoint of
    ``work_dir`` (or of the checkpoint ``folders`` of its hooks; None when there is none)."""
    if given is None:
        path = newest_valid_checkpoint(work_dir, warn=_warn, folders=folders)
        return None if path is None else str(path)
    if _is_local(given) and not verify_checkpoint(given):  # raises if it does not match
        check_loads(given)
        _warn(f'{given} has no checksum: resuming from it unverified')
    return given


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def apply_config_over_saved(optimizer, saved_groups: list, scheduler_states: list,
                            key_prefix: str) -> list[str]:
    """Write the config's hyperparameters (the freshly built ``optimizer``'s) into a saved
    optimiser state (``saved_groups``) and its schedulers' states, in place; returns the
    changes. See the module docstring."""
    if len(optimizer.param_groups) != len(saved_groups):
        return []  # mmengine's load_state_dict names this mismatch itself
    changes = {}
    for index, (fresh, saved) in enumerate(zip(optimizer.param_groups, saved_groups)):
        for key in HYPERPARAMETERS:
            if not isinstance(fresh.get(key), (int, float)) or key not in saved:
                continue
            initial = f'initial_{key}'
            new, old = fresh.get(initial, fresh[key]), saved.get(initial, saved[key])
            if _same(new, old):
                continue
            scheduled = [s for s in scheduler_states if s.get('param_name') == key]
            name = f'{key_prefix}.{key}'
            if old == 0 and (scheduled or initial in saved):
                raise ValueError(f'--resume: {name}={new} cannot be applied: the checkpoint '
                                 f'schedules {key} from 0 (param group {index}); start a '
                                 f'fresh run to change it')
            current = saved[key]
            ratio = new / old if old else None
            saved[key] = current * ratio if ratio is not None else new
            if initial in saved:
                saved[initial] = new
            for state in scheduled:
                for field in ('base_values', '_last_value'):
                    if field in state and index < len(state[field]):
                        state[field][index] *= ratio
            changes.setdefault(name, []).append((index, old, new, current, saved[key]))
    return [f'--resume: {name} from the config replaces the checkpoint\'s value '
            + ', '.join(f'(group {i}: {old:g} -> {new:g}, now {cur:g} -> {now:g})'
                        for i, old, new, cur, now in groups)
            for name, groups in changes.items()]


def apply_config_optimizer_settings(runner, checkpoint: dict) -> list[str]:
    """``apply_config_over_saved`` for the Runner's optimiser(s) and the checkpoint's states."""
    wrapper = runner.optim_wrapper
    saved = checkpoint.get('optimizer')
    if saved is None or isinstance(wrapper, dict):  # not built: nothing will be restored
        return []
    schedulers = checkpoint.get('param_schedulers') or []
    if hasattr(wrapper, 'optim_wrappers'):  # OptimWrapperDict: one optimiser per name
        jobs = [(f'optim_wrapper.{name}.optimizer', w.optimizer, saved.get(name, {}),
                 schedulers.get(name, []) if isinstance(schedulers, dict) else [])
                for name, w in wrapper.optim_wrappers.items()]
    else:
        jobs = [('optim_wrapper.optimizer', wrapper.optimizer, saved,
                 schedulers if isinstance(schedulers, list) else [])]
    changes = []
    for prefix, optimizer, state, scheduler_states in jobs:
        changes += apply_config_over_saved(optimizer, state.get('param_groups', []),
                                           scheduler_states, prefix)
    return changes


@HOOKS.register_module()
class ResumeHook(Hook):
    """Checksummed checkpoints, a verified ``--resume`` and the config's optimiser settings
    over the restored ones; see the module docstring."""

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        use_checksum_backend(runner)
        folders = {Path(runner.work_dir)}
        folders |= {Path(h.out_dir) for h in runner.hooks
                    if isinstance(h, CheckpointHook) and h.out_dir and _is_local(h.out_dir)}
        if is_main_process():
            for folder in folders:  # the core's rule (every engine's)
                remove_orphan_temporaries(folder, warn=_warn)
        if not getattr(runner, '_resume', False) or not hasattr(runner, '_load_from'):
            return
        # a CheckpointHook's out_dir holds the run's checkpoints under the work dir's name
        name = Path(runner.work_dir).name
        own = [folder / name for folder in folders] + list(folders)
        chosen = resume_checkpoint(runner.work_dir, runner._load_from, own)
        if chosen is not None and runner._load_from is None:
            print_log(f'resuming from {chosen} (the newest checkpoint that verifies)',
                      logger='current')
        elif chosen is None and is_main_process() and config_dump_name(runner):
            # nothing to resume: a fresh start, whose config is the work dir's dump (the entry
            # points put the earlier one back after the Runner wrote it)
            runner.cfg.dump(str(Path(runner.work_dir) / config_dump_name(runner)))
        runner._load_from = chosen

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):
            return  # load_from: weights only, the optimiser state is not restored
        check_resume_config(runner, checkpoint)  # before any weight is loaded
        for change in apply_config_optimizer_settings(runner, checkpoint):
            _warn(change)
        self._torch_rng = checkpoint.get(RNG_KEY)

    # torch's RNG (dropout, SoKD's sampling) at the checkpoint, so that a resumed run draws what
    # the uninterrupted one drew. numpy's (the pipelines' augmentation) needs nothing: the
    # Runner reseeds it and replays the data of the iterations done when it skips them.
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = torch_rng_state()
        checkpoint[WORLD_KEY] = get_world_size()

    # A validation inside training leaves the random streams as it found them. It would
    # otherwise advance them (every DataLoader iterator draws its base seed from torch's RNG)
    # after CheckpointHook saved them with the iteration's checkpoint, and a run resumed from
    # a checkpoint written at a validation iteration (as every shipped config's intervals
    # make them) would draw other dropout masks than the uninterrupted one.
    def before_val(self, runner) -> None:
        self._streams_before_val = (random.getstate(), np.random.get_state(),
                                    torch_rng_state())

    def after_val(self, runner) -> None:
        saved, self._streams_before_val = getattr(self, '_streams_before_val', None), None
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            set_torch_rng_state(saved[2])

    def before_train(self, runner) -> None:
        # after Runner.resume, which may reseed everything with the checkpoint's seed
        state, self._torch_rng = getattr(self, '_torch_rng', None), None
        if state is not None:
            set_torch_rng_state(state)


def config_dump_name(runner) -> str | None:
    """The name of the Runner's config dump in its work dir (``Runner.dump_config``)."""
    filename = getattr(runner.cfg, 'filename', None)
    return Path(filename).name if filename else None


def resume_rules(cfg) -> ResumeRules:
    """What a Runner resume may change: not the networks (a DistillationModel's student and
    teacher; a plain model's every key but its losses, initialisation and train/test
    settings), nor the number of classes; the keys that say where and how this run was
    started are ignored."""
    model = cfg.get('model') or {}
    distillation = isinstance(model, dict) and str(model.get('type', '')).endswith(
        'DistillationModel')
    return ResumeRules(networks=('model.student', 'model.teacher') if distillation else ('model',),
                       ignored=('resume', 'load_from', 'launcher', 'work_dir'),
                       fresh_hint='start a fresh run (--overwrite, or another --work-dir)')


def resume_point(runner, checkpoint: dict) -> tuple[int, str]:
    """``(N, 'iteration' or 'epoch')`` of a checkpoint: an epoch-based loop counts epochs."""
    from mmengine.runner import EpochBasedTrainLoop
    meta = checkpoint.get('meta') or {}
    loop = getattr(runner, '_train_loop', None)
    train_cfg = runner.cfg.get('train_cfg') or {}
    by_epoch = isinstance(loop, EpochBasedTrainLoop) or (
        isinstance(loop, dict) and str(train_cfg.get('type', '')).startswith('EpochBased')) \
        or bool(train_cfg.get('by_epoch'))
    return (int(meta.get('epoch', 0)), 'epoch') if by_epoch else \
        (int(meta.get('iter', 0)), 'iteration')


def check_resume_config(runner, checkpoint: dict) -> None:
    """The config and process count of a resumed run against the checkpoint's (see the
    module): changes logged, an architecture change refused (every process), the run's config
    recorded as ``<name>.resumed-at-N.py`` when it differs (rank 0)."""
    name = config_dump_name(runner)
    at, what = resume_point(runner, checkpoint)
    warn = _warn if is_main_process() else None
    saved_world, world = checkpoint.get(WORLD_KEY), get_world_size()
    if saved_world is not None and saved_world != world and warn is not None:
        batch = (runner.cfg.get('train_dataloader') or {}).get('batch_size', '?')
        warn(f'resume from {what} {at}: the process count changed from {saved_world} to '
             f'{world}: an iteration now takes {world} x {batch} samples (was {saved_world} x '
             f'{batch}), and the data order is not the uninterrupted run\'s')
    if name is None:
        return
    run_config = RunConfig(runner.cfg, Path(runner.work_dir), resume_rules(runner.cfg), name)
    saved = (checkpoint.get('meta') or {}).get('cfg')
    run_config.check_resume(at, what, warn, saved_text=saved if isinstance(saved, str) else None,
                            saved_name='the one saved in the checkpoint')
    run_config.write(is_main_process(), warn)


def torch_rng_state() -> dict:
    import torch
    state = dict(cpu=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_torch_rng_state(state: dict) -> None:
    import torch
    torch.set_rng_state(state['cpu'])
    if 'cuda' in state and torch.cuda.is_available():
        cuda = state['cuda']
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            _warn(f'the checkpoint holds the CUDA RNG state of {len(cuda)} devices, this run '
                  f'has {torch.cuda.device_count()}: not restored')


# raising CorruptCheckpointError from before_run stops the run before anything is loaded
__all__ = ['ResumeHook', 'CorruptCheckpointError', 'apply_config_over_saved']
