"""Tiny Fashion-MNIST idx files for tests (never the real data set)."""
import gzip

import numpy as np


def _write_idx(path, array, magic):
    header = magic.to_bytes(4, 'big') + b''.join(d.to_bytes(4, 'big') for d in array.shape)
    with gzip.open(path, 'wb') as file:
        file.write(header + array.astype(np.uint8).tobytes())


def garment_blocks(count, seed):
    """Bright blocks of a few sizes on black, like Fashion-MNIST's centred garments."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), np.uint8)
    for image in images:
        top, left = rng.integers(2, 8, size=2)
        image[top:top + 16, left:left + 14] = rng.integers(120, 255)
    return images, rng.integers(0, 10, size=count)


def write_fmnist(root, train: int = 12, test: int = 6):
    """Tiny Fashion-MNIST idx files (the four ``.gz`` of the Debian package) in ``root``:
    ``train`` and ``test`` images of blocks, labels drawn from the 10 classes."""
    for prefix, count, seed in (('train', train, 0), ('t10k', test, 1)):
        images, labels = garment_blocks(count, seed)
        _write_idx(root / f'{prefix}-images-idx3-ubyte.gz', images, 2051)
        _write_idx(root / f'{prefix}-labels-idx1-ubyte.gz', labels, 2049)
    return root
