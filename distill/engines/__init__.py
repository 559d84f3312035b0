"""The engines the task entry points run; the methods never import these.

``trainer.py`` (with ``task.py``, ``checkpoints.py``, ``optimizers.py``, ``runtime.py``) is the
Accelerate trainer core; ``classification*.py`` and ``diffusion*.py`` give it their hooks;
``mmengine/`` is the Runner engine of segmentation and detection. ``guards.py`` (the NaN guard),
``checkpoints.check_fresh_work_dir`` (a fresh run never writes over an earlier one) and
``cli_errors.py`` (one line per user error) serve all three; ``metrics_file.py`` (metrics.json)
serves the two Accelerate engines."""
from distill.engines.guards import NonFiniteLossError, check_finite_terms
from distill.engines.metrics_file import MetricsFile

__all__ = ['NonFiniteLossError', 'check_finite_terms', 'MetricsFile']
