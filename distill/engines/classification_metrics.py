"""Evaluation metrics of classifiers: top-1, top-5 and expected calibration error (ECE).

All three are computed from sums (correct counts, and per confidence bin the count, the summed
confidence and the summed correctness), so the shards of several processes combine exactly by
summing before dividing.

ECE (Guo et al., 2017), with ``num_bins`` equal-width bins of the top-1 confidence ``p``:

    ECE = sum_b (n_b / n) * | acc_b - conf_b |  =  (1/n) * sum_b | sum_{i in b} (correct_i - p_i) |
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import nn


def confidence_bins(confidences: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Bin index of each confidence: bin b holds (b/num_bins, (b+1)/num_bins]; 0 goes to bin 0."""
    return (confidences * num_bins).ceil().long().sub(1).clamp(0, num_bins - 1)


def expected_calibration_error(confidences: torch.Tensor, correct: torch.Tensor,
                               num_bins: int = 15) -> float:
    """ECE of top-1 predictions as a fraction in [0, 1] (the reference formula, one process)."""
    meter = ClassificationMeter(num_bins=num_bins)
    meter.add_predictions(confidences, correct.bool(), correct.bool())
    return meter.summary()['ece'] / 100.0


class ClassificationMeter:
    """Accumulates the sums behind top-1, top-5 and ECE; ``summary(reduce)`` gives percents."""

    def __init__(self, num_bins: int = 15, device='cpu'):
        self.num_bins = num_bins
        # [samples, top1 correct, top5 correct] + per bin [count, confidence sum, correct sum]
        self.sums = torch.zeros(3 + 3 * num_bins, dtype=torch.float64, device=device)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        probs = logits.detach().float().softmax(dim=1)
        confidences, predictions = probs.max(dim=1)
        k = min(5, logits.shape[1])
        top5 = (logits.detach().topk(k, dim=1).indices == labels[:, None]).any(dim=1)
        self.add_predictions(confidences, predictions == labels, top5)

    def add_predictions(self, confidences, top1_correct, top5_correct) -> None:
        sums = self.sums
        confidences = confidences.to(sums)
        top1 = top1_correct.to(sums)
        sums[0] += confidences.numel()
        sums[1] += top1.sum()
        sums[2] += top5_correct.to(sums).sum()
        bins = confidence_bins(confidences, self.num_bins).to(sums.device)
        per_bin = sums[3:].view(3, self.num_bins)
        per_bin[0].index_add_(0, bins, torch.ones_like(confidences))
        per_bin[1].index_add_(0, bins, confidences)
        per_bin[2].index_add_(0, bins, top1)

    def summary(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
        """``top1``, ``top5``, ``ece`` (all in percent) and ``num_samples``. ``reduce`` sums the
        raw sums over processes (e.g. ``lambda t: accelerator.reduce(t, 'sum')``)."""
        sums = reduce(self.sums.clone()) if reduce is not None else self.sums
        count = float(sums[0])
        if count == 0:
            raise ValueError('no sample was evaluated')
        per_bin = sums[3:].view(3, self.num_bins)
        ece = (per_bin[2] - per_bin[1]).abs().sum() / count
        return dict(top1=100.0 * float(sums[1]) / count, top5=100.0 * float(sums[2]) / count,
                    ece=100.0 * float(ece), num_samples=int(count))


@torch.no_grad()
def evaluate_classifiers(models: dict[str, nn.Module], batches: Iterable[dict],
                         reduce=None, autocast=contextlib.nullcontext,
                         num_bins: int = 15, device='cpu') -> dict[str, dict]:
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
