"""A data file the pipeline cannot decode ends a Runner run with one line naming it; so does a
segmentation label map with values the student cannot predict (``LabelMapCheck``).

mmcv's decoders return None for bytes that are no image (a truncated download, a file that
is not an image), and the run ended in a traceback through the data loader: an
AssertionError of ``LoadImageFromFile`` or an AttributeError on None in ``LoadAnnotations``,
several frames away from the file's name. ``data_files_named()`` around ``runner.train()``
turns an error raised inside a loading transform into ``DataFileError`` (a ``ValueError``: a
user error, one ``error:`` line in the entry points) naming the file, from the transform's
``results`` (``img_path``, ``seg_map_path``); in a DataLoader worker, whose error reaches the
main process as text, from mmcv's message (``failed to load image: PATH``), or else saying how
to have it named. Any other error passes unchanged.
"""
from __future__ import annotations

import contextlib
import re

import torch

from distill.data.labels import check_label_values


class DataFileError(ValueError):
    """A data file the pipeline could not decode (a truncated or corrupt image or label map):
    one line naming it (a user error, ``cli_errors``)."""


#: what mmcv's LoadImageFromFile says of an image it cannot decode (also inside the text of
#: an error a DataLoader worker raised)
IMAGE_NOT_LOADED = re.compile(r'failed to load image: (\S+)')


def unreadable_data_file(err: BaseException) -> str | None:
    """The message naming the data file an error of training came from, when it was raised
    inside a loading transform of the data pipeline (``LoadImageFromFile``,
    ``LoadAnnotations``, ...: their ``results`` name the image and its label map), or names
    the image itself (mmcv's message, also from a worker process); None for any other error
    (a missing or unreadable file is named by its own error)."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return None  # named as they are (user errors of their own)
    path, transform = None, None
    error = err
    while error is not None and path is None:
        tb = error.__traceback__
        while tb is not None:  # the innermost loading transform wins
            frame_self = tb.tb_frame.f_locals.get('self')
            results = tb.tb_frame.f_locals.get('results')
            name = type(frame_self).__name__
            if name.startswith('Load') and isinstance(results, dict):
                image = 'Image' in name or 'seg_map_path' not in results
                found = results.get('img_path' if image else 'seg_map_path')
                if isinstance(found, str):
                    path, transform = found, name
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    text = str(err).strip()
    in_worker = 'Original Traceback' in text  # the last line: 'Type: message'
    cause = text.splitlines()[-1] if text else ''
    cause = cause if in_worker else f'{type(err).__name__}: {cause}'.rstrip(': ')
    if path is None:
        named = IMAGE_NOT_LOADED.findall(text.splitlines()[-1] if text else '')
        if named:
            path, transform = named[-1], 'LoadImageFromFile'
        elif in_worker and 'transforms/loading.py' in text:
            # in a worker process: its traceback (text) has the transform, not the file
            return (f'a data file could not be decoded by a loading transform of the data '
                    f'pipeline, in a DataLoader worker ({cause}): it is truncated, corrupt or '
                    f'not an image; rerun with the loader\'s num_workers=0 to have it named')
        else:
            return None
    return (f'cannot decode the data file {path} ({transform} of the data pipeline: '
            f'{cause}): it is truncated, corrupt or not an image; replace it or remove it from '
            f'the data set')


@contextlib.contextmanager
def data_files_named():
    """Raise ``DataFileError`` naming the file for an error of a loading transform (see the
    module); other errors pass unchanged."""
    try:
        yield
    except Exception as err:
        unreadable = unreadable_data_file(err)
        if unreadable is None:
            raise
        raise DataFileError(unreadable) from err


class LabelMapCheck:
    """The label maps of the first ``batches`` training batches (and validation batches) of a
    segmentation run hold only values the student's decode head predicts, or its ignore index:
    a value >= ``num_classes`` failed inside the loss (an index error naming no file; on a GPU
    a device-side assert) or was left out of the IoU without a word. One line names the label
    map and the values (``distill/data/labels.py``, the rule of every engine). Checked on the
    maps the loss sees (after the pipeline: ``reduce_zero_label``, a ``label_map``) and only in
    the first batches, each costing one wait on the device: start-up stays as fast, and a wrong
    encoding (Cityscapes labelIds for trainIds, masks saved as 0/255) shows at once."""

    def __init__(self, batches: int = 20):
        self.left = dict(loss=batches, predict=batches)

    def __call__(self, head, data_samples, mode: str) -> None:
        head = head[-1] if isinstance(head, torch.nn.ModuleList) else head  # a cascade's last
        num_classes = getattr(head, 'num_classes', None)
        ignore = getattr(head, 'ignore_index', None)
        if not self.left.get(mode) or not data_samples or num_classes is None:
            return
        self.left[mode] -= 1
        maps = [(s.gt_sem_seg.data, s.metainfo.get('seg_map_path'))
                for s in data_samples if 'gt_sem_seg' in s]
        outside = [(((m >= num_classes) | (m < 0)) & (m != ignore)).any() for m, _ in maps]
        if not maps or not bool(torch.stack(outside).any()):  # one wait on the device a batch
            return
        for values, path in maps:
            check_label_values(values, num_classes, f'the label map {path or "of a sample"}',
                               ignore_index=ignore, fix='check its encoding (reduce_zero_label; '
                               'train ids, not label ids) or give the decode heads a num_classes '
                               'that covers them')
