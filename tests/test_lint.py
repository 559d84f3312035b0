"""The tree passes ruff with the project's configuration (``pyproject.toml``: pycodestyle and
pyflakes, 100 columns), as ``ruff check .`` run by hand does (CONTRIBUTING.md)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which('ruff', path=str(Path(sys.executable).parent)) or shutil.which('ruff')
    if ruff is None:
        pytest.skip('ruff is not installed (the test extra installs it)')
    done = subprocess.run([ruff, 'check', '--no-cache', '.'], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
