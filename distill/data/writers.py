"""Write the synthetic shapes set to disk in the layouts other tools read.

So that the task entry points can be exercised end to end on files (as a user's real data
would be) without downloading anything.  ``write_shapes_imagefolder`` writes the
``ImageFolder`` layout; writers for other layouts belong here too.
"""
from pathlib import Path

from PIL import Image

from .shapes import render_shapes, shape_class_names

# Validation images come from another seed so that they never repeat training images.
VAL_SEED_OFFSET = 100_003


def shapes_class_folder_names(num_classes=6):
    """Folder names ``<index>_<shape>``: sorted like the class indices (up to 10 classes),
    so ``ImageFolder`` gives the same labels as ``ShapesClassification``."""
    return [f'{index}_{name}' for index, name in enumerate(shape_class_names(num_classes))]


def write_shapes_imagefolder(root, num_train, num_val, seed=0, image_size=32, num_classes=6,
                             **render_kwargs):
    """Write ``root/train/<class>/<index>.png`` and ``root/val/<class>/<index>.png``.

    Training sample i is ``render_shapes(i, seed)``; validation sample i is
    ``render_shapes(i, seed + VAL_SEED_OFFSET)``.  Extra keyword arguments go to
    ``render_shapes``.  Returns ``dict(train=Path, val=Path)``.
    """
    root = Path(root)
    class_folders = shapes_class_folder_names(num_classes)
    splits = dict(train=(num_train, seed), val=(num_val, seed + VAL_SEED_OFFSET))
    written = {}
    for split, (num_samples, split_seed) in splits.items():
        split_dir = root / split
        for folder in class_folders:  # every class exists, even one that drew no sample
            (split_dir / folder).mkdir(parents=True, exist_ok=True)
        for index in range(num_samples):
            sample = render_shapes(index, seed=split_seed, image_size=image_size,
                                   num_classes=num_classes, **render_kwargs)
            path = split_dir / class_folders[sample['label']] / f'{index:06d}.png'
            Image.fromarray(sample['image']).save(path)
        written[split] = split_dir
    return written
