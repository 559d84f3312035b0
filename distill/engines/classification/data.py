"""Batches for the classification engine: seeded order, per-process shards, batch augmentation.

Exact resume rests on one rule: every random choice of an epoch is a function of
``(seed, epoch, stream, rank)``. The shuffle order comes from a generator seeded that way, the
augmentation (``random_crop_flip`` on the device, per batch) from another, so epoch ``e`` draws
the same batches whether the run started at epoch 1 or was resumed at epoch ``e``.
"""
from __future__ import annotations

import itertools

import torch
from torch.utils.data import DataLoader, Dataset

from distill.data.transforms import normalize, random_crop_flip
from distill.engines.core.data_order import seeded_permutation, shard


def seeded_generator(seed: int, device='cpu') -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


class ShardedBatches:
    """The batches of indices one process reads in one epoch.

    ``shuffle=True`` (training): a permutation seeded by ``(seed, epoch, stream)``, the same on
    every process, sharded with ``fit='pad'`` (``distill.engines.core.data_order.shard``): every
    process runs the same number of steps. ``shuffle=False`` (evaluation): the dataset in order,
    ``fit='exact'``: the processes together see every sample exactly once.
    A last batch of a single sample is dropped when training (BatchNorm cannot train on it).
    """

    def __init__(self, dataset_size: int, batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, num_processes: int = 1, stream: str = 'train'):
        if dataset_size <= 0:
            raise ValueError(f'the {stream} dataset is empty')
        if batch_size <= 0:
            raise ValueError(f'batch_size must be positive, got {batch_size}')
        self.dataset_size, self.batch_size, self.shuffle = dataset_size, batch_size, shuffle
        self.seed, self.rank, self.num_processes, self.stream = seed, rank, num_processes, stream

    def indices(self, epoch: int) -> list[int]:
        if not self.shuffle:  # every sample once over the processes
            return shard(range(self.dataset_size), self.rank, self.num_processes, 'exact')
        order = seeded_permutation(self.dataset_size, self.seed, epoch, self.stream)
        return shard(order, self.rank, self.num_processes, 'pad')

    def batches(self, epoch: int) -> list[list[int]]:
        indices = self.indices(epoch)
        batches = [indices[i:i + self.batch_size]
                   for i in range(0, len(indices), self.batch_size)]
        if self.shuffle and len(batches) > 1 and len(batches[-1]) == 1:
            batches.pop()
        return batches


class DataLoadError(RuntimeError):
    """A batch could not be read; the message names the batch, the epoch and the cause."""


class DataFileError(DataLoadError, ValueError):
    """A sample's file could not be read or decoded (a truncated or corrupt image, a file gone):
    what the user fixes, so the entry points end with its one line (a ``ValueError``), which
    names the batch, the epoch and the file."""


class _NamedSamples(Dataset):
    """Reads sample ``i`` of batch ``n`` from the index ``(n, i)``, so that a failure names the
    batch and the epoch (the dataset's own message names the file), in the main process or a
    worker alike."""

    def __init__(self, dataset, what: str, epoch: int):
        self.dataset, self.what, self.epoch = dataset, what, epoch

    def __getitem__(self, item):
        number, index = item
        try:
            return self.dataset[index]
        except Exception as err:
            # the data sets' decoders raise ValueError naming the file; OSError: unreadable
            kind = DataFileError if isinstance(err, (ValueError, OSError)) else DataLoadError
            raise kind(f'could not load {self.what} batch {number} of epoch {self.epoch}: '
                       f'{err}') from err

    def __len__(self):
        return len(self.dataset)


class _HeldBatches(Dataset):
    """Item ``n``: batch ``n`` of ``batch_lists`` gathered at once from a data set held on the
    device (``gather``): no per-sample Python, no copy to the device."""

    def __init__(self, held, batch_lists):
        self.held = held
        flat = [index for batch in batch_lists for index in batch]
        self.indices = torch.tensor(flat, dtype=torch.long, device=held.device)  # one copy
        ends = list(itertools.accumulate(len(batch) for batch in batch_lists))
        self.bounds = list(zip([0] + ends[:-1], ends))

    def __getitem__(self, number):
        start, end = self.bounds[number]
        return self.held.gather(self.indices[start:end])

    def __len__(self):
        return len(self.bounds)


def make_loader(dataset, batch_lists, what: str, epoch: int, num_workers: int = 0,
                pin_memory: bool = False, held=None):
    """A ``DataLoader`` that reads exactly ``batch_lists`` (lists of indices), in order;
    ``held``: the data set held on the device (``data.on_device``), whose batches it gathers
    there, one batch per item (the loader stays a DataLoader: Accelerate wraps it and skips
    its first batches on a resume)."""
    if held is not None:
        return DataLoader(_HeldBatches(held, batch_lists), batch_size=1, collate_fn=_only)
    from distill.data import collate_classification
    named = [[(number, index) for index in batch] for number, batch in enumerate(batch_lists)]
    return DataLoader(_NamedSamples(dataset, what, epoch), batch_sampler=named,
                      num_workers=num_workers, collate_fn=collate_classification,
                      pin_memory=pin_memory)


def _only(items):
    return items[0]


def hold_on_device(dataset, device, on_device: bool):
    """The data set held on ``device`` for ``make_loader(held=...)``, or None: with
    ``data.on_device`` (default True) and a data set that can gather a batch at once
    (``gather``, ``held_on``, ``device``: the in-memory CIFAR and Fashion-MNIST sets). Its
    batches hold
    the values the per-sample path gives, bit for bit (``tests/test_classification_engine.py``)."""
    if not on_device or not all(hasattr(dataset, name) for name in ('gather', 'held_on',
                                                                      'device')):
        return None
    return dataset.held_on(device)


class BatchPreparer:
    """Moves a collated batch to the device, augments it (training) and normalises it
    (``channels_last``: in NHWC memory, as ``train.channels_last`` lays out the networks)."""

    def __init__(self, device, augment: dict | None, normalize_cfg: dict | None,
                 channels_last: bool = False):
        self.device, self.channels_last = torch.device(device), channels_last
        augment = dict(augment or {})
        self.padding = int(augment.pop('padding', 0))
        self.flip = bool(augment.pop('flip', False))
        if augment:
            raise KeyError(f'unknown data.augment key(s) {sorted(augment)}; the keys are '
                           f'padding (pixels of zero padding before a random crop) and flip')
        self.mean = tuple((normalize_cfg or {}).get('mean', (0.0, 0.0, 0.0)))
        self.std = tuple((normalize_cfg or {}).get('std', (1.0, 1.0, 1.0)))

    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        images = batch['inputs'].to(self.device, non_blocking=True).float()
        labels = batch['labels'].to(self.device, non_blocking=True).long()
        if generator is not None and (self.padding > 0 or self.flip):
            images = random_crop_flip(images, padding=self.padding, generator=generator,
                                      flip_prob=0.5 if self.flip else 0.0)
        images = normalize(images, self.mean, self.std)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return dict(inputs=images, labels=labels)

    def generator(self, seed: int) -> torch.Generator:
        return seeded_generator(seed, self.device)
