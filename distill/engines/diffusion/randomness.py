"""The diffusion engine's random choices about the data, reproducible across a resume.

* ``EpochShuffleSampler``: the order of the training images, a function of ``(seed, epoch)``
  only (torch's ``RandomSampler`` draws from the global generator, which evaluation and
  sampling also advance);
* ``random_flip``: the left-right flips, drawn from the engine's per-process noise generator,
  which its checkpoints save.

The datasets themselves (``distill.data.images``) are pure functions of the index.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler

from distill.engines.core.data_order import seeded_permutation, shard


class EpochShuffleSampler(Sampler):
    """This process's share of a permutation that is a function of ``(seed, epoch)`` only
    (``derive_seed(seed, epoch, 'shuffle')``, the trainer core's seeding rule): the order after
    a resume is the order of the uninterrupted run, whatever the global RNG did in between.

    The permutation is cut to a whole number of global batches (``batch_size`` images on each
    of ``num_processes``) and process ``rank`` takes every ``num_processes``-th image of it
    (``shard(..., 'drop')``, the core's rule), so every process has the same number of batches
    (the trainer's loader is per process)."""

    def __init__(self, num_samples: int, seed: int = 0, epoch: int = 1, shuffle: bool = True,
                 batch_size: int = 1, rank: int = 0, num_processes: int = 1):
        self.num_samples, self.seed, self.epoch, self.shuffle = num_samples, seed, epoch, shuffle
        self.rank, self.num_processes = rank, num_processes
        self.per_global_batch = batch_size * num_processes

    def __len__(self):
        return self.num_samples // self.per_global_batch * self.per_global_batch \
            // self.num_processes

    def __iter__(self):
        if self.shuffle:
            order = seeded_permutation(self.num_samples, self.seed, self.epoch, 'shuffle')
        else:
            order = range(self.num_samples)
        return iter(shard(order, self.rank, self.num_processes, 'drop', self.per_global_batch))


def random_flip(pixel_values: torch.Tensor, generator: torch.Generator | None,
                probability: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with ``probability``, drawn from ``generator`` (CPU)."""
    flips = torch.rand(pixel_values.shape[0], generator=generator) < probability
    flips = flips.to(pixel_values.device).view(-1, 1, 1, 1)
    return torch.where(flips, pixel_values.flip(-1), pixel_values)
