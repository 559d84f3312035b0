"""The feature-network FID (``distill.fid``), Fashion-MNIST as diffusion images, and both
through ``tasks/diffusion/train.py`` on tiny idx files written here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.data.images import FashionMNISTImages, build_image_datasets
from distill.fid import PenultimateFeatures, describe, feature_fid, load_feature_network
from distill.models import build_model
from fmnist_helpers import write_fmnist

REPO = Path(__file__).resolve().parents[1]
NET = dict(type='tiny_cnn', num_classes=10, width=4, in_channels=1)


def _images(count, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(count, 1, 16, 16, generator=g) * 1.2 - 0.6
    return (base + shift).clamp(-1, 1)


@pytest.fixture(scope='module')
def features():
    torch.manual_seed(0)
    return PenultimateFeatures(build_model(dict(NET)))


def test_identical_sets_give_zero_and_a_shift_gives_more(features):
    real = _images(96, 0)
    assert abs(feature_fid(real, real.clone(), features)) < 1e-3
    other_draw = feature_fid(real, _images(96, 1), features)  # same distribution, new samples
    shifted = [feature_fid(real, _images(96, 1, shift), features) for shift in (0.2, 0.5)]
    assert other_draw < shifted[0] < shifted[1]


def test_features_are_the_input_of_the_last_linear_layer():
    torch.manual_seed(1)
    model = build_model(dict(NET, in_channels=3)).eval()
    grey = torch.rand(3, 1, 16, 16)
    got = PenultimateFeatures(model)(grey)  # grey repeated to the RGB stem
    expected = model.avgpool(model.forward_features(grey.expand(-1, 3, -1, -1))).flatten(1)
    torch.testing.assert_close(got, expected.double())
    assert PenultimateFeatures(model).num_features == 16 and got.shape == (3, 16)
    with pytest.raises(ValueError, match='last nn.Linear'):
        PenultimateFeatures(torch.nn.Conv2d(1, 2, 3))


def test_feature_network_from_a_state_dict(tmp_path, features):
    path = tmp_path / 'net.pth'
    torch.save(features.classifier.state_dict(), path)
    spec = dict(model=NET, checkpoint=str(path))
    loaded = load_feature_network(spec)
    images = (_images(4, 2) + 1) / 2
    torch.testing.assert_close(loaded(images), features(images))
    assert describe(spec) == ('tiny_cnn(in_channels=1, num_classes=10, width=4) penultimate '
                              'features, net.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_feature_network(dict(model=NET, checkpoint=str(tmp_path / 'missing.pth')))
    with pytest.raises(ValueError, match='feature_network is dict'):
        load_feature_network(dict(net=NET))
    torch.save({'evil': object()}, tmp_path / 'pickle.pth')  # weights_only: no code object
    with pytest.raises(Exception):
        load_feature_network(dict(model=NET, checkpoint=str(tmp_path / 'pickle.pth')))


def test_fashion_mnist_images_from_idx_files(tmp_path):
    root = write_fmnist(tmp_path, train=40, test=12)
    train, heldout = build_image_datasets(dict(type='fmnist', resolution=32, root=str(root),
                                               num_samples=20, num_heldout=5))
    assert len(train) == 20 and len(heldout) == 5
    image = train[0]['pixel_values']
    assert image.shape == (1, 32, 32) and image.min() == -1 and image.max() <= 1
    assert (image[:, :2] == -1).all()  # the 2-pixel pad of 28 -> 32 is black
    # class-balanced: the interleaved order takes each class before repeating one
    labels = [int(train.source.labels[i]) for i in train.order]
    assert len(set(labels[:len(set(labels))])) == len(set(labels))
    small = FashionMNISTImages(train=False, resolution=16, root=root, channels=3)
    assert len(small) == 12 and small[0]['pixel_values'].shape == (3, 16, 16)


def test_train_py_reports_the_feature_fid_of_both_networks(tmp_path):
    """``data.type='fmnist'`` and ``evaluation.feature_network`` through the entry point."""
    root = write_fmnist(tmp_path, train=24, test=8)
    torch.manual_seed(0)
    torch.save(build_model(dict(NET)).state_dict(), tmp_path / 'net.pth')
    config = tmp_path / 'tiny.py'
    config.write_text(f"""
_base_ = {str(REPO / 'configs' / 'diffusion' / 'adm_fmnist_tiny.py')!r}
resolution = 8
_unet = dict(type='UNet2DModel', sample_size=8, in_channels=1, out_channels=1,
             norm_num_groups=4, down_block_types=('DownBlock2D', 'DownBlock2D'),
             up_block_types=('UpBlock2D', 'UpBlock2D'), layers_per_block=1)
teacher = dict(_unet, block_out_channels=(8, 16), _delete_=True)
student = dict(_unet, block_out_channels=(4, 8), _delete_=True)
del _unet
noise_scheduler = dict(num_train_timesteps=50)
data = dict(resolution=8, root={str(root)!r}, num_samples=16, num_heldout=6)
train_batch_size = 8
checkpointing_steps = 0
validation_steps = 0
report_to = 'none'
evaluation = dict(num_images=6, num_buckets=2, num_samples=2, num_inference_steps=2,
                  fid_images=6, feature_network=dict(model={NET!r},
                                                     checkpoint={str(tmp_path / 'net.pth')!r}))
""")
    env = {k: v for k, v in os.environ.items() if k not in ('LOCAL_RANK', 'RANK', 'WORLD_SIZE')}
    result = subprocess.run(
        [sys.executable, str(REPO / 'tasks' / 'diffusion' / 'train.py'), str(config),
         '--output_dir', str(tmp_path / 'run'), '--max_train_steps', '2'],
        env=dict(env, OMP_NUM_THREADS='1'), capture_output=True, text=True, timeout=300,
        cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    final = [r for r in json.loads((tmp_path / 'run' / 'metrics.json').read_text())
             if r['kind'] == 'final'][-1]
    assert final['fid_images'] == 6 and 'penultimate features' in final['fid_network']
    assert final['student_fid'] > 0 and final['teacher_fid'] > 0
    assert "not Inception's" in result.stdout + result.stderr
