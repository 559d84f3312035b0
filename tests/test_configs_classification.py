"""Every shipped classification config trains an epoch and evaluates, through
``tasks/classification/train.py``, with the networks and method it names, on stand-in data in
the layout it reads (CIFAR-100's pickles at ``data/cifar-100-python``, Fashion-MNIST's idx
files, the generated shapes) and, for an offline config, a stand-in teacher at the
``teacher_ckpt`` path it names (README, "Classification").

A new config is covered by being added; one that needs an absent package is skipped naming it.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
from mmengine.config import Config

from config_runs import config_id, run_entry_point, shipped_configs, write_wrapper
from fmnist_helpers import write_fmnist
from standins import write_cifar100

pytestmark = pytest.mark.end_to_end

CONFIGS = shipped_configs('classification')


def networks(distiller: dict):
    """The distiller section holding the networks (SoKD's ``base``, else the section)."""
    return distiller.get('base', distiller)


def stand_in_data(data: dict, tmp_path) -> dict:
    """The wrapper's ``data`` section: the config's data sets, shrunk or moved to stand-ins."""
    splits = {}
    for split in ('train', 'val'):
        kind = data[split]['type']
        if kind in ('CIFAR100', 'CIFAR10'):  # the config's relative root, under the run's cwd
            write_cifar100(tmp_path / data[split]['root'])
            splits[split] = {}
        elif kind == 'FashionMNIST':
            splits[split] = dict(root=str(write_fmnist_once(tmp_path / 'fmnist')))
        elif kind == 'ShapesClassification':
            splits[split] = dict(num_samples=8 if split == 'train' else 4)
        else:
            raise AssertionError(f'no stand-in for a {kind} data set')
    return dict(**splits, batch_size=4, val_batch_size=4, num_workers=0)


def write_fmnist_once(root):
    if not root.is_dir():
        root.mkdir()
        write_fmnist(root, train=8, test=4)
    return root


def stand_in_teacher(distiller: dict, tmp_path) -> None:
    """A random teacher saved at the config's relative ``teacher_ckpt`` (a plain state dict,
    what a teacher run's ``teacher.pth`` holds)."""
    from distill.checkpoint import save_atomic
    from distill.models import build_model
    path = networks(distiller).get('teacher_ckpt')
    if path:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        save_atomic(build_model(networks(distiller)['teacher']).state_dict(), tmp_path / path)


@pytest.mark.parametrize('config', CONFIGS, ids=[config_id(p) for p in CONFIGS])
def test_shipped_config_trains_and_evaluates(config, tmp_path):
    cfg = Config.fromfile(str(config))
    distiller = cfg.distiller.to_dict()
    for side in ('student', 'teacher'):
        kind = str(networks(distiller)[side]['type'])
        if kind.startswith('timm/') and importlib.util.find_spec('timm') is None:
            pytest.skip(f'{config.name} needs the optional package timm, not installed')
    stand_in_teacher(distiller, tmp_path)
    data = stand_in_data(cfg.data.to_dict(), tmp_path)
    wrapper = write_wrapper(tmp_path, config, f'data = {data!r}\n'
                                              'schedule = dict(epochs=1)\n'
                                              'train = dict(log_interval=1)\n')
    output = run_entry_point('classification', wrapper, tmp_path,
                             '--work-dir', str(tmp_path / 'work'))
    records = json.loads((tmp_path / 'work' / 'metrics.json').read_text())
    assert [r['epoch'] for r in records] == [1], output[-3000:]
    # the whole stand-in set: 8 images in steps of 4, 4 evaluated
    assert records[0]['global_step'] == 2 and records[0]['val/num_samples'] == 4, records
    assert 0 <= records[0]['val/student/top1'] <= 100, records
