"""Checkpoints: written atomically, read with ``weights_only=True`` unless the caller opts in.

A checkpoint is written to a temporary file beside its target and renamed over it, so a crash
mid-write never leaves a truncated file where a good one was.
"""
from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path

import torch
from torch import nn


def current_umask() -> int:
    """The process's umask (reading it means setting it: restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(data, path) -> Path:
    """``data`` (bytes, or a function that writes into a binary file) to ``path`` through a
    fsynced temporary file and a rename, so a reader never sees half a file. The file gets the
    mode a plain ``open(path, 'wb')`` would give (0666 less the umask), not ``mkstemp``'s 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, 'wb') as f:
            data(f) if callable(data) else f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_atomic(obj, path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (``write_atomic``)."""
    return write_atomic(lambda f: torch.save(obj, f), path)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that cannot be read back as written: truncated, flipped bytes (its
    checksum does not match), or not a checkpoint at all. The message names the file."""


def load_checkpoint(path, map_location='cpu', allow_pickle: bool = False):
    """Load a checkpoint. Only tensors and plain containers unless ``allow_pickle`` (which runs
    code from the file: only for files you trust)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f'checkpoint {path} is a directory, not a checkpoint file')
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=not allow_pickle)
    except pickle.UnpicklingError as err:
        foreign = None if allow_pickle else foreign_global(err)
        if foreign is None:
            raise CorruptCheckpointError(f'{path} is not a readable checkpoint (truncated or '
                                         f'corrupted?): {err}') from err
        # a well-formed file that names code outside the allow-list: refused, and torch's
        # advice to load it with weights_only=False is not passed on
        raise RuntimeError(f'{path} was refused: loading it would call {foreign}, which is not '
                           f'a tensor or a plain container (only those are loaded). If you '
                           f'made this file and trust it, load it with allow_pickle=True') \
            from None
    except Exception as err:  # truncated zip, bad record, ... : damage, not a foreign class
        raise CorruptCheckpointError(f'{path} is not a readable checkpoint (truncated or '
                                     f'corrupted?): {type(err).__name__}: {err}') from err


def foreign_global(err: Exception) -> str | None:
    """The name of the code a weights-only load refused (``posix.system``), or None when the
    error is damage rather than a foreign global. torch words it 'Unsupported global: GLOBAL
    x.y' (2.6) or 'unsupported GLOBAL x.y whose module x is blocked' (2.13)."""
    match = re.search(r'unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)', str(err), re.IGNORECASE)
    return match.group(1) if match else None


def _find_state_dict(checkpoint, prefix: str | None):
    state = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def state_dict_differences(model_state: dict, state: dict) -> dict:
    """What keeps ``state`` (a checkpoint's) from loading into a model whose state dict is
    ``model_state``: ``missing`` (the model's keys the file lacks), ``unexpected`` (the file's
    keys the model lacks), ``shapes`` (``(key, shape in the file, shape in the model)``)."""
    shapes = [(key, tuple(state[key].shape), tuple(value.shape))
              for key, value in model_state.items()
              if key in state and hasattr(value, 'shape') and hasattr(state[key], 'shape')
              and tuple(state[key].shape) != tuple(value.shape)]
    return dict(missing=[k for k in model_state if k not in state],
                unexpected=[k for k in state if k not in model_state], shapes=shapes)


def describe_differences(path, differences: dict, what: str = 'the model',
                         shown: int = 3) -> str | None:
    """One line naming ``path``, the counts and the first keys of each kind; None when there
    is no difference."""
    missing, unexpected = differences['missing'], differences['unexpected']
    shapes = differences['shapes']
    if not (missing or unexpected or shapes):
        return None

    def first(keys):
        return ', '.join(keys[:shown]) + (', ...' if len(keys) > shown else '')
    parts = [f'missing: {first(missing)}'] * bool(missing)
    parts += [f'unexpected: {first(unexpected)}'] * bool(unexpected)
    shown_shapes = [f'{key} {list(a)} in the file, {list(b)} in the model'
                    for key, a, b in shapes]
    parts += [f'shape: {first(shown_shapes)}'] * bool(shapes)
    return (f'{path} does not match {what}: {len(missing)} missing, {len(unexpected)} '
            f'unexpected, {len(shapes)} of another shape ({"; ".join(parts)})')


def check_state_dict(path, model_state: dict, state: dict, what: str = 'the model',
                     strict: bool = True) -> None:
    """``ValueError`` naming ``path`` unless ``state`` loads into ``model_state`` key for key
    and shape for shape (``strict=False``: only the shapes must agree), before anything is
    loaded, written or reported from it."""
    differences = state_dict_differences(model_state, state)
    if not strict:
        differences.update(missing=[], unexpected=[])
    message = describe_differences(path, differences, what)
    if message:
        raise ValueError(message)


#: where the networks' weights are in a distillation checkpoint: the distiller's own state dict
#: (``student.*``, ``teacher.*``), an mmengine ``DistillationModel``'s (``distiller.student.*``,
#: ``distiller.base.student.*`` under a plug-in such as SoKD)
DISTILLATION_PREFIXES = dict(
    student=('student.', 'distiller.student.', 'distiller.base.student.'),
    teacher=('teacher.', 'distiller.teacher.', 'distiller.base.teacher.'))


def network_prefixes(state: dict) -> dict:
    """``{'student': prefix, 'teacher': prefix}`` of a distillation checkpoint's state dict
    (both networks present); empty for one network's state dict."""
    keys = [str(key) for key in state]
    found = {}
    for network, prefixes in DISTILLATION_PREFIXES.items():
        for prefix in sorted(prefixes, key=len, reverse=True):
            if any(key.startswith(prefix) for key in keys):
                found[network] = prefix
                break
    return found if len(found) == 2 else {}


def fitting_network(state: dict, model_state: dict) -> tuple[str, str] | None:
    """``(network, prefix)`` of the network of a distillation checkpoint whose weights load
    into ``model_state`` key for key and shape for shape (the teacher first); None."""
    for network, prefix in sorted(network_prefixes(state).items(), key=lambda item:
                                  item[0] != 'teacher'):
        part = {key[len(prefix):]: value for key, value in state.items()
                if str(key).startswith(prefix)}
        differences = state_dict_differences(model_state, part)
        if not any(differences.values()):
            return network, prefix
    return None


def _distillation_run_files(folder: Path) -> str:
    """What to pass instead of a distillation checkpoint: the networks its run wrote alone
    (a classification work dir's ``teacher.pth`` / ``student.pth``)."""
    written = [folder / name for name in ('teacher.pth', 'student.pth')
               if (folder / name).is_file()]
    if written:
        return 'pass ' + ' or '.join(str(p) for p in written) + ' (each network alone, as ' \
               'that run wrote it) instead'
    return (f'pass a network\'s own state dict instead (a classification run writes '
            f'{folder / "teacher.pth"} and student.pth when it ends)')


def describe_distillation_checkpoint(path, state: dict, model_state: dict) -> str | None:
    """The one-line error for a distillation checkpoint (student and teacher) given where one
    network's weights are wanted (a ``teacher_ckpt``): which of its networks fits, under which
    keys, and the file to pass instead; None when ``state`` is no distillation checkpoint."""
    prefixes = network_prefixes(state)
    if not prefixes:
        return None
    fits = fitting_network(state, model_state)
    where = (f"the weights that fit this network are its {fits[0]}'s, under {fits[1]}*"
             if fits else f"neither its teacher ({prefixes['teacher']}*) nor its student "
                          f"({prefixes['student']}*) fits this network")
    return (f'{path} is a checkpoint of a distillation run (student and teacher), not one '
            f'network\'s state dict: {where}; {_distillation_run_files(Path(path).parent)}')


def load_model_weights(model: nn.Module, path, prefix: str | None = None,
                       allow_pickle: bool = False, strict: bool = True) -> None:
    """Load weights into ``model`` from a plain state dict or a checkpoint holding one (under
    ``state_dict`` or ``model``); ``prefix`` selects a submodule's entries (``'student.'``).
    Keys and shapes are checked first (``check_state_dict``). A distillation run's checkpoint
    (a ``checkpoint-N`` folder, or a file with both networks) where one network is wanted is
    named with where that network's weights are in it and the file to pass instead."""
    folder = Path(path)
    if folder.is_dir() and ((folder / 'model.safetensors').is_file()
                            or (folder / 'training_state.json').is_file()):
        raise IsADirectoryError(
            f'{path} is a checkpoint folder of a distillation run (both networks, under '
            f'student.* and teacher.* in its model.safetensors), not one network\'s state '
            f'dict: {_distillation_run_files(folder.parent)}')
    state = _find_state_dict(load_checkpoint(path, allow_pickle=allow_pickle), prefix)
    if not isinstance(state, dict) or not state:
        raise ValueError(f'{path} holds no state dict' + (f' under {prefix!r}' if prefix else ''))
    model_state = model.state_dict()
    if prefix is None:
        differences = state_dict_differences(model_state, state)
        if not strict:
            differences.update(missing=[], unexpected=[])
        message = any(differences.values()) and describe_distillation_checkpoint(
            path, state, model_state)
        if message:
            raise ValueError(message)
    check_state_dict(path, model_state, state, strict=strict)
    model.load_state_dict(state, strict=False)
