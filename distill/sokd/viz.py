"""Pictures of SoKD: DAM's boxes and masks of teacher and student, and the learnt DAFA policy.

    predictions = distiller.dam_predictions(batch)          # SoKD, no gradient
    draw_dam_boxes(batch['inputs'], predictions, 'dam.png')
    draw_policy(distiller.policy(), 'policy.png')
    record_policy(distiller, record, epoch, work_dir)   # engines: metrics, scalars, chart

matplotlib (the ``cls`` extra) is imported when a picture is drawn.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from distill.viz import pyplot, save_figure


def _displayable(image: torch.Tensor):
    """(3,H,W) -> (H,W,3) floats in [0, 1], stretched per image (inputs may be normalised)."""
    image = image.detach().float().cpu()
    low, high = image.min(), image.max()
    return ((image - low) / (high - low).clamp_min(1e-8)).permute(1, 2, 0).numpy()


def draw_dam_boxes(images: torch.Tensor, predictions: dict, path, max_images: int = 4):
    """One row per image: the teacher's and the student's kept DAM boxes, each over its
    mask (shaded). ``predictions`` is ``SoKD.dam_predictions(batch)`` (boxes in grid cells)."""
    plt = pyplot()
    from matplotlib.patches import Rectangle
    count = min(max_images, images.shape[0])
    grid_h, grid_w = predictions['grid']
    img_h, img_w = images.shape[-2:]
    sx, sy = img_w / grid_w, img_h / grid_h
    fig, axes = plt.subplots(count, 2, figsize=(5, 2.5 * count), squeeze=False)
    for row in range(count):
        picture = _displayable(images[row])
        for col, side in enumerate(('teacher', 'student')):
            ax = axes[row][col]
            ax.imshow(picture)
            mask = predictions[side]['mask'][row, 0].float().cpu().numpy()
            ax.imshow(mask, cmap='Reds', alpha=0.35, vmin=0, vmax=1,
                      extent=(0, img_w, img_h, 0), interpolation='nearest')
            boxes = predictions[side]['boxes'][row].cpu()
            keep = predictions[side]['keep'][row].cpu()
            scores = predictions[side]['scores'][row].cpu()
            for (x1, y1, x2, y2), kept, score in zip(boxes.tolist(), keep.tolist(),
                                                      scores.tolist()):
                if kept:
                    ax.add_patch(Rectangle((x1 * sx, y1 * sy), (x2 - x1) * sx, (y2 - y1) * sy,
                                           fill=False, edgecolor='yellow', linewidth=1.5))
                    ax.text(x1 * sx, y1 * sy, f'{score:.2f}', color='yellow', fontsize=7,
                            va='bottom')
            ax.set_axis_off()
            if row == 0:
                ax.set_title(f'{side}: DAM boxes and mask', fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def draw_policy(policy: dict, path, title: str = 'DAFA policy'):
    """Bar chart of the softmax weight and the magnitude of every augmentation op."""
    plt = pyplot()
    names = list(policy['weights'])
    weights = [policy['weights'][name] for name in names]
    magnitudes = [policy['magnitudes'][name] for name in names]
    positions = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 3.5))
    ax.bar([p - 0.2 for p in positions], weights, width=0.4, label='weight softmax(alpha)')
    ax.bar([p + 0.2 for p in positions], magnitudes, width=0.4, label='magnitude sigmoid(p)')
    ax.axhline(1 / len(names), color='grey', linewidth=0.8, linestyle='--',
               label='uniform weight')
    ax.set_xticks(list(positions))
    ax.set_xticklabels(names, rotation=45, ha='right', fontsize=8)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def record_policy(distiller, record: dict, epoch: int, work_dir=None,
                  last_epoch: int | None = None) -> None:
    """Add a searched policy to an engine's epoch record, for metrics.json and TensorBoard:
    ``record['policy']`` (weights, magnitudes, entropy, top ops) and the flat scalars of
    ``policy_scalars()`` (``policy/entropy``, ``policy/weight/<op>``, ...). When the search
    ends (``epoch == search_epochs``, or ``last_epoch`` if training stops before) and
    ``work_dir`` is given, draw the policy to ``work_dir/policy.png`` (needs matplotlib; a
    warning otherwise). Does nothing for a distiller without ``policy()``."""
    policy = getattr(distiller, 'policy', None)
    if not callable(policy):
        return
    record['policy'] = policy()
    scalars = getattr(distiller, 'policy_scalars', None)
    if callable(scalars):
        record.update(scalars())
    search_epochs = getattr(distiller, 'search_epochs', None)
    if work_dir is None or not record['policy'] or search_epochs is None:
        return
    if epoch == search_epochs or (last_epoch is not None and epoch == last_epoch
                                  and epoch < search_epochs):
        try:
            draw_policy(record['policy'], Path(work_dir) / 'policy.png',
                        f'DAFA policy after the search (epoch {epoch})')
        except ImportError as error:
            logging.getLogger(__name__).warning('no policy.png: %s', error)
