"""Evaluation of a distilled UNet: denoising error, teacher agreement, FID (optional).

* ``denoising_mse``: MSE of the prediction to its target (epsilon / v / x0) on held-out
  images with fixed noise, per timestep bucket (``t`` in ``[k T/n, (k+1) T/n)``).
* ``ddim_sample`` / ``teacher_agreement``: DDIM from the same noise for teacher and student;
  the agreement is the MSE between the final samples (in [-1, 1]).
* ``fid``: torchmetrics' FID with a local Inception weight file; nothing is downloaded, and
  without torchmetrics or a weight file it returns None and says why.
"""
from __future__ import annotations

import math

import torch

from distill.adapters.diffusers import DiffusionAdapter


def _fixed_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def denoising_mse(model, adapter: DiffusionAdapter, images: torch.Tensor, num_buckets: int = 4,
                  seed: int = 0, batch_size: int = 64, encoder_hidden_states=None) -> dict:
    """``{'t000-249': mse, ..., 'mean': mse}`` over ``images`` (N,C,H,W) in [-1, 1].

    The same images, noise and timesteps are used for every model given the same seed, so
    teacher and student numbers are directly comparable.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_steps = adapter.num_train_timesteps
    edges = [round(k * total_steps / num_buckets) for k in range(num_buckets + 1)]
    generator = _fixed_generator(seed)
    result = {}
    try:
        for low, high in zip(edges[:-1], edges[1:]):
            errors = []
            for start in range(0, len(images), batch_size):
                clean = images[start:start + batch_size].to(device).float()
                noise = torch.randn(clean.shape, generator=generator).to(device)
                timesteps = torch.randint(low, high, (clean.shape[0],),
                                          generator=generator).to(device)
                noisy = adapter.noise_scheduler.add_noise(clean, noise, timesteps)
                states = _expand(encoder_hidden_states, clean.shape[0], device)
                prediction = adapter.predict(model, noisy, timesteps, states)
                target = adapter.target(clean, noise, timesteps)
                errors.append(((prediction - target) ** 2).mean(dim=(1, 2, 3)))
            result[f't{low:03d}-{high - 1:03d}'] = float(torch.cat(errors).mean())
    finally:
        model.train(was_training)
    result['mean'] = sum(result.values()) / num_buckets
    return result


def _expand(states, batch: int, device):
    if states is None:
        return None
    return states.to(device).expand(batch, *states.shape[1:])


@torch.no_grad()
def ddim_sample(model, scheduler_config, noise: torch.Tensor, num_inference_steps: int = 20,
                encoder_hidden_states=None, adapter: DiffusionAdapter | None = None):
    """Deterministic DDIM (eta = 0) from ``noise``; returns the final samples, float32."""
    from diffusers import DDIMScheduler
    scheduler = DDIMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(num_inference_steps)
    adapter = adapter or DiffusionAdapter(noise_scheduler=scheduler)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sample = noise.to(device).float() * scheduler.init_noise_sigma
    states = _expand(encoder_hidden_states, sample.shape[0], device)
    try:
        for timestep in scheduler.timesteps:
            timesteps = torch.full((sample.shape[0],), int(timestep), device=device)
            prediction = adapter.predict(model, sample, timesteps, states)
            sample = scheduler.step(prediction, timestep, sample).prev_sample
    finally:
        model.train(was_training)
    return sample.float()


def teacher_agreement(teacher_samples: torch.Tensor, student_samples: torch.Tensor) -> float:
    """MSE between the final samples of teacher and student from the same noise, clamped to
    the data range."""
    return float(((teacher_samples.clamp(-1, 1) - student_samples.clamp(-1, 1)) ** 2).mean())


def image_grid(rows: list[torch.Tensor], min_tile: int = 64, labels=None,
               label_width: int = 120):
    """One row of images per tensor (N,C,H,W) in [-1, 1] (teacher over student) -> an RGB PIL
    image, laid out by diffusers' ``make_image_grid``. Small images are first enlarged (nearest,
    where ``make_image_grid``'s ``resize`` would blur them) to at least ``min_tile`` pixels;
    latents show their first three channels. ``labels``: one name per row, written in a white
    margin of ``label_width`` pixels on the left."""
    from diffusers.utils import make_image_grid
    from PIL import Image, ImageDraw
    tiles = []
    for row in rows:
        row = ((row.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
        row = (row.expand(-1, 3, -1, -1) if row.shape[1] == 1 else row[:, :3])
        tiles += [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in row]
    scale = max(1, min_tile // tiles[0].width)
    if scale > 1:
        tiles = [tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST)
                 for tile in tiles]
    grid = make_image_grid(tiles, rows=len(rows), cols=len(tiles) // len(rows))
    if not labels:
        return grid
    if len(labels) != len(rows):
        raise ValueError(f'{len(labels)} labels for {len(rows)} rows')
    canvas = Image.new('RGB', (grid.width + label_width, grid.height), 'white')
    canvas.paste(grid, (label_width, 0))
    draw, tile = ImageDraw.Draw(canvas), grid.height // len(rows)
    for index, label in enumerate(labels):
        draw.text((4, index * tile + tile // 2 - 6), str(label), fill='black')
    return canvas


def fid(real: torch.Tensor, fake: torch.Tensor, inception_weights: str | None):
    """(FID, None) with torchmetrics and a local Inception weight file, else (None, reason)."""
    if not inception_weights:
        return None, 'no local Inception weight file given (evaluation.inception_weights)'
    import os
    if not os.path.isfile(inception_weights):
        return None, f'Inception weight file {inception_weights!r} not found'
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        return None, 'torchmetrics (with torch-fidelity) is not installed'
    metric = FrechetInceptionDistance(feature=2048, normalize=True,
                                      feature_extractor_weights_path=inception_weights)
    to_unit = lambda images: ((images.float().cpu().clamp(-1, 1) + 1) / 2)[:, :3]
    metric.update(to_unit(real), real=True)
    metric.update(to_unit(fake), real=False)
    value = float(metric.compute())
    return (value if math.isfinite(value) else None), None
