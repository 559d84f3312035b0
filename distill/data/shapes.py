"""Deterministic synthetic "shapes" images: one generator for every task of the library.

``render_shapes(index, seed)`` draws coloured geometric shapes (the classes) on a textured
background and returns the image with everything the tasks need: a class label
(classification), a semantic mask (segmentation), tight boxes (detection), and the image alone
(diffusion).  It is a pure function of ``(index, seed, options)``: the same arguments always
give the same sample, so datasets need no files and tests need no downloads.

Shapes are rendered with numpy on a supersampled grid, so edges are anti-aliased; a pixel
belongs to an object in the masks when the object covers at least half of it and no later
(upper) object does.  Object 0 is drawn last, on top, so the main object is never occluded.
"""
import numpy as np
from torch.utils.data import Dataset

from distill.registry import DATASETS

from .transforms import image_to_tensor

# Each shape is a predicate on coordinates (u, v) normalised by the object's radius: the
# object is the set of points where it holds.  Areas are roughly comparable, so size alone
# does not give the class away.  ``num_classes=k`` uses the first k kinds.


def _disk(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


def _triangle(u, v):
    # Apex up at v = -1, base at v = 0.8.
    return (v <= 0.8) & (np.abs(u) <= (v + 1.0) * 0.55)


def _ring(u, v):
    radius_sq = u * u + v * v
    return (radius_sq <= 1.0) & (radius_sq >= 0.55 ** 2)


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))


def _diamond(u, v):
    return np.abs(u) + np.abs(v) <= 1.0


def _horizontal_bar(u, v):
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.35)


def _ellipse(u, v):
    return u * u + (v / 0.55) ** 2 <= 1.0


def _frame(u, v):
    side = np.maximum(np.abs(u), np.abs(v))
    return (side <= 0.85) & (side >= 0.5)


def _diagonal_cross(u, v):
    # The cross rotated by 45 degrees.
    return _cross((u + v) * np.sqrt(0.5), (v - u) * np.sqrt(0.5))


SHAPE_KINDS = {
    'disk': _disk,
    'square': _square,
    'triangle': _triangle,
    'ring': _ring,
    'cross': _cross,
    'diamond': _diamond,
    'horizontal_bar': _horizontal_bar,
    'ellipse': _ellipse,
    'frame': _frame,
    'diagonal_cross': _diagonal_cross,
}
SHAPE_NAMES = tuple(SHAPE_KINDS)


def shape_class_names(num_classes=6):
    """Names of the first ``num_classes`` shape kinds, in class-index order."""
    _check_num_classes(num_classes)
    return list(SHAPE_NAMES[:num_classes])


def _check_num_classes(num_classes):
    if not 1 <= num_classes <= len(SHAPE_NAMES):
        raise ValueError(f'num_classes must be in 1..{len(SHAPE_NAMES)} (the shape kinds '
                         f'{", ".join(SHAPE_NAMES)}), got {num_classes}')


def _bilinear_upsample(grid, size):
    """(C, g, g) -> (C, size, size) by separable linear interpolation (corners aligned)."""
    num_points = grid.shape[-1]
    positions = np.linspace(0.0, num_points - 1, size)
    lower = np.minimum(np.floor(positions).astype(int), num_points - 2)
    frac = positions - lower
    weights = np.zeros((size, num_points))
    weights[np.arange(size), lower] = 1.0 - frac
    weights[np.arange(size), lower + 1] = frac
    return np.einsum('sg,cgh,th->cst', weights, grid, weights)


def _render_background(rng, size, texture):
    """Textured background (3, S, S) in about [0, 1]: low-frequency colour noise + stripes
    + a linear gradient, so that a flat-colour threshold does not segment the shapes."""
    base_colour = rng.uniform(0.15, 0.85, size=(3, 1, 1))
    grid_points = int(rng.integers(3, 6))
    blotches = _bilinear_upsample(rng.uniform(-1, 1, size=(3, grid_points, grid_points)), size)

    ys, xs = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, np.pi)
    frequency = rng.uniform(1.5, 5.0)  # periods per image: wider than most shape strokes
    stripes = np.sin(2 * np.pi * frequency * (xs * np.cos(angle) + ys * np.sin(angle))
                     + rng.uniform(0, 2 * np.pi))
    stripe_colour = rng.uniform(-1, 1, size=(3, 1, 1))
    gradient_angle = rng.uniform(0, 2 * np.pi)
    gradient = (xs - 0.5) * np.cos(gradient_angle) + (ys - 0.5) * np.sin(gradient_angle)
    gradient_colour = rng.uniform(-1, 1, size=(3, 1, 1))

    return (base_colour
            + texture * (0.25 * blotches + 0.12 * stripe_colour * stripes)
            + 0.3 * gradient_colour * gradient)


def _object_coverage(rng, kind, size, size_range, supersample):
    """Fraction of each pixel covered by one randomly placed, scaled, rotated shape."""
    radius = rng.uniform(*size_range) * size
    centre_x, centre_y = rng.uniform(radius * 0.8, size - radius * 0.8, size=2)
    angle = rng.uniform(-0.3, 0.3)  # a small tilt: a square stays a square, not a diamond
    stretch_x, stretch_y = rng.uniform(0.85, 1.15, size=2)

    # Coordinates of the sub-pixel centres, normalised by the radius, then rotated.
    fine = (np.arange(size * supersample) + 0.5) / supersample
    dx = (fine[None, :] - centre_x) / radius
    dy = (fine[:, None] - centre_y) / radius
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / stretch_x
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / stretch_y
    inside = SHAPE_KINDS[kind](u, v).astype(np.float64)
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def _object_colour(rng, background_luminance, min_contrast, lighter_prob):
    """A random colour whose luminance (channel mean) differs from the background's by at
    least ``min_contrast``: lighter with probability ``lighter_prob``, else darker.

    A mostly consistent contrast sign is what lets a tiny CNN learn the shapes in a few
    epochs; the darker minority, and the random hue, keep it from being trivial.
    """
    lighter = rng.random() < lighter_prob
    lighter_range = (background_luminance + min_contrast, 1.0)
    darker_range = (0.0, background_luminance - min_contrast)
    low, high = lighter_range if lighter else darker_range
    if high - low < 0.05:  # no room on that side of this background: take the other side
        low, high = darker_range if lighter else lighter_range
    # Clipped: with a very large ``min_contrast`` neither side has room.
    luminance = float(np.clip(rng.uniform(low, max(high, low)), 0.0, 1.0))
    # A zero-mean hue offset, scaled so that every channel stays inside [0, 1].
    hue = rng.uniform(-1, 1, size=3)
    hue -= hue.mean()
    room = min(luminance, 1.0 - luminance)
    hue *= room * rng.uniform(0.3, 1.0) / max(np.abs(hue).max(), 1e-6)
    return luminance + hue


def _tight_box(pixels):
    """x1, y1, x2, y2 in pixel-edge coordinates: the box covers exactly the True pixels."""
    rows = np.flatnonzero(pixels.any(axis=1))
    cols = np.flatnonzero(pixels.any(axis=0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def render_shapes(index, seed=0, image_size=32, num_classes=6, num_objects=1,
                  size_range=(0.2, 0.4), texture=1.0, noise_std=0.06, min_contrast=0.3,
                  lighter_prob=0.85, supersample=4):
    """Render sample ``index`` of the shapes set ``seed``.

    Args:
        index, seed: non-negative ints; together they fix every random choice.
        image_size: height and width in pixels.
        num_classes: use the first ``num_classes`` kinds of ``SHAPE_NAMES``.
        num_objects: objects per image, an int or an inclusive ``(low, high)`` range.
        size_range: object radius as a fraction of ``image_size``.
        texture: strength of the background texture (0 = smooth gradient only).
        noise_std: std of the per-pixel Gaussian noise, on a [0, 1] scale.
        min_contrast: least luminance difference between an object and the background mean.
        lighter_prob: probability that an object is lighter (not darker) than the background.
        supersample: sub-pixels per pixel side, for anti-aliased edges.

    Returns:
        dict with ``image`` (uint8 H,W,3), ``label`` (class of object 0, the one on top;
        -1 if there is no object),
        ``mask`` (int64 H,W; 0 background, k+1 class k), ``instances`` (int64 H,W; 0
        background, i+1 box i), ``boxes`` (float32 N,4 x1,y1,x2,y2, tight around the visible
        pixels, x2/y2 exclusive) and ``box_labels`` (int64 N).  Objects left with no visible
        pixel are dropped; object 0 is on top, so it is kept whenever it is large enough.
    """
    _check_num_classes(num_classes)
    if index < 0 or seed < 0:
        raise ValueError(f'index and seed must be non-negative, got index={index}, seed={seed}')
    rng = np.random.default_rng([seed, index])
    if np.ndim(num_objects) == 0:
        count = int(num_objects)
    else:
        count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    kinds = rng.integers(0, num_classes, size=count)

    canvas = _render_background(rng, image_size, texture)
    background_luminance = canvas.mean()
    owner = np.full((image_size, image_size), -1)  # which object each pixel shows
    # Paint back to front: the last object in the list first, object 0 last (on top).
    for obj in reversed(range(count)):
        coverage = _object_coverage(rng, SHAPE_NAMES[kinds[obj]], image_size, size_range,
                                    supersample)
        colour = _object_colour(rng, background_luminance, min_contrast, lighter_prob)
        # A mild shading across the object, so its colour is not one flat value either.
        shading = 1.0 + 0.15 * _bilinear_upsample(rng.uniform(-1, 1, size=(1, 2, 2)),
                                                  image_size)
        canvas = coverage * colour[:, None, None] * shading + (1.0 - coverage) * canvas
        owner[coverage >= 0.5] = obj

    canvas = canvas + rng.normal(0.0, noise_std, size=canvas.shape)
    image = np.clip(np.rint(canvas.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)

    boxes, box_labels = [], []
    mask = np.zeros((image_size, image_size), dtype=np.int64)
    instances = np.zeros((image_size, image_size), dtype=np.int64)
    for obj in range(count):
        visible = owner == obj
        if not visible.any():
            continue
        boxes.append(_tight_box(visible))
        box_labels.append(int(kinds[obj]))
        mask[visible] = kinds[obj] + 1
        instances[visible] = len(boxes)
    return dict(
        image=image,
        label=int(kinds[0]) if count else -1,
        mask=mask,
        instances=instances,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        box_labels=np.asarray(box_labels, dtype=np.int64),
    )


@DATASETS.register_module(name='ShapesClassification')
class ShapesClassification(Dataset):
    """Classify the main (top) shape of ``render_shapes`` images.

    Samples are rendered on first access and kept in memory.  Use another ``seed`` for a
    validation set.  Extra keyword arguments go to ``render_shapes`` (``num_objects``,
    ``noise_std``, ...).  Items are ``dict(inputs=FloatTensor[3,H,W] in [0,1], labels=int)``.
    """

    def __init__(self, num_samples=2000, seed=0, image_size=32, num_classes=6,
                 **render_kwargs):
        self.num_samples = num_samples
        self.seed = seed
        self.image_size = image_size
        self.num_classes = num_classes
        self.render_kwargs = render_kwargs
        self.classes = shape_class_names(num_classes)
        self._cache = {}

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index):
        if not 0 <= index < self.num_samples:
            raise IndexError(f'index {index} out of range for {self.num_samples} samples')
        if index not in self._cache:
            sample = render_shapes(index, seed=self.seed, image_size=self.image_size,
                                   num_classes=self.num_classes, **self.render_kwargs)
            self._cache[index] = (image_to_tensor(sample['image']), sample['label'])
        image, label = self._cache[index]
        return dict(inputs=image, labels=label)
