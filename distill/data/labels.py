"""Label values the networks cannot predict: one rule for classification labels and
segmentation masks.

A label ``>= num_classes`` (or negative) other than the ignore index has no logit: the cross
entropy fails on the CPU with an index error that names neither the file nor the data set, and
on a GPU with a device-side assert that ends the process; a metric may drop it without a word.
``check_label_values`` raises one line naming where the values came from, the values and the
number of classes instead.

    >>> check_label_values(torch.tensor([0, 3, 7]), 6, 'data.train (CIFAR10 at data/cifar)')
    ValueError: data.train (CIFAR10 at data/cifar) has label values 7 outside 0..5: the student
    predicts 6 classes ...
"""
from __future__ import annotations

import torch

#: how many of the values found the message lists
SHOWN = 10


def values_beyond(values, num_classes: int, ignore_index: int | None = None) -> list[int]:
    """The distinct values of ``values`` (a tensor, array or sequence of ints) outside
    ``0..num_classes-1``, other than ``ignore_index``, sorted."""
    values = torch.as_tensor(values)
    if values.numel() == 0:
        return []
    outside = (values < 0) | (values >= num_classes)
    if ignore_index is not None:
        outside &= values != ignore_index
    return sorted(int(v) for v in torch.unique(values[outside]).tolist())


def check_label_values(values, num_classes: int, where: str, ignore_index: int | None = None,
                       fix: str | None = None) -> None:
    """Raise ``ValueError`` naming ``where`` (a file or a data set) when ``values`` hold labels
    the ``num_classes`` logits do not cover (the ignore index aside)."""
    bad = values_beyond(values, num_classes, ignore_index)
    if not bad:
        return
    shown = ', '.join(map(str, bad[:SHOWN])) + (f', ... ({len(bad)} values)'
                                                 if len(bad) > SHOWN else '')
    ignored = f' (ignore_index {ignore_index} aside)' if ignore_index is not None else ''
    raise ValueError(f'{where} has label values {shown} outside 0..{num_classes - 1}{ignored}: '
                     f'the student predicts {num_classes} classes; '
                     + (fix or 'fix the labels, or give the networks num_classes to cover them'))


def dataset_labels(dataset) -> torch.Tensor | None:
    """All the labels of a classification data set without reading an image: its ``labels``
    tensor (CIFAR, Fashion-MNIST) or its ``targets`` (ImageFolder); None if it has neither."""
    labels = getattr(dataset, 'labels', None)
    if isinstance(labels, torch.Tensor):
        return labels
    targets = getattr(dataset, 'targets', None)
    return None if targets is None else torch.as_tensor(list(targets))
