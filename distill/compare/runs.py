"""One (method, seed) run of a comparison: where it works, what ``compare_run.json`` records of
it (its settings' fingerprint, state and metric), and its process."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

MARKER, LOG = 'compare_run.json', 'compare.log'


def slug(method: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.+-]+', '_', method)



@dataclass
class Run:
    method: str
    seed: int
    work_dir: Path
    config: Path
    options: list[str]
    cfg: object
    fingerprint: str = ''
    teacher: str | None = None       # the offline teacher (path) or None
    needs_teacher: bool = False      # waits for the teacher run
    resume: bool = False
    record: dict | None = None
    reused: bool = False
    process: subprocess.Popen | None = None
    started: float = 0.0
    log: Path = field(default=None)

    @property
    def marker(self) -> Path:
        return self.work_dir / MARKER

    def read_marker(self) -> dict:
        try:
            return json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return {}

    def write_marker(self, **state) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        partial = self.marker.with_suffix('.partial')
        partial.write_text(json.dumps(dict(fingerprint=self.fingerprint, method=self.method,
                                           seed=self.seed, **state), indent=1))
        partial.replace(self.marker)


def _fingerprint(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: the child sets PR_SET_PDEATHSIG, so that a comparison killed outright takes its runs with it
#: (a run left behind would hold its work dir's lock when the comparison is started again)
_CHILD = ('import ctypes, os, signal, sys\n'
          'try:\n'
          '    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n'
          'except Exception:\n'
          '    pass\n'
          'if os.getppid() != int(sys.argv[1]):\n'
          '    sys.exit(143)\n'
          'os.execv(sys.argv[2], sys.argv[2:])\n')


def _spawn(command, log, env, cwd):
    if sys.platform.startswith('linux'):
        command = [sys.executable, '-c', _CHILD, str(os.getpid()), *command]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors='replace').splitlines()
    except OSError:
        return ''
    return '\n'.join('    ' + line for line in text[-lines:])
