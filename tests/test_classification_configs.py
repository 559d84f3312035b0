"""Every shipped classification config loads and builds its models and distiller."""
import importlib.util
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from distill import build_distiller
from distill.checkpoint import save_atomic
from distill.models import build_model

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs' / 'classification'
CONFIGS = sorted(p for p in CONFIG_DIR.glob('*.py'))


def needed_packages(cfg) -> list[str]:
    """Optional packages a config's models need (timm for 'timm/<name>' models)."""
    types = [cfg.distiller.student.type, cfg.distiller.teacher.type]
    return ['timm'] if any(str(t).startswith('timm/') for t in types) else []


def test_every_paper_setting_is_shipped():
    names = {p.stem for p in CONFIGS}
    assert {'demo', 'cifar100_adm_resnet32x4_resnet8x4', 'cifar100_dml_resnet32x4_resnet8x4',
            'cifar100_adm_wrn40_2_wrn16_2', 'cifar100_dml_wrn40_2_wrn16_2',
            'cifar100_adm_offline_resnet32x4_resnet8x4',
            'imagenet_adm_resnet34_resnet18'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_models_and_distiller(path, tmp_path):
    cfg = Config.fromfile(path)
    for package in needed_packages(cfg):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f'{path.name} needs the optional package {package!r}, not installed')
    for key in ('distiller', 'data', 'optimizer', 'schedule', 'train'):
        assert key in cfg, f'{path.name} has no {key}'
    assert cfg.data.train.type in ('ShapesClassification', 'ImageFolder', 'CIFAR100',
                                   'CIFAR10')
    distiller_cfg = cfg.distiller.to_dict()
    if distiller_cfg.get('teacher_ckpt'):  # the real file is the user's: stand in a random one
        teacher = build_model(distiller_cfg['teacher'])
        distiller_cfg['teacher_ckpt'] = str(save_atomic(teacher.state_dict(),
                                                        tmp_path / 'teacher.pth'))
    torch.manual_seed(0)
    distiller = build_distiller(distiller_cfg)
    assert distiller.online == cfg.distiller.get('online', True)
    if not distiller.online:
        assert not any(p.requires_grad for p in distiller.teacher.parameters())
        assert torch.equal(distiller.teacher.state_dict()['fc.weight'],
                           teacher.state_dict()['fc.weight'])
    if cfg.distiller.type == 'ADM':
        assert len(distiller.tap_pairs) == len(cfg.distiller.taps)
