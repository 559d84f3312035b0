"""The feature-network FID (``distill.fid``) and Fashion-MNIST as diffusion images, on tiny
idx files written here; ``tests/test_diffusion_train.py`` runs the FID through train.py."""

import pytest
import torch

from distill.data.images import FashionMNISTImages, build_image_datasets
from distill.fid import PenultimateFeatures, describe, feature_fid, load_feature_network
from distill.models import build_model
from fmnist_helpers import write_fmnist

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
