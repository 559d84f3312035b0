"""Pixels <-> latents for a latent UNet: with ``vae=dict(pretrained=DIR, subfolder='vae')``
training images are encoded to scaled latents (frozen ``AutoencoderKL``, posterior mode) and
samples decoded for grids and FID; without it, pixels pass through.
"""
from __future__ import annotations

import torch


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
