"""Image classifiers: any ``nn.Module`` mapping images (B,3,H,W) to logits (B,K)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.adapters.base import Adapter, ModelOutput, probe_size
from distill.losses.logits import kd_loss
from distill.registry import ADAPTERS


@ADAPTERS.register_module()
class ClassifierAdapter(Adapter):
    """Batch: ``dict(inputs=Tensor[B,3,H,W], labels=Tensor[B])``.

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
