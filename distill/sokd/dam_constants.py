"""Small device constants for DAM's batched code (README, "SoKD"): a Python number in a tensor
operation is wrapped and converted on every call (four more dispatcher calls each, which a
launch-bound GPU step waits on), so the hot path takes its numbers as tensors made once per
device."""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=256)
def const(values, device: torch.device, dtype=torch.float32, shape: tuple | None = None
          ) -> torch.Tensor:
    """A constant made once per device: a number (0-dim) or a tuple, reshaped to ``shape`` if
    given (a view made in the hot path costs calls too). A plain tensor even when first asked
    for under ``inference_mode`` (autograd may save it later)."""
    with torch.inference_mode(False):
        value = torch.tensor(values, dtype=dtype, device=device)
        return value if shape is None else value.reshape(shape).contiguous()


@functools.lru_cache(maxsize=64)
def cell_grid(length: int, device: torch.device) -> torch.Tensor:
    """``0, 1, ..., length - 1`` as floats (cell indices)."""
    with torch.inference_mode(False):
        return torch.arange(length, dtype=torch.float32, device=device)


def as_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.float32 else tensor.float()


@functools.lru_cache(maxsize=16)
def cell_xy(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(HW, 2): each flat cell index's (column, row), as floats."""
    with torch.inference_mode(False):
        index = torch.arange(height * width, device=device)
        return torch.stack([index % width, index // width], dim=1).float()
