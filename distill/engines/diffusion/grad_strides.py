"""Gradients laid out as their parameters, for DDP's reducer (any Accelerate engine)."""
from __future__ import annotations

import torch
from torch import nn


def standard_grad_strides(params) -> int:
    """Give the gradient of every parameter with a size-1 dimension the parameter's strides.

    Autograd's layout contract ignores the strides of size-1 dimensions, DDP's reducer does
    not: on CPU a 1x1 convolution's weight gradient comes back with strides (C_in, 1, C_in,
    C_in) for sizes (C_out, C_in, 1, 1), and every rank prints "Grad strides do not match
    bucket view strides" (the values are right; the copy into the bucket is slower). A hook
    copies such a gradient into the parameter's layout before it is accumulated. Returns the
    number of parameters hooked."""
    count = 0
    for param in params:
        if not isinstance(param, nn.Parameter) or param.dim() < 2 or 1 not in param.shape:
            continue
        strides = param.stride()

        def relayout(grad, strides=strides):
            if grad.stride() == strides:
                return grad
            return torch.empty_strided(grad.shape, strides, dtype=grad.dtype,
                                       device=grad.device).copy_(grad)
        param.register_hook(relayout)
        count += 1
    return count
