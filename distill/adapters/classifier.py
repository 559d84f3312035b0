"""Image classifiers: any ``nn.Module`` mapping images (B,3,H,W) to logits (B,K)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.adapters.base import Adapter, ModelOutput, probe_size
from distill.losses.logits import kd_loss
from distill.registry import ADAPTERS


BATCH_FORMS = '`dict(inputs=Tensor[B,C,H,W], labels=Tensor[B])` or `(inputs, labels)`'


def _describe(value) -> str:
    """A short account of a batch that is not one of ``BATCH_FORMS``, for the error."""
    if isinstance(value, torch.Tensor):
        return f'Tensor{list(value.shape)}'
    if isinstance(value, dict):
        return 'dict(' + ', '.join(f'{key}={_describe(item)}' for key, item in value.items()) + ')'
    if isinstance(value, (tuple, list)):
        items = ', '.join(_describe(item) for item in value[:4])
        more = ', ...' if len(value) > 4 else ''
        return f'{type(value).__name__} of {len(value)} ({items}{more})'
    return type(value).__name__


def classification_batch(batch) -> dict:
    """``batch`` as ``dict(inputs=Tensor[B,C,H,W], labels=Tensor[B])``: a dict with those keys
    is returned as it is (other keys kept), an ``(inputs, labels)`` tuple or list becomes the
    dict; anything else is a ``TypeError`` naming both forms and what was given."""
    given = batch
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        batch = dict(inputs=batch[0], labels=batch[1])
    if not (isinstance(batch, dict) and all(isinstance(batch.get(key), torch.Tensor)
                                            for key in ('inputs', 'labels'))):
        raise TypeError(f'a classification batch is {BATCH_FORMS}; got {_describe(given)}')
    return batch


@ADAPTERS.register_module()
class ClassifierAdapter(Adapter):
    """Batch: ``dict(inputs=Tensor[B,3,H,W], labels=Tensor[B])``, or the ``(inputs, labels)``
    pair a PyTorch ``DataLoader`` over a ``TensorDataset`` (or torchvision's data sets) yields,
    which ``prepare`` turns into that dict.

    Args:
        probe_input_size: side of the zero image used to find tap shapes (default 32);
            ``input_size``, its name in 0.1.0, still works with a ``FutureWarning``.
        in_channels: channels of that image (and of the data: 1 for grey images).
        label_smoothing: of the task's cross-entropy.
    """

    def __init__(self, probe_input_size: int | None = None, in_channels: int = 3,
                 label_smoothing: float = 0.0, *, input_size: int | None = None):
        self.probe_input_size = probe_size(probe_input_size, input_size, 32,
                                           'ClassifierAdapter')
        self.in_channels = in_channels
        self.label_smoothing = label_smoothing

    def prepare(self, batch):
        """The batch as ``dict(inputs=..., labels=...)``, whichever of the two forms it came
        in: the one place where a distiller's step reads a user's batch, so that everything
        after it (both networks, the loss terms, SoKD's search) sees one form. Anything else
        is refused here, naming the forms and what was given, instead of failing deeper with
        a bare ``KeyError`` or ``TypeError``."""
        return classification_batch(batch)

    def run(self, model: nn.Module, batch, compute_loss: bool = True) -> ModelOutput:
        logits = model(batch['inputs'])
        task_loss = None
        if compute_loss:
            task_loss = F.cross_entropy(logits.float(), batch['labels'],
                                        label_smoothing=self.label_smoothing)
        return ModelOutput(outputs=logits, task_loss=task_loss)

    def probe(self, model: nn.Module) -> None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else 'cpu'
        size = self.probe_input_size
        model(torch.zeros(2, self.in_channels, size, size, device=device))

    def output_loss(self, learner, target, batch, temperature):
        return kd_loss(learner.outputs, target.outputs, temperature)

    def labels(self, batch):
        return batch['labels']

    def input_size(self, batch):
        return tuple(batch['inputs'].shape[-2:])

    def head(self, model: nn.Module):
        """``(head_input path, forward_head)``: where the classifier's head takes over, so a
        distiller can tap that feature, change it and still get logits (SoKD)."""
        path, forward_head = getattr(model, 'head_input', None), getattr(model, 'forward_head',
                                                                         None)
        if not isinstance(path, str) or not callable(forward_head):
            raise AttributeError(f'{type(model).__name__} needs a `head_input` module path and '
                                 f'a `forward_head(feature)` method for refined logits')
        return path, forward_head
