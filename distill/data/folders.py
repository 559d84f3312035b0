"""``ImageFolder``: a classification dataset from ``root/<class>/<image files>``.

The layout of torchvision's ``ImageFolder`` (class names are the sorted sub-folder names,
files are found recursively under each), without torchvision.  Errors name the path at
fault: a missing root, a root without class folders or images, a file that does not decode.
16-bit grey images are scaled to 8 bits (not clipped).
"""
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from distill.registry import DATASETS

from .transforms import image_to_tensor

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.gif', '.tif', '.tiff')

logger = logging.getLogger('distill.data')  # in a run's log (engines/core/runtime.py)


def _is_image_file(path):
    return path.suffix.lower() in IMAGE_EXTENSIONS


def find_classes(root):
    """Sorted names of the sub-folders of ``root`` (hidden ones skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'image folder root {str(root)!r} does not exist or is not a '
                                f'directory')
    classes = sorted(entry.name for entry in os.scandir(root)
                     if entry.is_dir() and not entry.name.startswith('.'))
    if not classes:
        raise ValueError(f'no class folders in {str(root)!r}: expected the layout '
                         f'root/<class name>/<image files>')
    return classes


# integer modes wider than 8 bits, and the full value each one stands for
_WIDE_MODES = {'I;16': 65535, 'I;16L': 65535, 'I;16B': 65535, 'I;16N': 65535, 'I': None}


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB 8-bit. PIL's own ``convert('RGB')`` clips 16-bit grey (0..65535) to 255, which
    turns nearly every pixel white; those are scaled to 0..255 instead. Mode 'I' (32-bit)
    is taken as 16-bit when it fits, else scaled by its maximum; 'F' as [0, 1] when it fits."""
    if image.mode in _WIDE_MODES or image.mode == 'F':
        values = np.asarray(image, dtype=np.float64)
        full = _WIDE_MODES.get(image.mode)
        if full is None:  # 'I' or 'F': the range is not in the mode
            top = float(values.max()) if values.size else 0.0
            full = 1.0 if image.mode == 'F' and top <= 1.0 else (
                65535.0 if top <= 65535 else top)
        grey = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode='L').convert('RGB')
    return image.convert('RGB')


def load_rgb_image(path, image_size=None):
    """Decode ``path`` to an RGB uint8 (H, W, 3) array, resized (bilinear) to ``image_size``.

    Raises ValueError naming the file if it cannot be decoded.
    """
    try:
        with Image.open(path) as image:
            image = _to_rgb(image)  # also forces the full decode
            if image_size is not None:
                height, width = (image_size, image_size) if isinstance(image_size, int) \
                    else image_size
                image = image.resize((width, height), Image.BILINEAR)
            return np.array(image)  # a writable copy, as torch.from_numpy wants
    # What PIL raises on bad data (UnidentifiedImageError is an OSError).
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f'cannot decode image file {str(path)!r}: {err}') from err


@DATASETS.register_module(name='ImageFolder')
class ImageFolder(Dataset):
    """Images in ``root/<class>/**/<file>``; items are ``dict(inputs, labels)``.

    Args:
        root: folder whose sub-folders are the classes (sorted names -> labels 0..K-1).
        image_size: resize every image to this (int or (height, width)); needed to batch
            images of different sizes.  None keeps each image's own size.

    ``inputs`` is a float tensor (3, H, W) in [0, 1]; ``labels`` an int.  Images are decoded
    when read; call ``verify()`` to check every file up front.
    """

    def __init__(self, root, image_size=None):
        self.root = Path(root)
        self.image_size = image_size
        self.classes = find_classes(self.root)
        self.class_to_idx = {name: label for label, name in enumerate(self.classes)}
        self.samples = []  # (path, label)
        for name in self.classes:
            class_dir = self.root / name
            for dir_path, dir_names, file_names in os.walk(class_dir, followlinks=True):
                dir_names.sort()  # os.walk order is arbitrary; sorting makes it reproducible
                for file_name in sorted(file_names):
                    path = Path(dir_path) / file_name
                    if _is_image_file(path):
                        self.samples.append((path, self.class_to_idx[name]))
        if not self.samples:
            raise ValueError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) in the class '
                             f'folders of {str(self.root)!r}')
        # a class folder without images stays a class (its label, num_classes count it) that
        # nothing teaches: said once, not trained on in silence
        found = {label for _, label in self.samples}
        self.empty_classes = [name for label, name in enumerate(self.classes)
                              if label not in found]
        if self.empty_classes:
            logger.warning('image folder %s: %d of %d class folders hold no image file (%s): '
                           'they stay classes, with nothing to learn them from',
                           self.root, len(self.empty_classes), len(self.classes),
                           ', '.join(self.empty_classes))

    @property
    def targets(self):
        return [label for _, label in self.samples]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        image = load_rgb_image(path, self.image_size)
        return dict(inputs=image_to_tensor(image), labels=label)

    def verify(self, raise_error=True):
        """Decode every file; return the list of those that fail.

        With ``raise_error`` (default) a ValueError lists every bad file instead, so a long
        run stops before it starts rather than at the first bad file hours later.
        """
        bad_files = []
        for path, _ in self.samples:
            try:
                load_rgb_image(path)
            except ValueError as err:
                bad_files.append((path, err.__cause__ or err))
        if bad_files and raise_error:
            listing = '\n'.join(f'  {path}: {err}' for path, err in bad_files)
            raise ValueError(f'{len(bad_files)} of {len(self.samples)} image files in '
                             f'{str(self.root)!r} cannot be decoded:\n{listing}')
        return [path for path, _ in bad_files]
