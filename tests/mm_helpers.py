"""Helpers shared by the mmengine-Runner tests (segmentation, detection)."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from forked_run import run_python

import distill.engines.mmengine  # noqa: F401  (registers distill.* types; mmseg:: configs without pkg_resources)

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port nobody listens on now (a pid-derived one can collide with a parallel run)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_script(script: str, *args, timeout: int = 300, torchrun: int = 0,
               expect_fail: bool = False, cwd=None, env: dict | None = None) -> str:
    """Run a task script in a new process from the repository root (or ``cwd``), with
    ``env`` added to the environment; return its output (and check its exit status: 0, or not
    0 with ``expect_fail``)."""
    cwd = REPO if cwd is None else cwd
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO), **(env or {})}
    if torchrun:  # processes of its own: a subprocess
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={torchrun}',
               '--master_port', str(free_port()), script, *args]
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    else:  # a process forked with torch and the frameworks already imported (forked_run.py)
        cmd = [script, *args]
        proc = run_python(cmd, env, cwd, timeout)
    output = proc.stdout + proc.stderr
    if expect_fail:
        assert proc.returncode != 0, f'{" ".join(cmd)} did not fail:\n{output[-3000:]}'
    else:
        assert proc.returncode == 0, f'{" ".join(cmd)} failed:\n{output[-6000:]}'
    return output


# runs a framework tool as ``python tools/X.py ...`` would, then says whether distill was
# imported (it must not be, for an exported student)
PLAIN_TOOL = """
import runpy, sys
tool, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(tool, run_name='__main__')
print('DISTILL IMPORTED:', any(m.split('.')[0] == 'distill' for m in sys.modules))
"""


def run_framework_tool(package: str, tool: str, *args, timeout: int = 300) -> str:
    """Run ``<package>/.mim/tools/<tool>`` (MMSegmentation's / MMDetection's own script)."""
    path = Path(__import__(package).__file__).parent / '.mim' / 'tools' / tool
    return run_script('-c', PLAIN_TOOL, str(path), *args, timeout=timeout)


def printed_test_metrics(output: str) -> dict:
    """The ``Iter(test)`` line's metrics, ``{'mIoU': 8.91, 'teacher/mIoU': ...}``."""
    import re
    lines = [line for line in output.splitlines() if 'Iter(test)' in line and 'time:' in line]
    assert lines, f'no Iter(test) metrics line in:\n{output[-3000:]}'
    return {k: float(v) for k, v in re.findall(r'([\w/]+): (-?[\d.]+)', lines[-1])}


def check_loss_sum(output: str) -> int:
    """Every ``Iter(train)`` line: the printed ``loss`` equals the sum of the printed
    ``*.loss_*`` terms (to the 4 printed decimals); returns the number of lines checked."""
    import re
    checked = 0
    for line in output.splitlines():
        if 'Iter(train)' not in line or ' loss: ' not in line:
            continue
        values = dict(re.findall(r'([\w.]+): (-?[\d.]+)', line))
        terms = [float(v) for k, v in values.items() if '.loss_' in k and k != 'arch.val_loss']
        assert terms, line
        assert abs(sum(terms) - float(values['loss'])) <= 5e-4 * (len(terms) + 1), line
        checked += 1
    return checked


def scalars(work_dir) -> list[dict]:
    """The records of the run's ``vis_data/scalars.json`` (train and val)."""
    files = sorted(glob.glob(str(Path(work_dir) / '*' / 'vis_data' / 'scalars.json')))
    assert files, f'no scalars.json under {work_dir}'
    records = []
    for path in files:
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def build_from_config(path, overrides: dict | None = None):
    """Build the ``model`` of a config file (no training, no checkpoint loaded)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    cfg = Config.fromfile(str(path))
    if overrides:
        cfg.merge_from_dict(overrides)
    scope = cfg.get('default_scope', 'mmseg')
    __import__(f'{scope}.utils', fromlist=['register_all_modules']).register_all_modules(False)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg.model)


def save_model_checkpoint(model: torch.nn.Module, path) -> str:
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    return str(path)
