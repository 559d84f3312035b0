"""Helpers shared by the mmengine-Runner tests (segmentation, detection)."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import distill.mm  # noqa: F401  (registers distill.* types; mmseg:: configs without pkg_resources)

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, *args, timeout: int = 300, torchrun: int = 0) -> str:
    """Run a task script in a subprocess from the repository root; return its output."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    if torchrun:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={torchrun}',
               '--master_port', str(29500 + os.getpid() % 2000), script, *args]
    else:
        cmd = [sys.executable, script, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{" ".join(cmd)} failed:\n{output[-6000:]}'
    return output


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
    import distill.mm  # noqa: F401
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
