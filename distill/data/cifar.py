"""CIFAR-10 and CIFAR-100 from the "python version" pickles (the archives users download).

``CIFAR100(root)`` reads ``cifar-100-python/{train,test,meta}``; ``CIFAR10(root)`` reads
``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``.  ``root`` may be that
folder or its parent.  Nothing is downloaded.

The files are Python pickles: only point these classes at copies of the official archives,
since unpickling an untrusted file can run code.
"""
import copy
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from distill.registry import DATASETS


def _resolve_folder(root, folder_name, required_files):
    """``root`` itself if it holds the files, else ``root/folder_name``; a clear error naming
    the expected paths otherwise."""
    root = Path(root)
    for candidate in (root, root / folder_name):
        if all((candidate / name).is_file() for name in required_files):
            return candidate
    folder = root if root.name == folder_name else root / folder_name
    missing = [str(folder / name) for name in required_files if not (folder / name).is_file()]
    raise FileNotFoundError(
        f'{folder_name} not found under {str(root)!r}: missing {", ".join(missing)}. Download '
        f'and extract the python version of the dataset, then pass the {folder_name!r} '
        f'folder or its parent as root.')


def _load_pickle(path):
    """Unpickle one CIFAR file; an empty, truncated or foreign file fails naming it."""
    try:
        with open(path, 'rb') as file:
            data = pickle.load(file, encoding='bytes')
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, ImportError) as err:
        raise ValueError(f'{str(path)!r} is not a readable CIFAR pickle (empty, truncated or '
                         f'another file?): {type(err).__name__}: {err}. Extract the archive '
                         f'again') from err
    if not isinstance(data, dict):
        raise ValueError(f'{str(path)!r} is not a CIFAR pickle: it holds a '
                         f'{type(data).__name__}, not a dict')
    return data


def _class_names(path, key):
    meta = _load_pickle(path)
    if key not in meta:
        raise ValueError(f'{str(path)!r} is not a CIFAR meta file: no key {key!r}')
    return [name.decode() if isinstance(name, bytes) else str(name) for name in meta[key]]


def _read_batches(folder, batch_names, label_key):
    """Concatenate pickled batches -> uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    images, labels = [], []
    for name in batch_names:
        batch = _load_pickle(folder / name)
        try:
            images.append(np.asarray(batch[b'data'], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except KeyError as err:
            raise ValueError(f'{str(folder / name)!r} is not a CIFAR batch: no key {err}') \
                from err
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


class _CifarBase(Dataset):
    """Images kept as one uint8 tensor; items are ``dict(inputs, labels)``, float in [0,1]."""

    def __init__(self, images, labels, classes):
        self.images = images
        self.labels = labels
        self.classes = classes

    @property
    def targets(self):
        return self.labels.tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return dict(inputs=self.images[index].float().div_(255),
                    labels=int(self.labels[index]))

    def gather(self, indices: torch.Tensor) -> dict:
        """The samples ``indices`` (a LongTensor on the images' device) as one batch: the
        values ``__getitem__`` and ``collate_classification`` give, in a few tensor operations
        (the classification engine's device-held path, ``data.on_device``)."""
        return dict(inputs=self.images[indices].float().div_(255), labels=self.labels[indices])

    @property
    def device(self) -> torch.device:
        """Where the images are (``held_on`` moves them)."""
        return self.images.device

    def held_on(self, device) -> '_CifarBase':
        """A shallow copy whose images and labels live on ``device``."""
        held = copy.copy(self)
        held.images, held.labels = self.images.to(device), self.labels.to(device)
        return held


@DATASETS.register_module(name='CIFAR100')
class CIFAR100(_CifarBase):
    """CIFAR-100 (fine labels) from ``cifar-100-python``; ``train=False`` for the test set."""

    folder_name = 'cifar-100-python'

    def __init__(self, root, train=True):
        split = 'train' if train else 'test'
        self.root = _resolve_folder(root, self.folder_name, [split, 'meta'])
        images, labels = _read_batches(self.root, [split], b'fine_labels')
        classes = _class_names(self.root / 'meta', b'fine_label_names')
        super().__init__(images, labels, classes)


@DATASETS.register_module(name='CIFAR10')
class CIFAR10(_CifarBase):
    """CIFAR-10 from ``cifar-10-batches-py``; ``train=False`` for the test set."""

    folder_name = 'cifar-10-batches-py'
    train_batches = [f'data_batch_{i}' for i in range(1, 6)]

    def __init__(self, root, train=True):
        batch_names = self.train_batches if train else ['test_batch']
        self.root = _resolve_folder(root, self.folder_name, batch_names + ['batches.meta'])
        images, labels = _read_batches(self.root, batch_names, b'labels')
        classes = _class_names(self.root / 'batches.meta', b'label_names')
        super().__init__(images, labels, classes)
