"""A frozen teacher's outputs on one batch, kept from SoKD's arch step for the training forward
that follows on the same batch (both engines run the arch step, then the step, on one batch),
so the teacher runs once per step.

The key is the batch's content, compared by value: not the dict or tensor objects, which
mmengine and DDP rebuild between the two calls, nor their storage. The kept batch is a copy, so
a batch changed in place after the arch step misses. An entry serves one forward.
"""
from __future__ import annotations

import torch


def same_content(first, second) -> bool:
    """Whether two batches hold equal values: tensors by shape, dtype, device and value;
    dicts, lists and tuples item by item; anything else by ``==`` (or identity)."""
    if torch.is_tensor(first) or torch.is_tensor(second):
        return (torch.is_tensor(first) and torch.is_tensor(second)
                and first.shape == second.shape and first.dtype == second.dtype
                and first.device == second.device and torch.equal(first, second))
    if isinstance(first, dict):
        return (isinstance(second, dict) and first.keys() == second.keys()
                and all(same_content(first[key], second[key]) for key in first))
    if isinstance(first, (list, tuple)):
        return (type(first) is type(second) and len(first) == len(second)
                and all(same_content(a, b) for a, b in zip(first, second)))
    if first is second:
        return True
    try:
        return bool(first == second)
    except Exception:  # objects without a plain boolean equality (arrays, data samples)
        return False


def _copy(batch):
    """The batch with its tensors cloned (containers rebuilt, other leaves shared)."""
    if torch.is_tensor(batch):
        return batch.detach().clone()
    if isinstance(batch, dict):
        return {key: _copy(value) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_copy(value) for value in batch)
    return batch


class TeacherCache:
    """``keep(batch, outputs)`` after a frozen teacher ran on a prepared batch; ``take(batch)``
    gives those outputs once if ``batch`` holds the same values, else None."""

    def __init__(self):
        self._entry = None

    def keep(self, batch, outputs) -> None:
        self._entry = (_copy(batch), outputs)

    def take(self, batch):
        entry, self._entry = self._entry, None
        if entry is None or not same_content(entry[0], batch):
            return None
        return entry[1]

    def clear(self) -> None:
        self._entry = None
