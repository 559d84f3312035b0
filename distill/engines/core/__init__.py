"""The Accelerate trainer core shared by the classification and diffusion engines: the loop
(``trainer.py``), what a task gives it (``task.py``), checkpoints, optimisers and schedules,
the accelerator and logs (``runtime.py``), the NaN guard (``guards.py``), ``metrics.json``, the
command-line options and the one-line user errors of every entry point, and the rules every
engine follows for what it writes (``targets.py``) and where (``work_dir_lock.py``)."""
