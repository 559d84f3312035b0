"""The Accelerate trainer core shared by the classification and diffusion engines: the loop
(``trainer.py``), what a task gives it (``task.py``), checkpoints, optimisers and schedules,
the accelerator and logs (``runtime.py``), the NaN guard (``guards.py``), ``metrics.json``, the
command-line options and the one-line user errors of every entry point."""
