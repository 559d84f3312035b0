"""``dam.compile``: DAM's pass functions run through ``torch.compile`` (README, "SoKD").

DAM's pass is some two hundred small tensor operations (the CAM's component, the CenterNet
targets, the losses, the decoding), each a kernel launch on a GPU, where a step of CIFAR-size
networks is bound by launches. ``torch.compile`` fuses them into a few kernels (and on a CPU
into a few C++ loops): the pass's operator calls drop by about two thirds
(``benchmarks/sokd_overhead.py --dam-compile``). The price: compiling, tens of seconds in the
first steps of each process (and again for each new input shape, up to dynamo's recompile
limit, after which the new shapes run eagerly), and a C++ compiler on a CPU or Triton on a GPU.
Hence opt-in, as ``torch.compile`` is in mmengine's Runner (``compile``) and in Transformers'
Trainer (``torch_compile``).

The compiled function gives the eager one's values up to float32 rounding (the fused kernels
sum in another order; ``tests/test_sokd_dam_compile.py``). Where compiling fails (no compiler,
an unsupported operation), the pass warns once and runs eagerly; an error that the eager
function raises too is the function's own and is raised.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

# dynamo traces through the lru_cache of the cached constants (dam_constants.const), which is
# what is wanted here: they become constants of the compiled graph
_LRU_CACHE_NOTE = 'Dynamo detected a call to a `functools.lru_cache`'


class CompiledOrEager:
    """``fn`` through ``torch.compile`` (built at the first call, shapes static), falling
    back to ``fn`` itself for good if compiling or running the compiled code fails."""

    def __init__(self, fn: Callable):
        self.fn, self.compiled, self.failed = fn, None, False

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.fn(*args, **kwargs)
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, dynamic=False)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings('ignore', message=_LRU_CACHE_NOTE)
                return self.compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any compile failure: eager, below
            result = self.fn(*args, **kwargs)  # the function's own errors are raised here
            self.failed = True
            warnings.warn(f'dam.compile: torch.compile of {self.fn.__name__} failed '
                          f'({type(error).__name__}: {str(error).splitlines()[0][:200]}); '
                          f'DAM runs it eagerly', RuntimeWarning, stacklevel=2)
            return result


_COMPILED: dict = {}


def compiled(fn: Callable) -> CompiledOrEager:
    """The one ``CompiledOrEager`` of ``fn`` in this process (dynamo's cache is per function
    anyway; one wrapper keeps one fallback decision)."""
    if fn not in _COMPILED:
        _COMPILED[fn] = CompiledOrEager(fn)
    return _COMPILED[fn]
