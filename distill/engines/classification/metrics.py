"""Evaluation metrics of classifiers: top-1, top-5 and expected calibration error (ECE), by
torchmetrics (``MulticlassAccuracy``, ``MulticlassCalibrationError`` with 15 equal-width bins
of the top-1 confidence and the L1 norm, Guo et al., 2017):

    ECE = sum_b (n_b / n) * | acc_b - conf_b |

Under ``torch.distributed`` torchmetrics gathers every process's states at ``compute()`` (the
shards may differ in size), so every process must evaluate, even one with no batch.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import nn

NUM_BINS = 15


class ClassificationMeter:
    """Top-1, top-5 (percent), ECE (percent) and the sample count of a stream of logits."""

    def __init__(self, num_bins: int = NUM_BINS, device='cpu'):
        self.num_bins, self.device = num_bins, torch.device(device)
        self.metrics = None  # built at the first batch, when the number of classes is known
        self.count = torch.zeros((), dtype=torch.float64, device=self.device)

    def _build(self, num_classes: int):
        from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError
        self.metrics = dict(
            top1=MulticlassAccuracy(num_classes, top_k=1, average='micro'),
            top5=MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average='micro'),
            ece=MulticlassCalibrationError(num_classes, n_bins=self.num_bins, norm='l1'))
        for metric in self.metrics.values():
            metric.to(self.device)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.detach().float()
        if self.metrics is None:
            self._build(logits.shape[1])
        for name, metric in self.metrics.items():
            # the calibration error reads probabilities; accuracy is the same on either
            metric.update(logits.softmax(dim=1) if name == 'ece' else logits, labels)
        self.count += labels.numel()

    def summary(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
        """``top1``, ``top5``, ``ece`` (percent) and ``num_samples``; ``reduce`` sums the sample
        count over processes (the metrics sync themselves)."""
        count = float(reduce(self.count.clone()) if reduce is not None else self.count)
        if count == 0 or self.metrics is None:
            raise ValueError('no sample was evaluated')
        values = {name: 100.0 * float(metric.compute()) for name, metric in self.metrics.items()}
        return dict(values, num_samples=int(count))


@torch.no_grad()
def evaluate_classifiers(models: dict[str, nn.Module], batches: Iterable[dict],
                         reduce=None, autocast=contextlib.nullcontext,
                         num_bins: int = NUM_BINS, device='cpu') -> dict[str, dict]:
    """Run every model of ``models`` (name -> classifier) on the same (already normalised)
    batches in eval mode; return ``{name: summary}``. Training modes are restored after.
    Every process must call it (even one with no batch): the sums are reduced across them."""
    modes = {name: model.training for name, model in models.items()}
    meters = {name: ClassificationMeter(num_bins, device) for name in models}
    try:
        for model in models.values():
            model.eval()
        for batch in batches:
            for name, model in models.items():
                with autocast():
                    logits = model(batch['inputs'])
                meters[name].update(logits, batch['labels'])
    finally:
        for name, model in models.items():
            model.train(modes[name])
    return {name: meter.summary(reduce) for name, meter in meters.items()}
