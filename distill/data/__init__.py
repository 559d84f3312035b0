"""Datasets for the classification task, and the synthetic shapes generator for every task.

All classification datasets return ``dict(inputs=FloatTensor[3,H,W] in [0,1], labels=int)``
and have a ``classes`` list; normalisation and augmentation are applied per batch
(``distill.data.transforms``), not inside the datasets.

    >>> dataset = build_dataset(dict(type='ShapesClassification', num_samples=2000, seed=0))
    >>> loader = DataLoader(dataset, batch_size=64, collate_fn=collate_classification)
"""
import torch

from distill.registry import DATASETS

from . import cifar, fmnist, folders, shapes, transforms, writers  # noqa: F401  (registers datasets)
from .cifar import CIFAR10, CIFAR100
from .fmnist import FashionMNIST
from .folders import ImageFolder
from .shapes import SHAPE_NAMES, ShapesClassification, render_shapes, shape_class_names
from .transforms import normalize, random_crop_flip
from .writers import write_shapes_imagefolder

__all__ = [
    'build_dataset', 'collate_classification', 'CIFAR10', 'CIFAR100', 'FashionMNIST', 'ImageFolder',
    'ShapesClassification', 'SHAPE_NAMES', 'render_shapes', 'shape_class_names', 'normalize',
    'random_crop_flip', 'write_shapes_imagefolder',
]


def build_dataset(cfg):
    """Build a dataset from a config dict, e.g. ``dict(type='CIFAR100', root='data')``."""
    cfg = dict(cfg)  # a copy, also turns an mmengine ConfigDict into a plain dict
    dataset_type = cfg.get('type')
    if isinstance(dataset_type, str) and dataset_type in DATASETS.module_dict:
        # Scope-qualified, so it is found even when an mmengine Runner has set another
        # default scope (mmseg, mmdet), which would otherwise redirect the look-up there.
        cfg['type'] = f'{DATASETS.scope}.{dataset_type}'
    return DATASETS.build(cfg)


def collate_classification(samples):
    """List of ``dict(inputs, labels)`` -> ``dict(inputs=Tensor[B,3,H,W], labels=LongTensor[B])``.
    Images of different sizes cannot share a batch: that is named with the sizes and the fix
    (torch's stack error names neither)."""
    shapes = sorted({tuple(sample['inputs'].shape) for sample in samples})
    if len(shapes) > 1:
        raise ValueError(f'images of different sizes in one batch: {", ".join(map(str, shapes))} '
                         f'(channels, height, width); give the data set an image_size '
                         f'(data.train.image_size / data.val.image_size for image folders) so '
                         f'every image is resized to one size')
    return dict(
        inputs=torch.stack([sample['inputs'] for sample in samples]),
        labels=torch.tensor([int(sample['labels']) for sample in samples], dtype=torch.long),
    )
