"""A work dir belongs to one run: a lock file held for the run, in every training engine.

Two runs started into one work dir would both write its ``metrics.json``, checkpoints and logs,
each replacing the other's. So the main process of a run holds ``<work dir>/.distill-run.lock``
from before its first write (an ``--overwrite`` deletion included) to its end; a second run
into that work dir is refused (``WorkDirInUseError``, a ``FileExistsError``: one ``error:`` line
naming the holder's pid, host and command, and the lock file) and changes nothing. Taking the
lock is the run's first write: a work dir that cannot be created or written (permissions, a
read-only file system) is named there, with the reason (``WorkDirNotWritableError``).

The lock is an exclusive ``flock`` on the file, which the kernel drops when its process ends,
however it ends: a file left by a killed run is stale and taken over without a word; the file
only tells the refused run who holds it (``pid``, ``host``, ``argv``, ``started``). Like
``flock`` it works between the processes of one host. A process may take the lock of a work
dir it already holds (a test or notebook that starts runs one after another): the count goes
up, and the lock is released with the last ``release`` or at the process's exit.
"""
from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = '.distill-run.lock'

#: the locks this process holds, by resolved work dir
_HELD: dict[Path, 'WorkDirLock'] = {}


class WorkDirInUseError(FileExistsError):
    """Another live run holds the work dir's lock; the message names its pid."""


class WorkDirNotWritableError(PermissionError):
    """The work dir cannot be created or written (permissions, a read-only file system, a
    file in the way): the first write of a run, its lock, names it before anything else."""


def _describe(record: dict) -> str:
    """``pid N`` of the holder, with its host (when another), start time and command."""
    who = f"pid {record.get('pid', '?')}"
    if record.get('host') and record.get('host') != socket.gethostname():
        who += f" on {record['host']}"
    details = [f"started {record['started']}"] * bool(record.get('started'))
    command = ' '.join(record.get('argv') or [])
    if command:
        details.append(command if len(command) <= 120 else command[:117] + '...')
    return who + (f" ({': '.join(details)})" if details else '')


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text() or '{}')
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _live_holder(record: dict) -> bool:
    """Where ``flock`` is not supported: the recorded run is alive (its pid exists on this
    host, and is not this process)."""
    pid = record.get('pid')
    if not isinstance(pid, int) or pid == os.getpid() or record.get('host') != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class WorkDirLock:
    """The lock of one work dir, held by this process (see the module)."""

    def __init__(self, work_dir):
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / LOCK_NAME
        self.fd, self.count, self.pid = None, 0, None
        self.created_dir = False

    def acquire(self) -> 'WorkDirLock':
        import fcntl
        if self.fd is not None:
            self.count += 1
            return self
        self.created_dir = not self.work_dir.exists()
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                unsupported = err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
                if unsupported and not _live_holder(_read(self.path)):
                    break  # no flock on this file system: the recorded pid decides
                os.close(fd)
                if not unsupported and err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN,
                                                         errno.EACCES):
                    raise
                self._remove_created_dir()
                raise WorkDirInUseError(
                    f'work dir {self.work_dir} is in use by another run, '
                    f'{_describe(_read(self.path))}: nothing was changed. Wait for it to end, '
                    f'or use another work dir (lock file {self.path})') from None
            try:  # the file may have been removed (released) between open and flock
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        record = dict(pid=os.getpid(), host=socket.gethostname(), argv=list(sys.argv),
                      started=time.strftime('%Y-%m-%d %H:%M:%S'))
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        self.fd, self.count, self.pid = fd, 1, os.getpid()
        _HELD[self.work_dir.resolve()] = self
        return self

    def _open(self) -> int:
        """The lock file's descriptor, the work dir created first; a work dir that cannot
        be written is named with the reason (``WorkDirNotWritableError``)."""
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                                 errno.EEXIST, errno.ENOSPC, errno.EDQUOT):
                raise
            reason = err.strerror or type(err).__name__
            where = f' ({err.filename})' if err.filename and str(err.filename) not in (
                str(self.work_dir), str(self.path)) else ''
            raise WorkDirNotWritableError(
                f'work dir {self.work_dir} is not writable: {reason}{where}; nothing was '
                f'written there. Give a work dir this user can write to, or fix its '
                f'permissions') \
                from None

    def release(self) -> None:
        """Drop one hold; the last removes the lock file and frees the work dir (a forked
        child, e.g. a data loader worker, leaves its parent's lock alone)."""
        if self.fd is None or os.getpid() != self.pid:
            return
        self.count -= 1
        if self.count > 0:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None
        _HELD.pop(self.work_dir.resolve(), None)
        self._remove_created_dir()

    def _remove_created_dir(self) -> None:
        """A work dir this lock created and nothing else wrote to goes with it."""
        if self.created_dir:
            try:
                self.work_dir.rmdir()
            except OSError:  # not empty: the run wrote there
                pass

    def __enter__(self) -> 'WorkDirLock':
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def hold_work_dir(work_dir, enabled: bool = True) -> WorkDirLock | None:
    """Take the lock of ``work_dir`` for this process (``enabled``: on the main process only;
    the others of the run share it) until ``release`` or the process's exit; None when not
    enabled. Raises ``WorkDirInUseError`` naming the holder's pid."""
    if not enabled:
        return None
    held = _HELD.get(Path(work_dir).resolve())
    lock = held if held is not None and held.pid == os.getpid() else WorkDirLock(work_dir)
    lock.acquire()
    if held is None:
        atexit.register(_release_all, lock)
    return lock


def _release_all(lock: WorkDirLock) -> None:
    lock.count = min(lock.count, 1)
    lock.release()
