"""Operator calls per training step: the device-independent measure of launch-bound cost.

At CIFAR sizes a GPU step is bound by kernel launches, one per operator, so CPU wall time hides
overhead that a GPU shows. The number of ``aten::`` events that ``torch.profiler`` records in one
step (forward, backward and optimiser) matched the step-time ratios measured on an H200 within a
few percent, and it is the same on any machine. Used by ``overhead.py`` and ``sokd_overhead.py``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def count_aten_ops(step: Callable[[], object]) -> int:
    """The number of ``aten::`` operator calls (nested ones included) that ``step()`` makes."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for event in prof.events() if event.name.startswith('aten::'))


def autocast_context(device: torch.device, amp: str):
    """``--amp no|bf16|fp16`` -> an autocast context for the step (a no-op for 'no')."""
    if amp == 'no':
        return torch.autocast(device.type, enabled=False)
    dtype = dict(bf16=torch.bfloat16, fp16=torch.float16)[amp]
    return torch.autocast(device.type, dtype=dtype)
