"""DAM: Distinctive Area detection Module (README, "SoKD").

A CenterNet-style detector over feature maps: three heads (3x3 conv, ReLU, 1x1 conv) on a
common ``channels``-wide input, ``heatmap`` (K, sigmoid, bias -2.19), ``size`` (w, h) and
``offset`` (dx, dy), all in feature-grid cells. Teacher and student have their own 1x1 input
projection; the heads are shared.

* consistency (``student.dam``): MSE of the student-side outputs to the detached teacher-side
  outputs (size and offset weighted by the teacher's heatmap confidence) -> gradient to the
  student's feature, its projection and the heads;
* anchoring (``dam.anchor``): CenterNet losses of the teacher-side outputs, computed on the
  detached (refined) teacher feature, against targets from boxes -> gradient to DAM only.

Boxes are ``x1, y1, x2, y2`` in grid cells (cell ``j`` spans ``[j, j+1)``). Decoding picks
3x3-max-pool peaks, keeps the top k, and turns them into boxes and a binary mask; the base loss
is then averaged inside and (with weight ``beta``) outside the mask (``masked_mean``).

Everything runs as batched tensor operations, with no Python loop over images or boxes and
(up to ``CLOSURE_MAX_CELLS`` cells) no read of a device value, because DAM runs in every SoKD
training step: the loops, scatters and per-iteration reads it had made its pass cost more
operator calls than a whole FitNet step; now about half of one (README, "SoKD";
``benchmarks/sokd_overhead.py --dam-interval 1``). The targets and pseudo-boxes are
``dam_targets.py`` (``CLOSURE_MAX_CELLS`` there), the decoding ``dam_decode.py``, the cached
numbers ``dam_constants.py``.
``tests/dam_reference.py`` keeps the code they replaced, and the tests check that both give the
same targets, boxes, masks, losses and gradients.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distill.sokd.dam_constants import as_float32, const
# the decoding and the targets live in their own modules; this one is DAM's public face
from distill.sokd.dam_decode import boxes_to_mask, decode_boxes, decode_mask
from distill.sokd.dam_targets import (activation_map, centernet_targets, gaussian_radius,
                                      largest_component_boxes, scale_boxes)

__all__ = ['DAM', 'HEATMAP_BIAS', 'activation_map', 'anchoring_loss', 'boxes_to_mask',
           'centernet_targets', 'consistency_loss', 'decode_boxes', 'decode_mask', 'fields',
           'focal_loss', 'gaussian_radius', 'largest_component_boxes', 'masked_mean',
           'pass_losses', 'resize_mask', 'rms_normalised', 'scale_boxes', 'split_sides']

HEATMAP_BIAS = -2.19  # sigmoid(-2.19) ~ 0.1, CenterNet's prior


def _head(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(channels, out_channels, 1))


def rms_normalised(feature: torch.Tensor) -> torch.Tensor:
    """``feature`` divided by (its root mean square per sample + 1e-6), the scale detached.
    DAM's inputs are raw backbone maps whose scale varies by orders of magnitude (resnet32x4's
    layer3 at initialisation: ~16); unnormalised, SGD at lr 0.05 drove the anchoring term from
    5 to 1e11 in six steps on CIFAR-size resnet32x4 -> resnet8x4."""
    wide = feature.dtype if feature.dtype == torch.float64 else torch.float32  # bf16: in fp32
    norm = torch.linalg.vector_norm(feature.detach(), dim=(1, 2, 3), keepdim=True, dtype=wide)
    scale = torch.add(const(1e-6, norm.device), norm, alpha=math.prod(feature.shape[1:]) ** -0.5)
    return feature / scale.to(feature.dtype)


def fields(out: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """The named views of DAM's fused output (N, K+4, H, W) (``DAM.heads``): ``heatmap``
    (N,K,H,W) logits, ``size`` (w, h), ``offset`` (dx, dy), and ``box``, size and offset
    together (N,4,H,W)."""
    k = num_classes
    return dict(heatmap=out[:, :k], size=out[:, k:k + 2], offset=out[:, k + 2:], box=out[:, k:])


def split_sides(out: torch.Tensor, num_classes: int) -> tuple[dict, dict]:
    """``(teacher side, student side)`` of ``DAM.run``'s output, each ``heatmap`` and ``box``
    (split, not sliced: autograd then joins each split's gradients in one step)."""
    return tuple(dict(zip(('heatmap', 'box'), side.split([num_classes, 4], dim=1)))
                 for side in out.chunk(2))


class DAM(nn.Module):
    """Shared three-head module with per-network input projections. Each side's input is
    RMS-normalised per sample first (``rms_normalised``), so DAM trains alike whatever the
    scale of the tapped features.

    The three heads (heatmap, size, offset: 3x3 conv, ReLU, 1x1 conv each) are held fused:
    ``hidden``, their 3x3 convolutions stacked along the output channels, and ``out``, their
    1x1 convolutions as one block-diagonal 1x1 convolution (``out_mask`` zeroes the rest in
    every call, so no gradient or weight decay reaches it). The same function, initialised
    with the same random draws as three separate heads, in two convolutions instead of six.
    A state dict of the separate heads (``heatmap.0.weight``, ...) loads into it."""

    def __init__(self, teacher_channels: int, student_channels: int, channels: int = 64,
                 num_classes: int = 1):
        super().__init__()
        self.num_classes, self.channels = num_classes, channels
        self.teacher_proj = nn.Conv2d(teacher_channels, channels, 1)
        self.student_proj = nn.Conv2d(student_channels, channels, 1)
        heads = [_head(channels, width) for width in (num_classes, 2, 2)]  # the draws of old
        nn.init.constant_(heads[0][-1].bias, HEATMAP_BIAS)
        self.hidden = nn.utils.skip_init(nn.Conv2d, channels, 3 * channels, 3, padding=1)
        self.out = nn.utils.skip_init(nn.Conv2d, 3 * channels, num_classes + 4, 1)
        self.register_buffer('out_mask', self._block_mask(), persistent=False)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.cat([h[0].weight for h in heads]))
            self.hidden.bias.copy_(torch.cat([h[0].bias for h in heads]))
            self.out.weight.copy_(self._block_diagonal([h[2].weight for h in heads]))
            self.out.bias.copy_(torch.cat([h[2].bias for h in heads]))
        self.register_load_state_dict_pre_hook(_fuse_separate_heads)

    def _block_mask(self) -> torch.Tensor:
        return self._block_diagonal([torch.ones(width, self.channels, 1, 1)
                                     for width in (self.num_classes, 2, 2)])

    def _block_diagonal(self, weights) -> torch.Tensor:
        """(K+4, 3C, 1, 1): each head's (rows, C, 1, 1) weight on its third of the channels."""
        fused = torch.zeros(self.num_classes + 4, 3 * self.channels, 1, 1,
                            dtype=weights[0].dtype, device=weights[0].device)
        row = 0
        for i, weight in enumerate(weights):
            fused[row:row + len(weight), i * self.channels:(i + 1) * self.channels] = weight
            row += len(weight)
        return fused

    def heads(self, hidden: torch.Tensor) -> torch.Tensor:
        """The three heads on ``hidden`` (N, channels, H, W): the fused output (N, K+4, H, W),
        heatmap logits, size, offset (``fields`` names them)."""
        hidden = F.relu(self.hidden(hidden))
        return F.conv2d(hidden, self.out.weight * self.out_mask, self.out.bias)

    def forward(self, feature: torch.Tensor, side: str) -> dict[str, torch.Tensor]:
        """Head outputs on one network's feature: heatmap logits, size, offset (``fields``)."""
        proj = self.teacher_proj if side == 'teacher' else self.student_proj
        return fields(self.heads(F.relu(proj(rms_normalised(feature)))), self.num_classes)

    def run(self, teacher_feature: torch.Tensor, student_feature: torch.Tensor) -> torch.Tensor:
        """Both sides at once: the fused output (2B, K+4, H, W), the teacher side's B images
        first; the shared heads run once over both."""
        hidden = torch.cat([F.relu(self.teacher_proj(rms_normalised(teacher_feature))),
                            F.relu(self.student_proj(rms_normalised(student_feature)))])
        return self.heads(hidden)

    def both(self, teacher_feature: torch.Tensor, student_feature: torch.Tensor):
        """``(teacher side, student side)`` as two ``forward`` calls give them, computed by
        ``run``."""
        out, batch = self.run(teacher_feature, student_feature), teacher_feature.shape[0]
        return fields(out[:batch], self.num_classes), fields(out[batch:], self.num_classes)


def _fuse_separate_heads(module: DAM, state_dict, prefix, *args) -> None:
    """Load hook: a state dict of the three separate heads (``heatmap.0.weight``, ...,
    written before the heads were fused) becomes ``hidden``/``out``."""
    names = ('heatmap', 'size', 'offset')
    if f'{prefix}heatmap.0.weight' not in state_dict:
        return
    part = {f'{name}.{layer}.{kind}': state_dict.pop(f'{prefix}{name}.{layer}.{kind}')
            for name in names for layer in (0, 2) for kind in ('weight', 'bias')}
    state_dict[f'{prefix}hidden.weight'] = torch.cat([part[f'{n}.0.weight'] for n in names])
    state_dict[f'{prefix}hidden.bias'] = torch.cat([part[f'{n}.0.bias'] for n in names])
    state_dict[f'{prefix}out.weight'] = module._block_diagonal(
        [part[f'{n}.2.weight'] for n in names])
    state_dict[f'{prefix}out.bias'] = torch.cat([part[f'{n}.2.bias'] for n in names])


# ------------------------------------------------------------------------------ losses


def _box(out: dict) -> torch.Tensor:
    return out['box'] if 'box' in out else torch.cat([out['size'], out['offset']], dim=1)


def consistency_loss(student_out: dict, teacher_out: dict) -> torch.Tensor:
    """MSE of the student-side heads to the detached teacher-side heads.

    The heatmap (as probabilities) is matched everywhere. Size and offset only mean something
    where there is an object (CenterNet supervises them at centres only; elsewhere the teacher
    side's values are arbitrary), so their squared errors are weighted by the teacher side's
    detached heatmap confidence (max over classes), normalised by its sum; sizes are measured
    in map widths/heights, so that all three terms lie on the same [0, 1] scale (in grid cells
    a size error dominates the sum and destabilises training). With ``c`` the confidence and
    ``e`` the four squared errors (size in map units, offset in cells):
    ``mse(sigmoid(s), sigmoid(t)) + sum(c e) / (2 sum(c))`` (size and offset each a mean over
    their two channels).
    """
    teacher_prob = torch.sigmoid(as_float32(teacher_out['heatmap'].detach()))
    box = as_float32(_box(student_out)) - as_float32(_box(teacher_out).detach())
    return _consistency(torch.sigmoid(as_float32(student_out['heatmap'])), teacher_prob, box,
                        teacher_prob.amax(dim=1, keepdim=True))


def _consistency(student_prob, teacher_prob, box, confidence):
    """``consistency_loss`` from the heatmap probabilities (the teacher's detached), the raw
    box differences (size, offset in cells) and the teacher side's confidence (B,1,H,W)."""
    h, w = box.shape[-2:]
    # size in map widths/heights; sqrt(1/2) makes each pair's squared error a mean of two
    per_map = const((0.5 ** 0.5 / w, 0.5 ** 0.5 / h, 0.5 ** 0.5, 0.5 ** 0.5), box.device,
                    shape=(4, 1, 1))
    box, heat = box * per_map, student_prob - teacher_prob
    return ((heat * heat).sum() * const(1 / heat.numel(), heat.device)
            + (confidence * box * box).sum() / confidence.sum().clamp_min(1e-6))


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
               gamma: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, normalised by the number of peaks:
    ``-(sum_peaks (1-p)^a log p + sum_rest p^a (1-y)^g log(1-p)) / max(peaks, 1)``."""
    peaks = target == const(1.0, target.device)
    return _focal_sum(torch.sigmoid(as_float32(logits)), target, peaks, alpha, gamma) / \
        peaks.sum().clamp_min(1)


def _focal_sum(prob, target, peaks, alpha: float = 2.0, gamma: float = 4.0) -> torch.Tensor:
    """``focal_loss``'s numerator, from the heatmap probabilities."""
    one = const(1.0, target.device)
    prob = prob.clamp(1e-4, 1 - 1e-4)
    miss = one - prob
    pos = torch.log(prob) * (miss * miss if alpha == 2 else miss.pow(alpha))
    neg = torch.log(miss) * (prob * prob if alpha == 2 else prob.pow(alpha)) * \
        (one - target).pow(gamma)
    return -torch.where(peaks, pos, neg).sum()


def anchoring_loss(outputs: dict, targets: dict, size_weight: float = 0.1) -> torch.Tensor:
    """Focal heatmap loss + L1 size (weight 0.1, as CenterNet) + L1 offset at the centres."""
    centres = targets['centres'].unsqueeze(1)  # (B,1,H,W)
    l1 = _box_l1(as_float32(_box(outputs)), targets, centres, size_weight)
    return focal_loss(outputs['heatmap'], targets['heatmap']) + l1 / centres.sum().clamp_min(1)


def _box_l1(box: torch.Tensor, targets: dict, centres: torch.Tensor, size_weight: float):
    """The summed L1 of size (weighted) and offset at the centres (B,1,H,W)."""
    weights = const((size_weight, size_weight, 1.0, 1.0), centres.device, shape=(4, 1, 1))
    return ((box - _box(targets)).abs() * (centres * weights)).sum()


def pass_losses(out: torch.Tensor, num_classes: int, targets: dict | None = None,
                size_weight: float = 0.1):
    """``(consistency_loss, anchoring_loss or None, heatmap probabilities)`` of DAM's fused
    output of both sides (``DAM.run``: teacher images first), as ``split_sides`` and the two
    losses give them, in one pass: one sigmoid of both sides' heatmaps serves the consistency
    term, the focal loss and (detached) the mask's decoding, and the focal loss's peaks are
    the targets' centres (a Gaussian reaches 1 at its centre cell only). The same values and
    gradients as the separate functions (``tests/test_sokd_dam.py``), fewer operator calls."""
    logits, box = as_float32(out).split([num_classes, 4], dim=1)
    prob = torch.sigmoid(logits)
    teacher_prob, student_prob = prob.chunk(2)
    teacher_box, student_box = box.chunk(2)
    teacher_known = teacher_prob.detach()
    consistency = _consistency(student_prob, teacher_known, student_box - teacher_box.detach(),
                               teacher_known.amax(dim=1, keepdim=True))
    if targets is None:
        return consistency, None, prob
    centres = targets['centres'].unsqueeze(1)  # (B,1,H,W), float: its sum needs no cast
    count = centres.sum().clamp_min(1)
    l1 = _box_l1(teacher_box, targets, centres, size_weight)
    if num_classes == 1:  # the peaks are the centre cells: one normaliser for both (two
        # divisions, as anchoring_loss rounds)
        return consistency, (_focal_sum(teacher_prob, targets['heatmap'], centres.bool())
                             / count + l1 / count), prob
    peaks = targets['heatmap'] == const(1.0, centres.device)  # boxes of two classes may share
    focal = _focal_sum(teacher_prob, targets['heatmap'], peaks) / peaks.sum().clamp_min(1)
    return consistency, focal + l1 / count, prob


def resize_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """A (B,1,H,W) binary mask on another grid: max-pool when shrinking, nearest otherwise."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    if mask.shape[-2] >= size[0] and mask.shape[-1] >= size[1]:
        return F.adaptive_max_pool2d(mask, size)
    return F.interpolate(mask, size=tuple(size), mode='nearest')


def masked_mean(distance: torch.Tensor, mask: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """``sum(M d)/max(sum M, 1) + beta * sum((1-M) d)/max(sum(1-M), 1)`` (README, "SoKD"), with
    ``distance`` (B,H,W) the base loss per location and ``mask`` (B,1,H,W) or (B,H,W)."""
    if mask.dim() == 3:
        mask = mask[:, None]
    mask = resize_mask(as_float32(mask), distance.shape[-2:])[:, 0].to(distance.dtype)
    outside_mask = const(1.0, mask.device).to(distance.dtype) - mask
    inside = (mask * distance).sum() / mask.sum().clamp_min(1)
    outside = (outside_mask * distance).sum() / outside_mask.sum().clamp_min(1)
    return torch.add(inside, outside, alpha=beta)
