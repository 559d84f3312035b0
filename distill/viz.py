"""Figures: ADM's per-location maps on a few images, and training curves from metrics.json.

    maps = adm_maps(distiller, images)              # similarity, consensus, divergence (B,h,w)
    plot_adm_maps(images, maps, 'adm_maps.png')
    plot_curves({'ADM': records, 'DML': ...}, 'curves.png')

The maps are those of README "ADM as implemented" on the distiller's aligned features of one
tap pair:
``S = cos(gs, ft)`` per location, ``w_co = softmax_hw(S / tau)`` (where the student is pulled
toward the teacher) and ``w_di = softmax_hw(-S / tau)`` (where the teacher is pushed away).
matplotlib is imported only by the plotting functions.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from distill.losses.adm import location_weights, similarity_map
from distill.taps import unwrap_model


@torch.no_grad()
def adm_maps(distiller, inputs: torch.Tensor, tap: int = 0, tau: float | None = None) -> dict:
    """Similarity, consensus-weight and divergence-weight maps (each (B, h, w), CPU float) of
    tap pair ``tap`` for the (normalised) ``inputs``, with both networks in eval mode.
    ``tau`` defaults to the distiller's current one."""
    model = unwrap_model(distiller)
    if not getattr(model, 'tap_pairs', None):
        raise ValueError(f'{type(model).__name__} has no tap pairs: ADM maps need a '
                         f'feature distiller (ADM)')
    if tau is None:
        tau = model.current_tau() if hasattr(model, 'current_tau') else 1.0
    param = next(model.parameters())
    batch = dict(inputs=inputs.to(param.device),
                 labels=torch.zeros(len(inputs), dtype=torch.long, device=param.device))
    was_training = model.training
    model.eval()
    try:
        with model.student_taps.recording() as student_feats:
            model.adapter.run(model.student, batch, compute_loss=False)
        with model.teacher_taps.recording() as teacher_feats:
            model.adapter.run(model.teacher, batch, compute_loss=False)
        aligned = list(model.aligned_features(student_feats, teacher_feats))
    finally:
        model.train(was_training)  # the distiller keeps a frozen teacher in eval mode
    if not 0 <= tap < len(aligned):
        raise IndexError(f'tap {tap} out of range: the distiller has {len(aligned)} tap pairs')
    pair, student_aligned, teacher_feat = aligned[tap]
    similarity = similarity_map(student_aligned, teacher_feat)
    return dict(similarity=similarity.cpu(),
                consensus=location_weights(similarity, tau, 'agreement').cpu(),
                divergence=location_weights(similarity, tau, 'disagreement').cpu(),
                tap=f"{pair['student']} -> {pair['teacher']}", tau=float(tau))


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no screen needed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (creating its folder), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def plot_adm_maps(images: torch.Tensor, maps: dict, path, labels=None, class_names=None):
    """A grid, one row per image: the image, the similarity map (in [-1, 1]), the consensus
    weights and the divergence weights (each sums to 1 over the locations). ``images`` are
    (B, 3, H, W) in [0, 1] (before normalisation). Returns the written path."""
    plt = pyplot()
    images = images.detach().float().cpu().clamp(0, 1)
    count = len(images)
    columns = [('image', None), ('similarity cos(gs, ft)', 'similarity'),
               ('consensus weights w_co', 'consensus'),
               ('divergence weights w_di', 'divergence')]
    fig, axes = plt.subplots(count, 4, figsize=(10, 2.5 * count + 0.6), squeeze=False)
    for row in range(count):
        image = images[row].permute(1, 2, 0).numpy()
        height, width = image.shape[:2]
        for col, (title, key) in enumerate(columns):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if key is None:
                ax.imshow(image)
                if labels is not None:
                    label = int(labels[row])
                    name = class_names[label] if class_names else f'class {label}'
                    ax.set_ylabel(name)
            else:
                values = maps[key][row].numpy()
                # the map covers the whole image; the faded image underneath shows what is where
                ax.imshow(image.mean(axis=2), cmap='gray', alpha=0.35)
                kwargs = (dict(cmap='RdBu_r', vmin=-1, vmax=1) if key == 'similarity'
                          else dict(cmap='viridis', vmin=0, vmax=float(maps[key].max())))
                shown = ax.imshow(values, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                                  interpolation='nearest', alpha=0.8, **kwargs)
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(f"ADM at tap {maps.get('tap', '')}, tau = {maps.get('tau', 1.0):g}: red = "
                 f'student and teacher agree; bright weights = where each loss concentrates',
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def load_records(work_dir_or_file) -> list[dict]:
    """The epoch records of a run's ``metrics.json`` (a work dir or the file itself)."""
    path = Path(work_dir_or_file)
    if path.is_dir():
        path = path / 'metrics.json'
    return json.loads(path.read_text())


def plot_curves(runs: dict, path, metrics=(('top1', 'val top-1 (%)'), ('ece', 'val ECE (%)'))):
    """Val metrics per epoch, one colour per run (``{name: records or work dir}``), student
    solid and teacher dashed; one panel per metric. Returns the written path."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for index, (name, records) in enumerate(runs.items()):
        if not isinstance(records, list):
            records = load_records(records)
        epochs = [r['epoch'] for r in records]
        for ax, (metric, label) in zip(axes[0], metrics):
            for network, style in (('student', '-'), ('teacher', '--')):
                key = f'val/{network}/{metric}'
                if all(key in r for r in records):
                    ax.plot(epochs, [r[key] for r in records], style, marker='o', markersize=3,
                            color=colours[index % len(colours)], label=f'{name} {network}')
            ax.set_xlabel('epoch')
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
