"""The order in which a run reads its data, one rule for every engine (README, "Exact resume"):

* ``derive_seed`` / ``seeded_permutation``: every random choice about the data is a function of
  ``(seed, epoch, stream[, step, rank])``, never of the global RNG, so epoch ``e`` reads the same
  batches whether the run started at epoch 1 or was resumed there;
* ``shard``: each process's share of an order every process holds alike, ``rank::processes``,
  with the order first made to fit the processes in one of three ways, chosen by what the
  reader needs (training: equal shares; evaluation: every item exactly once).

The classification engine (``ShardedBatches``), the diffusion engine (``EpochShuffleSampler``)
and the mmengine SoKD search (``ShuffledTrainBatches``) all call these.
"""
from __future__ import annotations

import math

import numpy as np

SHARD_FITS = ('exact', 'pad', 'drop')


def derive_seed(seed: int, *parts) -> int:
    """A 63-bit seed from ``seed`` and any ints/strings (``epoch``, a stream name, a rank)."""
    words = [int(seed)]
    for part in parts:
        words.extend(part.encode() if isinstance(part, str) else [int(part)])
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)
    return int(state[0]) & (2**63 - 1)


def seeded_permutation(size: int, seed: int, *parts) -> list[int]:
    """``randperm(size)`` from a generator seeded by ``derive_seed(seed, *parts)``: the shuffle
    of an epoch as a function of (seed, epoch, stream) only, whatever the global RNG did."""
    import torch
    generator = torch.Generator().manual_seed(derive_seed(seed, *parts))
    return torch.randperm(size, generator=generator).tolist()


def shard(order: list, rank: int, num_processes: int, fit: str = 'exact',
          multiple: int | None = None) -> list:
    """Process ``rank``'s share ``fitted[rank::num_processes]`` of ``order``, with ``fitted``:

    * ``'exact'``: ``order`` itself: together the processes read every item exactly once
      (evaluation); shares differ in length by one at most;
    * ``'pad'``: ``order`` repeated from its start up to a multiple of ``multiple`` items
      (default ``num_processes``): equal shares, every item read at least once (training, as
      torch's ``DistributedSampler`` pads);
    * ``'drop'``: ``order`` cut to a multiple of ``multiple`` (the diffusion engine: whole
      global batches, ``batch_size * num_processes``): equal shares, the rest unread.
    """
    if fit not in SHARD_FITS:
        raise ValueError(f'fit is one of {SHARD_FITS}, got {fit!r}')
    if not 0 <= rank < num_processes:
        raise ValueError(f'rank {rank} of {num_processes} processes')
    multiple = num_processes if multiple is None else int(multiple)
    if multiple % num_processes:
        raise ValueError(f'multiple ({multiple}) must be a multiple of the number of '
                         f'processes ({num_processes}), or the shares would differ')
    order = list(order)
    if fit == 'pad' and order:
        length = math.ceil(len(order) / multiple) * multiple
        order = (order * math.ceil(length / len(order)))[:length]
    elif fit == 'drop':
        order = order[:len(order) // multiple * multiple]
    return order[rank::num_processes]
