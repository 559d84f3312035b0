"""MMDetection detectors (single-stage: RetinaNet, ...; two-stage: Faster R-CNN, ...) as seen
by a distiller.

Batch: ``dict(inputs=Tensor[B,3,H,W], data_samples=list[DetDataSample])``, the output of the
(student's) ``DetDataPreprocessor``. The task loss is the sum of the detector's own losses;
features come from taps on the backbone or the FPN (``dict(path='neck', index=i)`` for level
i); SoKD's DAM is anchored on each image's ground-truth boxes (crowd / ignored instances are
not in ``gt_instances``), which the distiller scales to the tapped level's grid.
"""
from __future__ import annotations

import torch
from torch import nn

from distill.adapters.base import Adapter, ModelOutput
from distill.adapters.mm_common import InputConverter, sum_mm_losses
from distill.registry import ADAPTERS


def box_tensor(boxes) -> torch.Tensor:
    """(N,4) x1,y1,x2,y2 from mmdet boxes (a tensor or a ``HorizontalBoxes``)."""
    boxes = getattr(boxes, 'tensor', boxes)
    return torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)


@ADAPTERS.register_module()
class MMDetAdapter(Adapter):
    """Args:
        probe_input_size: side of the zero image used to find tap shapes (a multiple of the
            largest FPN stride).
    """

    def __init__(self, probe_input_size: int = 128):
        self.probe_input_size = probe_input_size
        self.convert_inputs = InputConverter()

    def run(self, model: nn.Module, batch, compute_loss: bool = True) -> ModelOutput:
        inputs = self.convert_inputs(model, batch['inputs'])
        if not compute_loss:
            # a frozen teacher only has to produce the tapped backbone / FPN features
            model.extract_feat(inputs)
            return ModelOutput()
        # through model(...): SoKD's hypergradient calls a parameter stand-in
        losses = model(inputs, batch['data_samples'], mode='loss')
        return ModelOutput(task_loss=sum_mm_losses(losses), extra=dict(losses=losses))

    def probe(self, model: nn.Module) -> None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else 'cpu'
        size = self.probe_input_size
        model.extract_feat(self.convert_inputs(model, torch.zeros(2, 3, size, size,
                                                                  device=device)))

    def output_loss(self, learner, target, batch, temperature):
        raise ValueError('detectors have no single logits tensor to distil: set the kd loss '
                         'weight to 0 (loss_weights=dict(kd=0.0)) in detection configs')

    def anchor_boxes(self, batch):
        """Per image, its ground-truth boxes (N_i,4) in input pixels; (0,4) if it has none."""
        device = batch['inputs'].device
        return [box_tensor(s.gt_instances.bboxes).to(device) if 'gt_instances' in s
                else torch.zeros(0, 4, device=device) for s in batch['data_samples']]

    def input_size(self, batch):
        return tuple(batch['inputs'].shape[-2:])
