"""An output never replaces an input: the one check of every command that writes or deletes.

Every entry point checks what it is about to write before writing anything: export's student
checkpoint and config, test's ``--out``, a run's config dump, and what ``--overwrite`` deletes.
A target is refused (``FileExistsError``, one line naming the file; ``run_entry_point`` prints
it as ``error: ...`` and nothing is written) when

* it is one of the command's inputs (the checkpoint, the config being run, a teacher, a data
  folder), the same file by another name (a link) included, or lies inside an input folder
  (``--out checkpoint-8/model.safetensors``);
* it is deleted and holds an input (``--overwrite`` deleting a folder the teacher is read from);
* it is an existing file of another kind than the one the command writes (``written_by``: a
  test on the file, e.g. "a metrics JSON"): replacing it would lose what the command cannot give
  back, and rerunning the command over its own earlier output stays allowed.

Inputs are given as ``{role: path}`` (``{'the checkpoint': ..., 'the config being run': ...}``);
None and remote (``scheme://``) paths are skipped.
"""
from __future__ import annotations

import os
from pathlib import Path


def _local(path) -> bool:
    return path is not None and str(path) != '' and '://' not in str(path)


def _resolved(path) -> Path:
    return Path(os.path.expanduser(str(path))).resolve()


def same_file(a, b) -> bool:
    """``a`` and ``b`` name the same file or folder (resolved, or one inode: a hard link)."""
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _inside(path, folder) -> bool:
    return Path(folder).is_dir() and _resolved(path).is_relative_to(_resolved(folder))


def input_hit(target, inputs: dict) -> tuple[str, str, str] | None:
    """``(role, input path, how)`` of the first input ``target`` is or lies inside; None."""
    for role, source in (inputs or {}).items():
        if not (_local(source) and _local(target)):
            continue
        if same_file(target, source):
            return role, str(source), 'is'
        if _inside(target, source):
            return role, str(source), 'is inside'
    return None


def check_output(target, inputs: dict, what: str = 'the output', written_by=None,
                 kind: str = '', hint: str = 'write it to another path') -> None:
    """Refuse to write ``target`` (see the module): an input, inside an input folder, or an
    existing file ``written_by(path)`` says this command did not write (``kind`` names what it
    writes, ``hint`` the way out, for the message)."""
    if not _local(target):
        return
    hit = input_hit(target, inputs)
    if hit is not None:
        role, source, how = hit
        where = '' if how == 'is' and str(source) == str(target) else f' ({source})'
        raise FileExistsError(f'{what} {target} {how} {role}{where}, an input of this command: '
                              f'nothing was written; {hint}')
    path = Path(target)
    if written_by is None or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir():
        raise FileExistsError(f'{what} {target} is an existing folder: nothing was written; '
                              f'write it to another path')
    if not written_by(path):
        kind = kind or 'what this command writes'
        raise FileExistsError(f'{what} {target} exists and is not {kind}: nothing was written; '
                              f'move it away or write to another path')


def check_deletions(paths, inputs: dict, flag: str = '--overwrite') -> None:
    """Refuse to delete any of ``paths`` that is an input or holds one (a folder the teacher
    or the config being run lies in); nothing is deleted then."""
    for path in paths:
        for role, source in (inputs or {}).items():
            if not _local(source):
                continue
            if same_file(path, source) or _inside(source, path):
                held = '' if same_file(path, source) else f' (it holds {source})'
                raise FileExistsError(f'{flag} would delete {path}, {role}{held}, an input of '
                                      f'this run: nothing was deleted. Run from a copy outside '
                                      f'the work dir, or use another work dir')


def is_json_record(path, keys=()) -> bool:
    """``path`` holds a JSON object with ``keys`` (a metrics file a test command wrote)."""
    import json
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and all(key in record for key in keys)
