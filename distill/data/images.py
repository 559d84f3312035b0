"""Images for diffusion training: a folder of the user's images, Fashion-MNIST or the shapes.

Both datasets give ``dict(pixel_values=float Tensor[3,H,W] in [-1, 1])`` and are pure functions
of the index (no random augmentation here): the shuffling and the random flip are drawn by the
engine (``distill.engines.diffusion.randomness``) from generators it saves in its checkpoints,
so a resumed run sees exactly the data an uninterrupted one would. 16-bit images are scaled to
8 bits as the classification folders do (``folders._to_rgb``), not clipped to white.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .fmnist import DEBIAN_ROOT, FashionMNIST
from .folders import _to_rgb

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.gif', '.tif', '.tiff')


def to_model_range(image_uint8: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1]."""
    tensor = torch.from_numpy(np.array(image_uint8, dtype=np.uint8)).permute(2, 0, 1).float()
    return tensor.div_(127.5).sub_(1.0)


def resize_and_crop(image, resolution: int, center_crop: bool = True):
    """PIL image -> RGB, shorter side resized to ``resolution``, then a centre (or top-left)
    square crop: what diffusers' example does with torchvision transforms."""
    from PIL import Image
    image = _to_rgb(image)
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(new_size, Image.BICUBIC)
    left = (new_size[0] - resolution) // 2 if center_crop else 0
    top = (new_size[1] - resolution) // 2 if center_crop else 0
    return image.crop((left, top, left + resolution, top + resolution))


class ImageFolderImages(Dataset):
    """Every image file under ``root`` (recursively, sorted), resized and cropped."""

    def __init__(self, root, resolution: int, center_crop: bool = True, files=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f'train_data_dir {str(self.root)!r} is not a directory')
        self.files = files if files is not None else sorted(
            path for path in self.root.rglob('*')
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise ValueError(f'train_data_dir {str(self.root)!r} holds no images (looked for '
                             f'{", ".join(IMAGE_EXTENSIONS)} in it and its sub-folders)')
        self.resolution = resolution
        self.center_crop = center_crop

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        from PIL import Image, UnidentifiedImageError
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = resize_and_crop(image, self.resolution, self.center_crop)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise ValueError(f'cannot decode image {str(path)!r}: {err}') from err
        return dict(pixel_values=to_model_range(np.asarray(image)))

    def split(self, num_heldout: int):
        """(train, held-out): the last ``num_heldout`` files are held out when the folder has
        at least twice as many images; otherwise both are this one set, every image (the
        diffusion engine tells by identity, warns "held-out = training" and records
        ``heldout_is_training`` in metrics.json)."""
        if num_heldout <= 0 or len(self.files) < 2 * num_heldout:
            return self, self
        make = lambda files: ImageFolderImages(self.root, self.resolution, self.center_crop,
                                               files)
        return make(self.files[:-num_heldout]), make(self.files[-num_heldout:])


class ShapesImages(Dataset):
    """Images of ``distill.data.shapes.render_shapes`` (labels and masks unused)."""

    def __init__(self, num_samples: int, resolution: int, seed: int = 0, num_classes: int = 6,
                 num_objects=1):
        self.num_samples = num_samples
        self.resolution = resolution
        self.seed = seed
        self.num_classes = num_classes
        self.num_objects = num_objects

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index):
        from distill.data.shapes import render_shapes
        sample = render_shapes(index, seed=self.seed, image_size=self.resolution,
                               num_classes=self.num_classes, num_objects=self.num_objects)
        return dict(pixel_values=to_model_range(sample['image']))


class FashionMNISTImages(Dataset):
    """Fashion-MNIST garments (the Debian package's idx files in ``root``) as diffusion images:
    the train or test split, ``count`` images (None: all) class-balanced, padded 28 -> 32
    and resized to ``resolution`` if that is not 32, ``channels`` 1 (grey) or 3."""

    def __init__(self, train: bool, resolution: int, root=DEBIAN_ROOT, count=None,
                 channels: int = 1):
        self.source = FashionMNIST(root, train=train, channels=channels, pad=2)
        self.count = len(self.source) if count is None else min(int(count), len(self.source))
        self.resolution = resolution
        # class-balanced as far as the classes allow: the classes interleaved (each image's
        # rank within its class, then its class), the first ``count`` kept
        labels = self.source.labels.numpy()
        rank = np.zeros(len(labels), np.int64)
        for c in np.unique(labels):
            rank[labels == c] = np.arange(int((labels == c).sum()))
        self.order = np.lexsort((labels, rank))[:self.count]

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        image = self.source[int(self.order[index])]['inputs']             # (C, 32, 32) in [0, 1]
        if self.resolution != image.shape[-1]:
            image = torch.nn.functional.interpolate(
                image[None], size=(self.resolution,) * 2, mode='bilinear', antialias=True,
                align_corners=False)[0]
        return dict(pixel_values=image.mul(2).sub(1))


def build_image_datasets(data: dict, train_data_dir: str | None = None):
    """(train, held-out) datasets from the config's ``data`` dict.

    ``train_data_dir`` (the flag, or ``data['train_data_dir']``) selects an image folder;
    without one, ``data['type'] == 'fmnist'`` reads Fashion-MNIST (``num_samples`` training
    images, the held-out ones from the test split) and ``'shapes'`` renders synthetic images
    (held-out images come from another seed).
    """
    resolution = int(data['resolution'])
    root = train_data_dir or data.get('train_data_dir')
    num_heldout = int(data.get('num_heldout', 64))
    if root:
        return ImageFolderImages(root, resolution, data.get('center_crop', True)).split(
            num_heldout)
    if data.get('type', 'shapes') == 'fmnist':
        options = dict(resolution=resolution, root=data.get('root') or DEBIAN_ROOT,
                       channels=int(data.get('channels', 1)))
        return (FashionMNISTImages(train=True, count=data.get('num_samples'), **options),
                FashionMNISTImages(train=False, count=num_heldout, **options))
    if data.get('type', 'shapes') != 'shapes':
        raise ValueError(f"data type {data.get('type')!r} needs --train_data_dir (an image "
                         f"folder); only type='shapes' and type='fmnist' need none")
    seed = int(data.get('seed', 0))
    options = dict(resolution=resolution, num_classes=data.get('num_classes', 6),
                   num_objects=data.get('num_objects', 1))
    return (ShapesImages(int(data.get('num_samples', 1024)), seed=seed, **options),
            ShapesImages(num_heldout, seed=seed + 1, **options))
