"""The Fashion-MNIST configs build, and ADM adds no trainable parameter where widths match."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from distill import build_distiller
from distill.connectors import IdentityConnector

CONFIGS = sorted((Path(__file__).resolve().parents[1] / 'configs' / 'classification' /
                  'fmnist').glob('*.py'))


def _offline_free(cfg: dict) -> dict:
    for part in (cfg, cfg.get('base') or {}):
        if part.get('teacher_ckpt'):
            # the real file is trained by independent.py: a random frozen teacher here
            part.update(teacher_ckpt=None, random_teacher=True)
    return cfg


def _real_data_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'real_data', Path(__file__).resolve().parents[1] / 'benchmarks' / 'real_data.py')
    real_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_data)
    return real_data


def test_every_benchmark_method_has_a_config():
    real_data = _real_data_module()
    names = {p.name for p in CONFIGS}
    assert {file for file, _, _ in real_data.METHODS.values()} <= names


@pytest.mark.parametrize('epochs, milestones', [(None, [5, 8]), (6, [3, 5]), (20, [10, 16])])
def test_a_shorter_gpu_preset_scales_its_milestones(epochs, milestones):
    """``--epochs-override`` keeps the schedule's shape: the lr drops at the same fractions."""
    real_data = _real_data_module()
    args = real_data.argparse.Namespace(pair='resnet', epochs_override=epochs, set=None)
    cfg = real_data.build_run_config('independent', 0, 'gpu', args, None)
    assert cfg.schedule.epochs == (epochs or 10) and cfg.schedule.milestones == milestones


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.data.train.type == 'FashionMNIST' and cfg.schedule.epochs == 10
    distiller = build_distiller(_offline_free(cfg.distiller.to_dict()))
    assert distiller.student is not None


def test_adm_on_layer3_adds_no_trainable_parameter():
    """resnet8x4 and resnet32x4 both have 256 channels at layer3: the connector is the identity,
    so ADM trains exactly the parameters DML trains (the paper's claim)."""
    counts = {}
    for name in ('dml.py', 'adm.py'):
        cfg = Config.fromfile(next(p for p in CONFIGS if p.name == name))
        torch.manual_seed(0)
        distiller = build_distiller(cfg.distiller.to_dict())
        counts[name] = sum(p.numel() for p in distiller.parameters() if p.requires_grad)
        if name == 'adm.py':
            assert all(isinstance(c, IdentityConnector) for c in distiller.connectors)
    assert counts['adm.py'] == counts['dml.py']
