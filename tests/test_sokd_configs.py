"""SoKD's configs build, and a SoKD run goes through the classification engine."""
import copy
import glob
import json
import math
from pathlib import Path

import pytest
import torch

from distill import build_distiller

CONFIGS = Path(__file__).resolve().parents[1] / 'configs' / 'classification' / 'sokd'


def _without_teacher_ckpt(cfg):
    cfg = copy.deepcopy(cfg)
    for part in (cfg, cfg.get('base', {})):
        if 'teacher_ckpt' in part:  # the file is the user's: a random frozen teacher here
            part.update(teacher_ckpt=None, random_teacher=True)
    return cfg


@pytest.mark.parametrize('path', sorted(glob.glob(str(CONFIGS / 'cifar100_*.py'))),
                         ids=lambda p: Path(p).stem)
def test_cifar_configs_build(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    distiller = build_distiller(_without_teacher_ckpt(cfg.distiller.to_dict()))
    if 'sokd' in Path(path).stem:
        assert type(distiller).__name__ == 'SoKD' and distiller.arch_parameters()
        assert distiller.dam is None  # DAM off for classification (see the configs)
        assert 'arch_optimizer' in cfg


def test_imagenet_config_names_timm_resnets():
    from mmengine.config import Config
    cfg = Config.fromfile(str(CONFIGS / 'imagenet_kd_sokd_resnet34_resnet18.py'))
    assert cfg.distiller.base.student.type == 'timm/resnet18'
    assert cfg.distiller.base.teacher.type == 'timm/resnet34'


def test_shapes_demo_through_the_engine(tmp_path):
    pytest.importorskip('accelerate')
    from mmengine.config import Config

    from distill.data.shapes import ShapesClassification
    from distill.engines.classification.train import train_classification
    cfg = Config.fromfile(str(CONFIGS / 'shapes_demo.py'))
    cfg.distiller.base.teacher_ckpt = None
    cfg.distiller.base.random_teacher = True
    cfg.distiller.arch_interval = 2
    cfg.schedule = dict(epochs=1, milestones=[], gamma=0.1)
    cfg.data.batch_size = 16
    cfg.train.progress_bar = False
    datasets = dict(train=ShapesClassification(num_samples=64, seed=0, image_size=32,
                                               num_classes=6),
                    val=ShapesClassification(num_samples=32, seed=1, image_size=32,
                                             num_classes=6))
    result = train_classification(cfg, work_dir=tmp_path, datasets=datasets)
    record = result.records[-1]
    assert set(record['policy']) == {'weights', 'magnitudes', 'entropy', 'top'}
    assert record['policy']['weights'] != dict.fromkeys(record['policy']['weights'], 1 / 11)
    # the policy per epoch: metrics.json (nested and flat), TensorBoard, the chart at the end
    # of the search (search_epochs=4 > 1 epoch run: drawn at the last epoch)
    assert record['policy/entropy'] == record['policy']['entropy'] < math.log(11)
    saved = json.loads((tmp_path / 'metrics.json').read_text())
    saved = saved[-1] if isinstance(saved, list) else saved['records'][-1]
    assert saved['policy/weight/identity'] == record['policy']['weights']['identity']
    assert (tmp_path / 'policy.png').stat().st_size > 0
    accumulator = pytest.importorskip(
        'tensorboard.backend.event_processing.event_accumulator').EventAccumulator(
        str(tmp_path / 'tensorboard'))
    accumulator.Reload()
    assert 'epoch/policy/entropy' in accumulator.Tags()['scalars']
    assert any(key.endswith('arch.val_loss') for key in record), sorted(record)
    assert any(key.endswith('student.dam') for key in record), sorted(record)
    from test_classification_engine import newest_checkpoint
    state = newest_checkpoint(tmp_path)  # checkpoint-N: weights, optimisers, weights-only
    torch.testing.assert_close(state['model']['dafa.alpha'],
                               result.distiller.dafa.alpha.detach())
    assert state['arch_optimizer'] is not None


ROOT = CONFIGS.parents[1]
# each SoKD config and the config of the distiller it wraps, as that one trains alone;
# the ImageNet, shapes-demo and Cityscapes/COCO SoKD configs have no such sibling to inherit
INHERITED_BASES = {
    'classification/sokd/cifar100_fitnet_sokd_resnet32x4_resnet8x4.py':
        'classification/sokd/cifar100_fitnet_resnet32x4_resnet8x4.py',
    'classification/sokd/cifar100_kd_sokd_resnet32x4_resnet8x4.py':
        'classification/sokd/cifar100_kd_resnet32x4_resnet8x4.py',
    'classification/sokd/cifar100_dkd_sokd_resnet32x4_resnet8x4.py':
        'classification/sokd/cifar100_dkd_resnet32x4_resnet8x4.py',
    'classification/fmnist/sokd_fitnet.py': 'classification/fmnist/fitnet.py',
    'segmentation/shapes/sokd_fitnet.py': 'segmentation/shapes/fitnet.py',
    'detection/shapes/sokd_fitnet.py': 'detection/shapes/fitnet.py',
}


@pytest.mark.parametrize('sokd, alone', sorted(INHERITED_BASES.items()))
def test_sokd_configs_wrap_the_base_config_they_inherit(sokd, alone):
    """SoKD+X trains X as X's own config has it (nothing restated, nothing to drift), but for
    what the SoKD config says it changes."""
    from mmengine.config import Config
    import distill.engines.mmengine  # noqa: F401  (the mmdet:: bases)

    def distiller(path):
        cfg = Config.fromfile(str(ROOT / path)).to_dict()
        return cfg['model']['distiller'] if 'model' in cfg else cfg['distiller']

    wrapped, expected = distiller(sokd)['base'], distiller(alone)
    assert distiller(sokd)['type'] == 'SoKD'
    if sokd.startswith('detection'):  # DAM runs on the last pair: the finer level last
        assert [t['index'] for t in wrapped.pop('taps')] == [1, 0]
        assert [t['index'] for t in expected.pop('taps')] == [0, 1]
    assert wrapped == expected
