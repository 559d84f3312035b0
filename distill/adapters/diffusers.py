"""diffusers UNets (``UNet2DModel``, ``UNet2DConditionModel``): denoising as the task.

Teacher and student noise-predict on the same noisy images (or latents), timesteps and
conditioning, drawn once per step by ``prepare``. The task loss is the denoising loss of the
noise scheduler's ``prediction_type`` (epsilon, v-prediction or sample); logits KD becomes
output matching, ``MSE(student prediction, sg(teacher prediction))`` (README, "Loss terms in
the logs").
Features are taps on UNet blocks: ``down_blocks.i`` return ``(hidden, residuals)`` so they take
``index=0``; ``mid_block`` and ``up_blocks.i`` return tensors.

Batch: ``dict(pixel_values=Tensor[B,C,H,W] in [-1, 1], encoder_hidden_states=Tensor[B,L,D]
(conditional UNets), generator=torch.Generator (optional))``.

The UNet builders (``type='UNet2DModel'`` / ``'UNet2DConditionModel'``) are in the model zoo,
``distill/models/unets.py``, so a config builds its networks whatever it builds first.
"""
from __future__ import annotations

import diffusers
import torch
import torch.nn.functional as F
from torch import nn

from distill.adapters.base import Adapter, ModelOutput, probe_size
from distill.models.unets import plain_config
from distill.registry import ADAPTERS

PREDICTION_TYPES = ('epsilon', 'v_prediction', 'sample')


def build_noise_scheduler(cfg):
    """A diffusers scheduler from an instance, ``dict(type='DDPMScheduler', **config)`` or
    ``dict(type=..., pretrained=DIR, subfolder='scheduler')`` (local only)."""
    if not isinstance(cfg, dict):
        return cfg
    cfg = dict(cfg)
    cls = getattr(diffusers, cfg.pop('type', 'DDPMScheduler'))
    pretrained = cfg.pop('pretrained', None)
    if pretrained:
        return cls.from_pretrained(pretrained, subfolder=cfg.pop('subfolder', None),
                                   local_files_only=True, **cfg)
    return cls(**{k: plain_config(v) for k, v in cfg.items()})


def model_sample_size(model: nn.Module, default: int = 32) -> int:
    """Height of the model's training input from its diffusers config (``sample_size``)."""
    size = getattr(getattr(model, 'config', None), 'sample_size', None) or default
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def is_conditional(model: nn.Module) -> bool:
    """A UNet that takes ``encoder_hidden_states`` (cross-attention)."""
    config = getattr(model, 'config', None)
    return getattr(config, 'cross_attention_dim', None) is not None


# --------------------------------------------------------------------------------- adapter
@ADAPTERS.register_module()
class DiffusionAdapter(Adapter):
    """Denoising task for diffusers UNets; the output is the predicted noise (or v, or x0).

    Args:
        noise_scheduler: the training noise scheduler (config dict or instance); its
            ``prediction_type`` picks the target.
        probe_input_size: probe height (tap shapes, ``taps='auto'``); the engine passes the
            student's ``sample_size``. ``input_size``, its name in 0.1.0, still works with a
            ``FutureWarning``.
        probe_sequence_length: tokens of the zero ``encoder_hidden_states`` in probes.
        generator: a ``torch.Generator`` for noise and timesteps (else ``batch['generator']``,
            else the global RNG); drawn on its own device, then moved to the batch's.
    """

    def __init__(self, noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=1000),
                 probe_input_size: int | None = None, probe_sequence_length: int = 4,
                 generator: torch.Generator | None = None, *, input_size: int | None = None):
        self.noise_scheduler = build_noise_scheduler(noise_scheduler)
        self.prediction_type = self.noise_scheduler.config.get('prediction_type', 'epsilon')
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f'unknown prediction_type {self.prediction_type!r} in the noise '
                             f'scheduler config; expected one of {PREDICTION_TYPES}')
        self.num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        self.probe_input_size = probe_size(probe_input_size, input_size, 32, 'DiffusionAdapter')
        self.probe_sequence_length = probe_sequence_length
        self.generator = generator

    # ------------------------------------------------------------------ one step
    def prepare(self, batch):
        """Draw noise and timesteps once; both networks then see the same noisy input."""
        clean = batch['pixel_values']
        generator = batch.get('generator') or self.generator
        draw_device = generator.device if generator is not None else clean.device
        noise = torch.randn(clean.shape, generator=generator, device=draw_device,
                            dtype=torch.float32).to(clean.device)
        timesteps = torch.randint(0, self.num_train_timesteps, (clean.shape[0],),
                                  generator=generator, device=draw_device).to(clean.device)
        clean = clean.float()
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        return dict(batch, noisy=noisy, noise=noise, timesteps=timesteps,
                    target=self.target(clean, noise, timesteps))

    def target(self, clean, noise, timesteps):
        if self.prediction_type == 'epsilon':
            return noise
        if self.prediction_type == 'v_prediction':
            return self.noise_scheduler.get_velocity(clean, noise, timesteps)
        return clean

    def predict(self, model: nn.Module, noisy, timesteps, encoder_hidden_states=None,
                class_labels=None) -> torch.Tensor:
        """The model's prediction in float32; inputs are cast to the model's dtype (a frozen
        teacher may be in half precision)."""
        dtype = next(model.parameters()).dtype
        kwargs = {}
        if encoder_hidden_states is not None:
            kwargs['encoder_hidden_states'] = encoder_hidden_states.to(dtype)
        elif is_conditional(model):
            raise ValueError(f'{type(model).__name__} is conditional (cross_attention_dim='
                             f'{model.config.cross_attention_dim}): the batch needs '
                             f"'encoder_hidden_states'")
        if class_labels is not None:
            kwargs['class_labels'] = class_labels
        output = model(noisy.to(dtype), timesteps, **kwargs)
        prediction = output.sample if hasattr(output, 'sample') else output[0]
        return prediction.float()

    def run(self, model: nn.Module, batch, compute_loss: bool = True) -> ModelOutput:
        if 'noisy' not in batch:
            raise KeyError('DiffusionAdapter.run needs a prepared batch (adapter.prepare)')
        prediction = self.predict(model, batch['noisy'], batch['timesteps'],
                                  batch.get('encoder_hidden_states'), batch.get('class_labels'))
        task_loss = F.mse_loss(prediction, batch['target'].float()) if compute_loss else None
        return ModelOutput(outputs=prediction, task_loss=task_loss)

    def output_loss(self, learner, target, batch, temperature):
        """Output matching: MSE to the other network's detached prediction (no temperature)."""
        return F.mse_loss(learner.outputs.float(), target.outputs.detach().float())

    # ------------------------------------------------------------------ probes
    def probe(self, model: nn.Module) -> None:
        param = next(model.parameters())
        size = self.probe_input_size
        channels = model.config.in_channels
        sample = torch.zeros(2, channels, size, size, device=param.device, dtype=param.dtype)
        timesteps = torch.full((2,), self.num_train_timesteps // 2, device=param.device)
        states = None
        if is_conditional(model):
            dim = model.config.cross_attention_dim
            dim = dim[0] if isinstance(dim, (tuple, list)) else dim
            states = torch.zeros(2, self.probe_sequence_length, dim, device=param.device,
                                 dtype=param.dtype)
        self.predict(model, sample, timesteps, states)

    def input_size(self, batch):
        return tuple(batch['pixel_values'].shape[-2:])
