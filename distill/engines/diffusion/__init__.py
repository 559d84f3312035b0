"""The diffusion engine: ``train.py`` (what ``tasks/diffusion/train.py`` runs), its config and
the diffusers example's flags (``config.py``), evaluation and FID (``eval.py``), the output
pipeline folder (``output.py``), the inputs of a step (``latents.py``, ``conditioning.py``,
``randomness.py``) and the DDP gradient strides (``grad_strides.py``)."""
