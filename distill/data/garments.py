"""Real images with real labels for segmentation and detection: Fashion-MNIST garments on canvases.

Each canvas is a crop of a real photograph (matplotlib's sample images: a portrait, an MRI
slice, a terrain elevation and a sea-floor map) with a few Fashion-MNIST garments pasted on
it, each at its own scale, position and tint. The garment's own pixels are its alpha: the
segmentation label of a pixel is the class of the garment on top where that garment is
opaque enough (``alpha >= MASK_ALPHA``), background elsewhere; the detection box of a garment
is tight around its visible labelled pixels. Training canvases take garments from the 60k
training images, validation canvases from the 10k test images, so no garment is seen in both.

``render_garments`` returns the same dict as ``render_shapes`` (``image``, ``mask``,
``instances``, ``boxes``, ``box_labels``), so the MMSeg and COCO layout writers take either.
Every random choice follows from ``(seed, index)``: the same canvas on every machine.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from distill.data.fmnist import (DEBIAN_ROOT, FASHION_MNIST_CLASSES, _IMAGES_MAGIC,
                                 _LABELS_MAGIC, _find, read_idx)

#: a garment pixel is labelled where its alpha (its Fashion-MNIST intensity / 255) reaches this
MASK_ALPHA = 0.25
#: matplotlib's sample images used as backgrounds: real photographs and measurements
BACKGROUND_FILES = ('grace_hopper.jpg', 's1045.ima.gz', 'jacksboro_fault_dem.npz',
                    'topobathy.npz')


#: ``classes='coarse'``: Fashion-MNIST's ten classes in five groups that a tiny network tells
#: apart within minutes (the four upper-body garments look alike at 20 pixels)
COARSE_CLASSES = {'top': (0, 2, 4, 6), 'trouser': (1,), 'dress': (3,),
                  'footwear': (5, 7, 9), 'bag': (8,)}


def garment_class_names(classes: str = 'fine') -> tuple:
    """The class names of ``classes='fine'`` (Fashion-MNIST's ten) or ``'coarse'`` (five)."""
    if classes not in ('fine', 'coarse'):
        raise ValueError(f"classes is 'fine' (Fashion-MNIST's ten) or 'coarse' (five groups), "
                         f'got {classes!r}')
    return tuple(FASHION_MNIST_CLASSES) if classes == 'fine' else tuple(COARSE_CLASSES)


def coarse_labels(labels: np.ndarray) -> np.ndarray:
    """Fashion-MNIST labels -> their ``COARSE_CLASSES`` group index."""
    lookup = np.empty(len(FASHION_MNIST_CLASSES), np.int64)
    for group, members in enumerate(COARSE_CLASSES.values()):
        lookup[list(members)] = group
    return lookup[np.asarray(labels)]


def load_fmnist_split(root=DEBIAN_ROOT, train: bool = True):
    """``(images uint8 N,28,28, labels int64 N)`` of one Fashion-MNIST split."""
    root = Path(root)
    prefix = 'train' if train else 't10k'
    images = read_idx(_find(root, f'{prefix}-images-idx3-ubyte'), _IMAGES_MAGIC)
    labels = read_idx(_find(root, f'{prefix}-labels-idx1-ubyte'), _LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f'{root}: {len(images)} {prefix} images but {len(labels)} labels')
    return images, labels.astype(np.int64)


def _to_rgb(array) -> np.ndarray:
    """Any 2-D measurement or image array -> uint8 RGB, stretched to its 1st-99th percentiles."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 3:
        array = array[..., :3]
    low, high = np.percentile(array, (1, 99))
    scaled = np.clip((array - low) / max(high - low, 1e-9), 0, 1)
    if scaled.ndim == 2:
        scaled = np.repeat(scaled[..., None], 3, axis=2)
    return np.rint(scaled * 255).astype(np.uint8)


def load_backgrounds() -> list[np.ndarray]:
    """The background photographs as uint8 RGB arrays (matplotlib ships them; nothing is
    downloaded)."""
    from matplotlib import cbook
    backgrounds = []
    for name in BACKGROUND_FILES:
        path = Path(cbook.get_sample_data(name, asfileobj=False))
        if name.endswith('.jpg'):
            backgrounds.append(_to_rgb(np.asarray(Image.open(path).convert('RGB'))))
        elif name.endswith('.ima.gz'):  # 256x256 big-endian 16-bit MRI slice
            with gzip.open(path) as file:
                backgrounds.append(_to_rgb(np.frombuffer(file.read(), '>u2').reshape(256, 256)))
        else:
            with np.load(path) as data:
                key = 'elevation' if 'elevation' in data else data.files[0]
                backgrounds.append(_to_rgb(data[key]))
    return backgrounds


def _background_crop(rng, backgrounds, size: int) -> np.ndarray:
    """A random square crop of a random background, resized to ``size``, in [0, 1]."""
    source = backgrounds[int(rng.integers(len(backgrounds)))]
    height, width = source.shape[:2]
    side = int(rng.integers(min(height, width) // 4, min(height, width) // 2 + 1))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(source[top:top + side, left:left + side])
    crop = np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float64) / 255
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return 0.1 + 0.45 * crop  # dimmed: the (bright) garments keep some contrast on any crop


def render_garments(index: int, garments: np.ndarray, labels: np.ndarray, backgrounds,
                    seed: int = 0, image_size: int = 64, num_objects=(1, 3),
                    scale_range=(0.35, 0.65), noise_std: float = 0.03) -> dict:
    """Canvas ``index`` of the set ``seed``: garments drawn from ``garments``/``labels``.

    ``scale_range``: a garment's side as a fraction of ``image_size``. Garments are placed
    back to front; one whose visible labelled pixels fall under a quarter of its own is
    dropped from the boxes (its pixels stay labelled by whichever garment is on top).
    Returns ``render_shapes``'s dict: ``image`` (uint8 H,W,3), ``mask`` (int64; 0 background,
    k+1 class k), ``instances`` (int64; i+1 box i), ``boxes`` (float32 N,4 x1,y1,x2,y2, x2/y2
    exclusive), ``box_labels`` (int64 N) and ``label`` (class of the top garment, -1 if none).
    """
    if index < 0 or seed < 0:
        raise ValueError(f'index and seed must be non-negative, got index={index}, seed={seed}')
    if len(garments) != len(labels) or len(garments) == 0:
        raise ValueError(f'{len(garments)} garments and {len(labels)} labels: need as many '
                         f'of each, at least one')
    rng = np.random.default_rng([seed, index])
    count = (int(rng.integers(num_objects[0], num_objects[1] + 1))
             if np.ndim(num_objects) else int(num_objects))
    canvas = _background_crop(rng, backgrounds, image_size).transpose(2, 0, 1)
    owner = np.full((image_size, image_size), -1)
    picked, areas = [], []
    for obj in range(count):
        which = int(rng.integers(len(garments)))
        side = max(8, int(round(image_size * rng.uniform(*scale_range))))
        alpha = np.asarray(Image.fromarray(garments[which]).resize((side, side),
                                                                   Image.BILINEAR)) / 255.0
        if rng.random() < 0.5:
            alpha = alpha[:, ::-1]
        top, left = (int(v) for v in rng.integers(0, image_size - side + 1, size=2))
        colour = rng.uniform(0.55, 1.0, size=3)
        region = canvas[:, top:top + side, left:left + side]
        canvas[:, top:top + side, left:left + side] = (alpha * colour[:, None, None]
                                                       + (1 - alpha) * region)
        labelled = alpha >= MASK_ALPHA
        owner[top:top + side, left:left + side][labelled] = obj
        picked.append(int(labels[which]))
        areas.append(int(labelled.sum()))
    canvas = canvas + rng.normal(0.0, noise_std, size=canvas.shape)
    image = np.clip(np.rint(canvas.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)

    mask = np.zeros((image_size, image_size), dtype=np.int64)
    instances = np.zeros((image_size, image_size), dtype=np.int64)
    boxes, box_labels = [], []
    for obj in reversed(range(count)):  # the last pasted is on top: it comes first
        visible = owner == obj
        mask[visible] = picked[obj] + 1
        if visible.sum() < max(1, areas[obj] // 4):
            continue
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        box_labels.append(picked[obj])
        instances[visible] = len(boxes)
    return dict(image=image, label=box_labels[0] if box_labels else -1, mask=mask,
                instances=instances, boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                box_labels=np.asarray(box_labels, np.int64))


class GarmentRenderer:
    """``render(index, split)`` for the layout writers: training canvases from the training
    garments, validation canvases from the test garments; ``classes``: ``'fine'`` or
    ``'coarse'`` labels (``garment_class_names``)."""

    def __init__(self, fmnist_root=DEBIAN_ROOT, seed: int = 0, image_size: int = 64,
                 num_objects=(1, 3), scale_range=(0.35, 0.65), backgrounds=None,
                 classes: str = 'fine'):
        self.class_names = garment_class_names(classes)
        self.splits = {}
        for split, train in (('train', True), ('val', False)):
            images, labels = load_fmnist_split(fmnist_root, train)
            self.splits[split] = (images, coarse_labels(labels) if classes == 'coarse'
                                  else labels)
        self.backgrounds = load_backgrounds() if backgrounds is None else backgrounds
        self.seed, self.image_size = seed, image_size
        self.num_objects, self.scale_range = num_objects, scale_range

    def __call__(self, index: int, split: str) -> dict:
        garments, labels = self.splits[split]
        return render_garments(index, garments, labels, self.backgrounds,
                               seed=self.seed * 10 + (split == 'val'),
                               image_size=self.image_size, num_objects=self.num_objects,
                               scale_range=self.scale_range)
