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


class EpochShuffleSampler(Sampler):
    """A permutation that is a function of ``(seed, epoch)`` only: the order after a resume is
    the order of the uninterrupted run, whatever the global RNG did in between."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())


def random_flip(pixel_values: torch.Tensor, generator: torch.Generator | None,
                probability: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with ``probability``, drawn from ``generator`` (CPU)."""
    flips = torch.rand(pixel_values.shape[0], generator=generator) < probability
    flips = flips.to(pixel_values.device).view(-1, 1, 1, 1)
    return torch.where(flips, pixel_values.flip(-1), pixel_values)
