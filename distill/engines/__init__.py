"""The engines the task entry points run; the methods never import these.

``trainer.py`` (with ``task.py``, ``checkpoints.py``, ``optimizers.py``, ``runtime.py``) is the
Accelerate trainer core; ``classification*.py`` and ``diffusion*.py`` give it their hooks;
``mmengine/`` is the Runner engine of segmentation and detection. ``guards.py`` (the NaN guard)
and ``metrics_file.py`` are shared by all three."""
from distill.engines.guards import NonFiniteLossError, check_finite_terms
from distill.engines.metrics_file import MetricsFile

__all__ = ['NonFiniteLossError', 'check_finite_terms', 'MetricsFile']
