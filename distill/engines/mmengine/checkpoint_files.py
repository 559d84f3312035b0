"""Runner checkpoints that are written whole and carry a checksum, and the choice of the one
to resume from.

mmengine 0.10.7 writes a checkpoint with ``LocalBackend.put``: ``open(path, 'wb')`` straight
over the target, so a kill mid-write leaves a truncated ``iter_N.pth``, and nothing tells a
file with flipped bytes from a good one. ``CheckpointHook`` hands every write (and the removal
of rotated-out checkpoints) to the file backend named by its ``backend_args``; the backend
registered here as ``'distill_checksum'`` is mmengine's ``LocalBackend`` except that

* ``put`` writes ``.<name>.<random>.tmp`` beside the target, fsyncs it and renames it over the
  target (a file at the checkpoint's path is always complete), then writes the SHA-256 of the
  same bytes to ``<name>.sha256`` (``sha256sum`` format: ``sha256sum -c iter_8.pth.sha256``
  checks it by hand), also through a temporary file and a rename;
* ``remove`` also removes the ``.sha256`` beside the file.

``verify_checkpoint`` reads a file back against its ``.sha256``; ``newest_valid_checkpoint``
walks a work dir's checkpoints newest first and returns the first that verifies, with one
warning per skipped file that names it and says why. Nothing here unpickles a file whose
checksum does not match, and no message suggests turning ``weights_only`` off.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from mmengine.fileio import LocalBackend, register_backend

from distill.checkpoint import CorruptCheckpointError, write_atomic

BACKEND_NAME = 'distill_checksum'
CHECKSUM_SUFFIX = '.sha256'
# iter_8.pth, epoch_3.pth (CheckpointHook's default filename_tmpl); best_*.pth are not resumed
STEP_CHECKPOINT = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


#: where a DistillationModel checkpoint keeps each network (SoKD: under its base distiller)
NETWORK_PREFIXES = dict(student=('distiller.student.', 'distiller.base.student.'),
                        teacher=('distiller.teacher.', 'distiller.base.teacher.'))

def checksum_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def write_checkpoint_bytes(data: bytes, path) -> str:
    """Write a checkpoint and its ``.sha256``; returns the hex digest."""
    digest = hashlib.sha256(data).hexdigest()
    write_atomic(data, path)
    write_atomic(f'{digest}  {Path(path).name}\n'.encode(), checksum_path(path))
    return digest


def file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def recorded_digest(path) -> str | None:
    """The digest in ``path``'s ``.sha256``, or None when there is none."""
    record = checksum_path(path)
    if not record.is_file():
        return None
    fields = record.read_text().split()
    if not fields or not re.fullmatch(r'[0-9a-f]{64}', fields[0]):
        raise CorruptCheckpointError(f'{record} is not a SHA-256 record')
    return fields[0]


def verify_checkpoint(path) -> bool:
    """True if ``path`` matches its ``.sha256``; False if it has none (unverified: written
    before checksums, or the run was killed between the two renames). Raises
    ``CorruptCheckpointError`` naming the file when it is missing or does not match."""
    path = Path(path)
    if not path.is_file():
        raise CorruptCheckpointError(f'checkpoint {path} does not exist')
    expected = recorded_digest(path)
    if expected is None:
        return False
    if file_digest(path) != expected:
        raise CorruptCheckpointError(
            f'checkpoint {path} does not match its SHA-256 ({checksum_path(path).name}): the '
            f'file was truncated or changed after it was written')
    return True


def check_loads(path) -> None:
    """For a checkpoint without a checksum: it must at least load weights-only (a truncated
    zip does not). The error names the file; torch's own advice to load with
    ``weights_only=False`` is not passed on (wrong for a damaged file, and unsafe)."""
    import torch
    from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals
    allow_mmengine_checkpoint_globals()
    try:
        torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001  (any failure means: not usable)
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ''
        raise CorruptCheckpointError(f'checkpoint {path} has no checksum and does not load '
                                     f'({type(err).__name__}: {first_line})') from None


def step_checkpoints(folder) -> list[Path]:
    """``iter_N.pth`` / ``epoch_N.pth`` in ``folder``, newest (largest N) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(2)), p) for p in folder.iterdir()
             if (m := STEP_CHECKPOINT.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found, key=lambda item: item[0], reverse=True)]


def newest_valid_checkpoint(work_dir, warn=print, folders=()) -> Path | None:
    """The checkpoint to auto-resume from: the one ``last_checkpoint`` names, then every
    ``iter_N.pth`` / ``epoch_N.pth`` of its folder (and of ``work_dir``), newest first; the
    first that matches its checksum (or, with none recorded, loads) wins. ``warn`` gets one
    message per skipped file, naming it. None when there is no checkpoint at all; a
    ``CorruptCheckpointError`` listing every file when there are some but none is usable.

    Only the run's own checkpoints are resumed: those in ``work_dir`` or in ``folders`` (a
    ``CheckpointHook``'s ``out_dir``). A ``last_checkpoint`` naming a file elsewhere (a work
    dir copied from another run, whose pointer still names that run's absolute path) is
    ignored with a warning."""
    work_dir = Path(work_dir)
    own = [work_dir.resolve(), *(Path(f).resolve() for f in folders)]
    candidates = []
    pointer = work_dir / 'last_checkpoint'
    if pointer.is_file() and pointer.read_text().strip():
        named = Path(pointer.read_text().strip())
        if named.resolve().parent in own:
            candidates.append(named)
            candidates += step_checkpoints(named.parent)
        else:
            warn(f'{pointer} names {named}, outside this run\'s work dir {work_dir} (a work dir '
                 f'copied from another run?): ignored; resuming from the work dir\'s own '
                 f'checkpoints')
    candidates += step_checkpoints(work_dir)
    seen, problems = set(), []
    for path in candidates:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            if not verify_checkpoint(path):
                check_loads(path)
                warn(f'checkpoint {path} has no checksum ({path.name}{CHECKSUM_SUFFIX}); it '
                     f'loads, so it is resumed from unverified')
        except CorruptCheckpointError as err:
            problems.append(str(err))
            warn(f'{err}; skipping it for an older checkpoint')
            continue
        return path
    if problems:
        raise CorruptCheckpointError('no usable checkpoint to resume from: '
                                     + '; '.join(problems))
    return None


def check_checkpoint_fits(model, path, config: str) -> None:
    """Before a test reports anything from ``path``: its state dict must load into ``model``
    (the built Runner model) key for key and shape for shape. mmengine loads non-strictly,
    logging a size mismatch mid-run and then evaluating partly random weights (a detection
    checkpoint under a segmentation config); here the run stops, naming the file, the counts
    and the first keys of each kind (``distill.checkpoint.check_state_dict``)."""
    import torch
    from mmengine.model import BaseTTAModel, is_model_wrapper

    from distill.checkpoint import check_state_dict
    from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):  # as mmengine loads
        model = model.module
    allow_mmengine_checkpoint_globals()
    checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    state = {re.sub(r'^module\.', '', key): value for key, value in state.items()}
    check_state_dict(path, model.state_dict(), state, f'the model of {config}')


class ChecksumLocalBackend(LocalBackend):
    """mmengine's local file backend, writing atomically with a ``.sha256`` beside each file
    (see the module docstring). Used by ``CheckpointHook(backend_args=dict(backend=
    'distill_checksum'))``, which ``distill.ResumeHook`` sets up."""

    def put(self, obj: bytes, filepath) -> None:
        write_checkpoint_bytes(obj, filepath)

    def remove(self, filepath) -> None:
        super().remove(filepath)
        record = checksum_path(filepath)
        if record.is_file():
            record.unlink()


register_backend(BACKEND_NAME, ChecksumLocalBackend, force=True)
