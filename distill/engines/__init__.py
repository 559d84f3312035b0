"""The engines the task entry points run; the methods never import these.

``core/`` is the Accelerate trainer core (``trainer.py`` with ``task.py``, ``checkpoints.py``,
``optimizers.py``, ``runtime.py``), which ``classification/`` and ``diffusion/`` give their
hooks (``task.py`` / ``train.py`` of each); ``mmengine/`` is the Runner engine of segmentation
and detection. ``core/guards.py`` (the NaN guard), ``core/checkpoints.check_fresh_work_dir``
(a fresh run never writes over an earlier one), ``core/targets.py`` (no output replaces an
input), ``core/work_dir_lock.py`` (one run per work dir) and ``core/cli_errors.py`` (one line
per user error) serve all three; ``core/metrics_file.py`` (metrics.json) serves the two Accelerate
engines."""
from distill.engines.core.guards import NonFiniteLossError, check_finite_terms
from distill.engines.core.metrics_file import MetricsFile

__all__ = ['NonFiniteLossError', 'check_finite_terms', 'MetricsFile']
