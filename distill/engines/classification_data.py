"""Batches for the classification engine: seeded order, per-process shards, batch augmentation.

Exact resume rests on one rule: every random choice of an epoch is a function of
``(seed, epoch, stream, rank)``. The shuffle order comes from a generator seeded that way, the
augmentation (``random_crop_flip`` on the device, per batch) from another, so epoch ``e`` draws
the same batches whether the run started at epoch 1 or was resumed at epoch ``e``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader

from distill.data.transforms import normalize, random_crop_flip


def derive_seed(seed: int, *parts) -> int:
    """A 63-bit seed from ``seed`` and any ints/strings (``epoch``, a stream name, a rank)."""
    words = [int(seed)]
    for part in parts:
        if isinstance(part, str):
            words.extend(part.encode())
        else:
            words.append(int(part))
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)
    return int(state[0]) & (2**63 - 1)


def seeded_generator(seed: int, device='cpu') -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


class ShardedBatches:
    """The batches of indices one process reads in one epoch.

    ``shuffle=True`` (training): a permutation seeded by ``(seed, epoch, stream)``, the same on
    every process, padded by wrapping around so that it splits evenly, then dealt out
    ``rank::num_processes`` (like ``DistributedSampler``): every process runs the same number of
    steps. ``shuffle=False`` (evaluation): the dataset in order, ``rank::num_processes``, no
    padding, so that the processes together see every sample exactly once.
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
        if not self.shuffle:
            return list(range(self.rank, self.dataset_size, self.num_processes))
        generator = seeded_generator(derive_seed(self.seed, epoch, self.stream))
        order = torch.randperm(self.dataset_size, generator=generator).tolist()
        per_process = math.ceil(self.dataset_size / self.num_processes)
        padded = (order * math.ceil(per_process * self.num_processes / len(order)))
        padded = padded[:per_process * self.num_processes]
        return padded[self.rank::self.num_processes]

    def batches(self, epoch: int) -> list[list[int]]:
        indices = self.indices(epoch)
        batches = [indices[i:i + self.batch_size]
                   for i in range(0, len(indices), self.batch_size)]
        if self.shuffle and len(batches) > 1 and len(batches[-1]) == 1:
            batches.pop()
        return batches

    def steps_per_epoch(self) -> int:
        return len(self.batches(1))


class DataLoadError(RuntimeError):
    """A batch could not be read; the message names the batch, the epoch and the cause."""


def read_batches(loader, what: str, epoch: int):
    """Iterate a loader, turning a failure to read a batch into an error that says which (the
    dataset's own message names the file)."""
    iterator = iter(loader)
    step = 0
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as err:
            raise DataLoadError(f'could not load {what} batch {step} of epoch {epoch}: '
                                f'{err}') from err
        yield batch
        step += 1


def make_loader(dataset, batch_lists, num_workers: int = 0, pin_memory: bool = False):
    """A ``DataLoader`` that reads exactly ``batch_lists`` (lists of indices), in order."""
    from distill.data import collate_classification
    return DataLoader(dataset, batch_sampler=batch_lists, num_workers=num_workers,
                      collate_fn=collate_classification, pin_memory=pin_memory)


class BatchPreparer:
    """Moves a collated batch to the device, augments it (training) and normalises it."""

    def __init__(self, device, augment: dict | None, normalize_cfg: dict | None):
        self.device = torch.device(device)
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
        return dict(inputs=normalize(images, self.mean, self.std), labels=labels)

    def generator(self, seed: int) -> torch.Generator:
        return seeded_generator(seed, self.device)
