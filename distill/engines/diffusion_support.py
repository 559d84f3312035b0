"""Small pieces of the diffusion engine: conditioning, the optional VAE, tracker config.

* ``Conditioning``: the ``encoder_hidden_states`` a ``UNet2DConditionModel`` needs. This
  engine trains unconditionally (images, no captions), so it is one fixed sequence for every
  image: a local tensor file (e.g. the empty-prompt embedding of the teacher's text encoder,
  saved with ``torch.save``; loaded with ``weights_only=True``) or zeros.
* ``LatentCodec``: with ``vae=dict(pretrained=DIR, subfolder='vae')`` images are encoded to
  scaled latents for a latent UNet (frozen VAE, posterior mode), and samples decoded for grids;
  without it, pixels pass through.
"""
from __future__ import annotations

import torch
from torch import nn

from distill.adapters.diffusers import is_conditional
from distill.checkpoint import load_checkpoint


class Conditioning:
    """``conditioning=dict(embeddings=PATH)`` or ``dict(sequence_length=77)`` (zeros)."""

    def __init__(self, cfg, model):
        self.states = None
        if not is_conditional(model):
            return
        cfg = dict(cfg or {})
        dim = model.config.cross_attention_dim
        dim = dim[0] if isinstance(dim, (tuple, list)) else dim
        if cfg.get('embeddings'):
            states = load_checkpoint(cfg['embeddings'])
            if not isinstance(states, torch.Tensor):
                raise TypeError(f"conditioning.embeddings {cfg['embeddings']!r} must hold one "
                                f'tensor (L, D) or (1, L, D), got {type(states).__name__}')
            states = states if states.dim() == 3 else states[None]
            if states.dim() != 3 or states.shape[0] != 1 or states.shape[-1] != dim:
                raise ValueError(f"conditioning.embeddings {cfg['embeddings']!r} has shape "
                                 f'{tuple(states.shape)}; the UNet needs (1, L, {dim})')
        else:
            states = torch.zeros(1, int(cfg.get('sequence_length', 77)), dim)
        self.states = states.float()

    def batch(self, size: int, device):
        if self.states is None:
            return None
        return self.states.to(device).expand(size, -1, -1)


class LatentCodec:
    """Pixels <-> scaled latents through a frozen local ``AutoencoderKL``, or identity."""

    def __init__(self, cfg, dtype=torch.float32):
        self.vae = None
        if not cfg:
            return
        from diffusers import AutoencoderKL
        cfg = dict(cfg)
        self.vae = AutoencoderKL.from_pretrained(cfg['pretrained'],
                                                 subfolder=cfg.get('subfolder'),
                                                 local_files_only=True)
        self.vae.requires_grad_(False).eval()
        if dtype != torch.float32:
            self.vae.to(dtype)
        self.scaling_factor = float(self.vae.config.scaling_factor)

    def to(self, device):
        if self.vae is not None:
            self.vae.to(device)
        return self

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return pixel_values
        dtype = next(self.vae.parameters()).dtype
        posterior = self.vae.encode(pixel_values.to(dtype)).latent_dist
        return posterior.mode().float() * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return latents
        dtype = next(self.vae.parameters()).dtype
        return self.vae.decode((latents / self.scaling_factor).to(dtype)).sample.float()


def config_for_trackers(cfg) -> dict:
    """Scalars of the config, flattened (``distiller.loss_weights.co``): TensorBoard's hparams
    take only numbers, strings and booleans."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f'{prefix}.{key}' if prefix else str(key), item)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix] = value
        elif value is None:
            flat[prefix] = 'None'
    walk('', cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg))
    return flat


def standard_grad_strides(params) -> int:
    """Give the gradient of every parameter with a size-1 dimension the parameter's strides.

    Autograd's layout contract ignores the strides of size-1 dimensions, DDP's reducer does
    not: on CPU a 1x1 convolution's weight gradient comes back with strides (C_in, 1, C_in,
    C_in) for sizes (C_out, C_in, 1, 1), and every rank prints "Grad strides do not match
    bucket view strides" (the values are right; the copy into the bucket is slower). A hook
    copies such a gradient into the parameter's layout before it is accumulated. Returns the
    number of parameters hooked."""
    count = 0
    for param in params:
        if not isinstance(param, nn.Parameter) or param.dim() < 2 or 1 not in param.shape:
            continue
        strides = param.stride()

        def relayout(grad, strides=strides):
            if grad.stride() == strides:
                return grad
            return torch.empty_strided(grad.shape, strides, dtype=grad.dtype,
                                       device=grad.device).copy_(grad)
        param.register_hook(relayout)
        count += 1
    return count
