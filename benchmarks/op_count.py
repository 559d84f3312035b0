"""Operator calls per training step: the device-independent measure of launch-bound cost.

At CIFAR sizes a GPU step is bound by kernel launches, one per operator, so CPU wall time hides
overhead that a GPU shows. The number of ``aten::`` events that ``torch.profiler`` records in one
step (forward, backward and optimiser) matched the step-time ratios measured on an H200 within a
few percent, and it is the same on any machine. Used by ``overhead.py`` and ``sokd_overhead.py``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def _inside_foreach(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith('aten::_foreach_'):
            return True
        parent = parent.cpu_parent
    return False


def count_aten_ops(step: Callable[[], object]) -> int:
    """The number of ``aten::`` operator calls (nested ones included) that ``step()`` makes.

    Calls made inside an ``aten::_foreach_*`` op are not counted: a CPU runs a foreach op as a
    loop of per-tensor ops, a GPU as a few fused kernels, and the count stands for the GPU.
    The benchmarks build their optimisers with ``foreach=True`` (the CUDA default) so that
    both devices run the same code."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for event in prof.events()
               if event.name.startswith('aten::') and not _inside_foreach(event))


def count_cuda_kernels(step: Callable[[], object]) -> int:
    """The number of work items (kernels, copies, memsets) that ``step()`` puts on the GPU:
    what the operator count stands in for. Only meaningful on a CUDA device; the optimisers'
    ``foreach`` paths, per-tensor loops on a CPU, are a few fused kernels there."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return sum(1 for event in prof.events() if event.device_type == DeviceType.CUDA)


def autocast_context(device: torch.device, amp: str):
    """``--amp no|bf16|fp16`` -> an autocast context for the step (a no-op for 'no')."""
    if amp == 'no':
        return torch.autocast(device.type, enabled=False)
    dtype = dict(bf16=torch.bfloat16, fp16=torch.float16)[amp]
    return torch.autocast(device.type, dtype=dtype)
