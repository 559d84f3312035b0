"""The Fashion-MNIST idx reader on tiny idx files written here (never the real data set)."""
import gzip

import numpy as np
import pytest
import torch

from distill.data import FashionMNIST, build_dataset
from distill.data.fmnist import IdxFormatError


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, 'big') + b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fmnist(root, n_train=12, n_test=5, gz=True, seed=0):
    """The four files with random 28x28 images; labels cycle 0..9 (train) and 9..0 (test)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10) if prefix == 'train' else (9 - np.arange(n) % 10)
        for kind, array, magic in (('images-idx3-ubyte', images, 2051),
                                   ('labels-idx1-ubyte', labels, 2049)):
            name = f'{prefix}-{kind}' + ('.gz' if gz else '')
            payload = _idx_bytes(array, magic)
            (root / name).write_bytes(gzip.compress(payload) if gz else payload)
        data[prefix] = images, labels
    return data


@pytest.mark.parametrize('gz', [True, False])
def test_reads_both_splits_padded_with_labels(tmp_path, gz):
    data = write_fmnist(tmp_path, gz=gz)
    train = build_dataset(dict(type='FashionMNIST', root=str(tmp_path), train=True))
    test = FashionMNIST(tmp_path, train=False, channels=1)
    assert len(train) == 12 and len(test) == 5
    assert train.classes[0] == 'T-shirt/top' and len(train.classes) == 10
    item = train[3]
    assert item['inputs'].shape == (3, 32, 32) and item['labels'] == 3
    # zero padding of 2 pixels, the 28x28 image in the middle, scaled to [0, 1]
    expected = torch.from_numpy(data['train'][0][3]).float() / 255
    torch.testing.assert_close(item['inputs'][0, 2:30, 2:30], expected)
    assert item['inputs'][:, :2].abs().sum() == 0 and item['inputs'][:, :, 30:].abs().sum() == 0
    assert torch.equal(item['inputs'][0], item['inputs'][2])
    assert test[0]['inputs'].shape == (1, 32, 32) and test[0]['labels'] == 9
    assert test.targets == [9, 8, 7, 6, 5]


def test_per_class_keeps_the_first_images_of_each_class(tmp_path):
    write_fmnist(tmp_path, n_train=30)
    subset = FashionMNIST(tmp_path, per_class=2, pad=0)
    assert len(subset) == 20 and sorted(subset.targets) == sorted(list(range(10)) * 2)
    assert subset[0]['inputs'].shape == (3, 28, 28)
    with pytest.raises(ValueError, match='per_class'):
        FashionMNIST(tmp_path, per_class=0)


def test_missing_folder_and_missing_file_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'):
        FashionMNIST(tmp_path / 'nowhere')
    write_fmnist(tmp_path)
    (tmp_path / 't10k-labels-idx1-ubyte.gz').unlink()
    with pytest.raises(FileNotFoundError, match='t10k-labels-idx1-ubyte.gz'):
        FashionMNIST(tmp_path, train=False)
    FashionMNIST(tmp_path, train=True)  # the other split is still readable


def test_truncated_wrong_magic_and_corrupt_files_are_named(tmp_path):
    write_fmnist(tmp_path, gz=False)
    images = tmp_path / 'train-images-idx3-ubyte'
    payload = images.read_bytes()
    images.write_bytes(payload[:-100])
    with pytest.raises(IdxFormatError, match='train-images-idx3-ubyte.*truncated'):
        FashionMNIST(tmp_path)
    images.write_bytes((2049).to_bytes(4, 'big') + payload[4:])
    with pytest.raises(IdxFormatError, match=r'train-images-idx3-ubyte.*magic number 0x00000801'):
        FashionMNIST(tmp_path)
    images.write_bytes(payload[:5])
    with pytest.raises(IdxFormatError, match='truncated'):
        FashionMNIST(tmp_path)
    # a gzip file cut short
    images.unlink()
    (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(payload)[:50])
    with pytest.raises(IdxFormatError, match='train-images-idx3-ubyte.gz'):
        FashionMNIST(tmp_path)


def test_label_count_mismatch_and_bad_options(tmp_path):
    write_fmnist(tmp_path, gz=False)
    labels = np.zeros(7, dtype=np.uint8)
    (tmp_path / 'train-labels-idx1-ubyte').write_bytes(_idx_bytes(labels, 2049))
    with pytest.raises(IdxFormatError, match='12 images.*7 labels'):
        FashionMNIST(tmp_path)
    with pytest.raises(ValueError, match='channels'):
        FashionMNIST(tmp_path, train=False, channels=2)
