"""Write a segmentation set (the synthetic shapes, or the Fashion-MNIST garment canvases) in
MMSegmentation's ``img_dir``/``ann_dir`` layout.

    root/img_dir/{train,val}/00000.png   RGB images
    root/ann_dir/{train,val}/00000.png   labels: 0 background, k+1 shape class k

A plain ``BaseSegDataset`` with ``metainfo=dict(classes=shapes_seg_classes(K))`` reads it.
The folder is written to a temporary sibling and renamed into place, so a reader (or a second
process of a distributed run writing it too) never sees a half-written set.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from distill.data.shapes import render_shapes, shape_class_names

SPLIT_SEEDS = dict(train=0, val=1)


def shapes_seg_classes(num_classes: int = 6) -> tuple:
    return ('background', *shape_class_names(num_classes))


def write_into_place(root, write_fn) -> Path:
    """Run ``write_fn(tmp_dir)`` and rename ``tmp_dir`` to ``root``; keep an existing ``root``."""
    root = Path(root)
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.', dir=root.parent))
    try:
        from distill.checkpoint import current_umask
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the set
        write_fn(tmp)
        os.rename(tmp, root)
    except OSError:
        if not root.is_dir():  # a real failure, not another process winning the race
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def write_mmseg(root, render, counts: dict) -> Path:
    """Write (once) ``counts[split]`` samples per split, ``render(index, split)`` each (a dict
    with ``image`` and ``mask``, as ``render_shapes`` returns), under ``root``."""
    def write(tmp: Path):
        for split, count in counts.items():
            img_dir, ann_dir = tmp / 'img_dir' / split, tmp / 'ann_dir' / split
            img_dir.mkdir(parents=True)
            ann_dir.mkdir(parents=True)
            for index in range(count):
                sample = render(index, split)
                Image.fromarray(sample['image']).save(img_dir / f'{index:05d}.png')
                Image.fromarray(sample['mask'].astype(np.uint8)).save(ann_dir / f'{index:05d}.png')
    return write_into_place(root, write)


def write_shapes_mmseg(root, num_train: int = 32, num_val: int = 16, image_size: int = 64,
                       num_classes: int = 6, num_objects=(1, 3), seed: int = 0) -> Path:
    """Write (once) the shapes segmentation set under ``root``; return ``root``."""
    def render(index, split):
        return render_shapes(index, seed=seed * 10 + SPLIT_SEEDS[split], image_size=image_size,
                             num_classes=num_classes, num_objects=num_objects)
    return write_mmseg(root, render, dict(train=num_train, val=num_val))


def write_garments_mmseg(root, num_train: int = 2000, num_val: int = 500, image_size: int = 64,
                         num_objects=(1, 3), seed: int = 0,
                         fmnist_root='/usr/share/datasets/fashion-mnist',
                         classes: str = 'fine') -> Path:
    """Write (once) the Fashion-MNIST garment canvases (``distill.data.garments``) under
    ``root``: 0 background and k+1 class k of ``garment_class_names(classes)``."""
    if Path(root).is_dir():
        return Path(root)
    from distill.data.garments import GarmentRenderer
    render = GarmentRenderer(fmnist_root, seed=seed, image_size=image_size,
                             num_objects=num_objects, classes=classes)
    return write_mmseg(root, render, dict(train=num_train, val=num_val))
