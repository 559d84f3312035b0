"""Fashion-MNIST from the four standard idx ``.gz`` files (60,000 train / 10,000 test, 10 classes).

    >>> FashionMNIST('/usr/share/datasets/fashion-mnist', train=True, channels=3)

``root`` holds ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (uncompressed copies without
``.gz`` work too). On Debian, ``apt-get install dataset-fashion-mnist`` puts them in
``/usr/share/datasets/fashion-mnist``. Nothing is downloaded.

Items are ``dict(inputs=FloatTensor[C,32,32] in [0,1], labels=int)`` like the other
classification datasets: the 28x28 images are zero-padded by 2 pixels per side (the LeNet
convention), so the CIFAR networks and taps apply unchanged; ``channels=3`` repeats the grey
channel. ``per_class`` keeps the first N images of every class (a class-balanced subset, in
file order, so it is the same on every machine).

We read idx ourselves rather than through torchvision: it is 20 lines of numpy, it gives
error messages that name the file, and torchvision is not a dependency of the library.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from distill.data.cifar import _CifarBase
from distill.registry import DATASETS

FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                         'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
DEBIAN_ROOT = '/usr/share/datasets/fashion-mnist'

# idx magic numbers: 0x00000803 = unsigned bytes, 3 dimensions; 0x00000801 = bytes, 1 dimension
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


class IdxFormatError(ValueError):
    """An idx file is truncated, has the wrong magic number or the wrong shape."""


def _find(root: Path, stem: str) -> Path:
    for name in (f'{stem}.gz', stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f'Fashion-MNIST file {str(root / (stem + ".gz"))!r} not found '
                            f'(nor its uncompressed copy). The folder must hold the four idx '
                            f'files; on Debian: apt-get install dataset-fashion-mnist '
                            f'(installs them in {DEBIAN_ROOT})')


def read_idx(path, magic: int) -> np.ndarray:
    """An idx file (``.gz`` or not) -> uint8 array of the shape its header states."""
    path = Path(path)
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        with opener(path, 'rb') as file:
            data = file.read()
    except (OSError, EOFError) as err:  # gzip: bad header, truncated stream, CRC error
        raise IdxFormatError(f'{str(path)!r} is not a readable idx file: {err}') from err
    if len(data) < 8:
        raise IdxFormatError(f'{str(path)!r} is truncated: {len(data)} bytes, no idx header')
    found = int.from_bytes(data[:4], 'big')
    if found != magic:
        raise IdxFormatError(f'{str(path)!r} has magic number {found:#010x}, expected '
                             f'{magic:#010x}: not the idx file this name should hold')
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f'{str(path)!r} is truncated inside its header')
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise IdxFormatError(f'{str(path)!r} is truncated or padded: header says {shape} '
                             f'({expected} bytes of data), the file has {len(data) - header}')
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


@DATASETS.register_module(name='FashionMNIST')
class FashionMNIST(_CifarBase):
    """Args:
        root: the folder of the four idx files.
        train: the 60k training split (True) or the 10k test split (False).
        channels: 1 (grey) or 3 (grey repeated, for networks with an RGB stem).
        pad: zero pixels added on each side (2: 28 -> 32).
        per_class: keep only the first ``per_class`` images of each class (None: all).
    """

    classes = list(FASHION_MNIST_CLASSES)  # (labels, targets and len come from _CifarBase)

    def __init__(self, root=DEBIAN_ROOT, train: bool = True, channels: int = 3, pad: int = 2,
                 per_class: int | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f'Fashion-MNIST folder {str(root)!r} does not exist. On '
                                    f'Debian: apt-get install dataset-fashion-mnist (installs '
                                    f'the idx files in {DEBIAN_ROOT}), or set root')
        if channels not in (1, 3):
            raise ValueError(f'channels must be 1 or 3, got {channels!r}')
        if pad < 0:
            raise ValueError(f'pad must be >= 0, got {pad!r}')
        prefix = 'train' if train else 't10k'
        images_path = _find(root, f'{prefix}-images-idx3-ubyte')
        labels_path = _find(root, f'{prefix}-labels-idx1-ubyte')
        images = read_idx(images_path, _IMAGES_MAGIC)
        labels = read_idx(labels_path, _LABELS_MAGIC)
        if len(images) != len(labels):
            raise IdxFormatError(f'{str(images_path)!r} holds {len(images)} images but '
                                 f'{str(labels_path)!r} holds {len(labels)} labels')
        if labels.size and labels.max() >= len(self.classes):
            raise IdxFormatError(f'{str(labels_path)!r} has label {int(labels.max())}; '
                                 f'Fashion-MNIST has {len(self.classes)} classes')
        if per_class is not None:
            if int(per_class) <= 0:
                raise ValueError(f'per_class must be a positive number, got {per_class!r}')
            keep = np.concatenate([np.flatnonzero(labels == c)[:int(per_class)]
                                   for c in range(len(self.classes))])
            keep.sort()
            images, labels = images[keep], labels[keep]
        self.root, self.train, self.channels, self.pad = root, train, channels, pad
        # uint8 (N, 28, 28), a writable copy
        super().__init__(torch.from_numpy(np.array(images)),
                         torch.from_numpy(labels.astype(np.int64)), list(FASHION_MNIST_CLASSES))

    def __getitem__(self, index):
        image = self.images[index].float().div_(255).unsqueeze(0)
        if self.pad:
            image = F.pad(image, (self.pad,) * 4)
        if self.channels == 3:
            image = image.expand(3, -1, -1).clone()
        return dict(inputs=image, labels=int(self.labels[index]))

    def gather(self, indices: torch.Tensor) -> dict:
        images = self.images[indices].float().div_(255).unsqueeze(1)
        if self.pad:
            images = F.pad(images, (self.pad,) * 4)
        if self.channels == 3:
            images = images.expand(-1, 3, -1, -1).contiguous()
        return dict(inputs=images, labels=self.labels[indices])
