"""MMSegmentation segmentors (``EncoderDecoder``) as seen by a distiller.

Batch: ``dict(inputs=Tensor[B,3,H,W], data_samples=list[SegDataSample])``, the output of the
(student's) ``SegDataPreProcessor``. One backbone pass per network and step: the decode head is
run once, its logits serve both the segmentor's own loss and per-pixel distillation.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.adapters.base import Adapter, ModelOutput
from distill.losses.logits import kd_loss
from distill.adapters.mm_common import InputConverter, sum_mm_losses
from distill.registry import ADAPTERS


def mask_components_to_boxes(mask: np.ndarray, ignore_values=()) -> np.ndarray:
    """Boxes (N,4) x1,y1,x2,y2 (x2/y2 exclusive) of the connected components of every class of
    ``mask`` except ``ignore_values`` (background, ignore index)."""
    from scipy import ndimage
    boxes = []
    for value in np.unique(mask):
        if value in ignore_values:
            continue
        components, count = ndimage.label(mask == value)
        for rows, cols in ndimage.find_objects(components)[:count]:
            boxes.append([cols.start, rows.start, cols.stop, rows.stop])
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


@ADAPTERS.register_module()
class MMSegAdapter(Adapter):
    """Task loss from the segmentor's decode (and auxiliary) heads, per-pixel logits, KD per
    pixel over the labelled pixels, DAM anchor boxes from the ground-truth mask.

    Args:
        ignore_index: label value excluded from per-pixel KD and anchor boxes.
        background_classes: class indices that are not objects (no anchor boxes), e.g. ``[0]``
            when class 0 is background; Cityscapes has none.
        probe_input_size: side of the zero image used to find tap shapes.
    """

    def __init__(self, ignore_index: int = 255, background_classes=(),
                 probe_input_size: int = 64):
        self.ignore_index = ignore_index
        self.background_classes = tuple(background_classes)
        self.probe_input_size = probe_input_size
        self.convert_inputs = InputConverter()

    def run(self, model: nn.Module, batch, compute_loss: bool = True) -> ModelOutput:
        inputs = self.convert_inputs(model, batch['inputs'])
        data_samples = batch['data_samples']
        # through model(...) rather than model.extract_feat: SoKD's hypergradient calls a
        # stand-in with other parameters (functional_call), which only __call__ honours; the
        # backbone (or neck) output is caught on the way for the auxiliary head
        feat_module = model.neck if model.with_neck else model.backbone
        caught = {}
        handle = feat_module.register_forward_hook(
            lambda module, args, output: caught.__setitem__('feats', output))
        try:
            seg_logits = model(inputs, data_samples, mode='tensor')
        finally:
            handle.remove()
        task_loss, losses = None, {}
        if compute_loss:
            losses = {f'decode.{k}': v for k, v in
                      model.decode_head.loss_by_feat(seg_logits, data_samples).items()}
            if model.with_auxiliary_head:
                losses.update(model._auxiliary_head_forward_train(caught['feats'],
                                                                  data_samples))
            task_loss = sum_mm_losses(losses)
        return ModelOutput(outputs=seg_logits, task_loss=task_loss, extra=dict(losses=losses))

    def _probe_inputs(self, model: nn.Module) -> torch.Tensor:
        param = next(model.parameters(), None)
        device = param.device if param is not None else 'cpu'
        size = self.probe_input_size
        return self.convert_inputs(model, torch.zeros(2, 3, size, size, device=device))

    def probe(self, model: nn.Module) -> None:
        """The call ``run`` makes: ``EncoderDecoder._forward`` runs ``decode_head.forward``
        directly, so a hook on ``decode_head`` itself never fires in training (its modules'
        hooks do); a probe through ``model.decode_head(...)`` would accept such a tap."""
        model(self._probe_inputs(model), mode='tensor')

    def probe_stages(self, model: nn.Module) -> None:
        """The backbone (and neck) only: the decode head's last map is the per-pixel logits,
        which the kd term distils already, not a stage to pair."""
        model.extract_feat(self._probe_inputs(model))

    def label_map(self, batch) -> torch.Tensor:
        """(B,H,W) ground-truth labels of the batch (padded like the inputs)."""
        return torch.stack([s.gt_sem_seg.data for s in batch['data_samples']]).squeeze(1).long()

    def output_loss(self, learner, target, batch, temperature):
        """Per-pixel KD at the label resolution over the pixels whose label is not ignored."""
        labels = self.label_map(batch).to(learner.outputs.device)
        size = labels.shape[-2:]
        learner_logits = F.interpolate(learner.outputs, size, mode='bilinear',
                                       align_corners=False)
        target_logits = F.interpolate(target.outputs, size, mode='bilinear',
                                      align_corners=False)
        return kd_loss(learner_logits, target_logits, temperature,
                       valid_mask=labels != self.ignore_index)

    def anchor_boxes(self, batch):
        ignored = (self.ignore_index, *self.background_classes)
        device = batch['inputs'].device
        return [torch.from_numpy(mask_components_to_boxes(
                    s.gt_sem_seg.data.squeeze(0).cpu().numpy(), ignored)).to(device)
                for s in batch['data_samples']]

    def input_size(self, batch):
        return tuple(batch['inputs'].shape[-2:])
