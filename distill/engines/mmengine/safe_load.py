"""Resume mmengine checkpoints under torch >= 2.6, where ``torch.load`` is ``weights_only``.

mmengine 0.10.7 calls ``torch.load(path, map_location=...)`` with torch's new default
``weights_only=True``, which refuses mmengine's own checkpoints (``Weights only load failed ...
HistoryBuffer``). Rather than turning ``weights_only`` off (which would run whatever code the
file names), we allow-list exactly the globals a Runner checkpoint contains. Saving a real
checkpoint and asking ``torch.serialization.get_unsafe_globals_in_checkpoint`` gives:

* ``mmengine.logging.history_buffer.HistoryBuffer`` (the ``message_hub`` logs);
* ``numpy.ndarray``, ``numpy.dtype``, ``numpy._core.multiarray._reconstruct`` and
  ``numpy._core.multiarray.scalar``: the numpy arrays inside those buffers and numpy scalars in
  ``meta`` / runtime info (also under their numpy 1.x name ``numpy.core.multiarray``), and
  the numpy 2 dtype classes those dtypes are built as (``numpy.dtypes.Float64DType`` ...),
  which the unpickler meets when it restores a dtype's state;
* ``builtins.getattr``: ``HistoryBuffer.__getstate__`` pickles its statistics methods
  (``HistoryBuffer.min`` ...) as ``getattr(HistoryBuffer, 'min')``. A general ``getattr`` is
  not safe to allow, so that name is bound to ``history_buffer_method``, which only ever returns
  one of those methods.
"""
from __future__ import annotations

import pickle

import torch


def history_buffer_method(owner, name: str):
    """The stand-in for ``getattr`` while unpickling: ``HistoryBuffer``'s statistics only."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if owner is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'checkpoint asks for getattr({owner!r}, {name!r}): only '
                                 f'HistoryBuffer statistics methods are allowed')


def mmengine_checkpoint_globals() -> list:
    """The allow-list entries (objects, or ``(object, 'pickled.name')`` pairs)."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    multiarray = (np._core if hasattr(np, '_core') else np.core).multiarray
    entries = [HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
               (history_buffer_method, 'builtins.getattr')]
    # unpickling a dtype builds an instance of its numpy 2 class (numpy.dtypes.Float64DType)
    entries += sorted({type(np.dtype(name)) for name in NUMPY_DTYPE_NAMES}, key=str)
    # a checkpoint written under numpy 1.x names the same functions numpy.core.multiarray.*
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries += [(multiarray._reconstruct, f'{module}._reconstruct'),
                    (multiarray.scalar, f'{module}.scalar')]
    return entries


NUMPY_DTYPE_NAMES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
                     'uint64', 'float16', 'float32', 'float64')

_ALLOWED = False


def allow_mmengine_checkpoint_globals() -> None:
    """Add those entries to torch's weights-only allow-list, once per process.

    Call it before ``Runner.resume`` / ``load_checkpoint`` (the train entry points and
    ``DistillationModel`` do)."""
    global _ALLOWED
    if _ALLOWED or not hasattr(torch.serialization, 'add_safe_globals'):
        return  # torch < 2.4 has no weights-only default to work around
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    _ALLOWED = True
