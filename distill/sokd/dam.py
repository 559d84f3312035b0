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

Everything runs as a few batched tensor operations, with no Python loop over images, boxes or
propagation steps and no read of a device value: DAM runs in every SoKD training step, and on
a GPU such loops and reads were most of its cost (issue 20: 1,516 operator calls for DAM's
forward and backward at batch 4, more than a whole FitNet step; now about a fifth of that,
``benchmarks/sokd_overhead.py --dam-interval 1``). Numbers in the hot path are cached
device tensors (``_c``): a Python number in a tensor operation is wrapped and converted on every
call, four more dispatcher calls each, and a launch-bound GPU step waits on exactly those.
``tests/dam_reference.py`` keeps the
loop-and-scatter code it replaced, and the tests check that both give the same targets, boxes,
masks and losses.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

HEATMAP_BIAS = -2.19  # sigmoid(-2.19) ~ 0.1, CenterNet's prior


@functools.lru_cache(maxsize=256)
def _c(values, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """A constant made once per device: a number (0-dim) or a tuple. A plain tensor even when
    first asked for under ``inference_mode`` (autograd may save it later)."""
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _grid(length: int, device: torch.device) -> torch.Tensor:
    """``0, 1, ..., length - 1`` as floats (cell indices)."""
    with torch.inference_mode(False):
        return torch.arange(length, dtype=torch.float32, device=device)


def _float(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.float32 else tensor.float()


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
    scale = torch.add(_c(1e-6, norm.device), norm, alpha=math.prod(feature.shape[1:]) ** -0.5)
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
    teacher_prob = torch.sigmoid(_float(teacher_out['heatmap'].detach()))
    heat = torch.sigmoid(_float(student_out['heatmap'])) - teacher_prob
    device = heat.device
    confidence = teacher_prob.amax(dim=1, keepdim=True)  # (B,1,H,W)
    h, w = heat.shape[-2:]
    # size in map widths/heights; sqrt(1/2) makes each pair's squared error a mean of two
    per_map = _c((0.5 ** 0.5 / w, 0.5 ** 0.5 / h, 0.5 ** 0.5, 0.5 ** 0.5), device)
    box = (_float(_box(student_out)) - _float(_box(teacher_out).detach())) * per_map[:, None,
                                                                                     None]
    return ((heat * heat).sum() * _c(1 / heat.numel(), device)
            + (confidence * box * box).sum() / confidence.sum().clamp_min(1e-6))


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
               gamma: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, normalised by the number of peaks:
    ``-(sum_peaks (1-p)^a log p + sum_rest p^a (1-y)^g log(1-p)) / max(peaks, 1)``."""
    device = target.device
    one = _c(1.0, device)
    prob = torch.sigmoid(_float(logits)).clamp(1e-4, 1 - 1e-4)
    miss = one - prob
    peaks = target == one
    pos = torch.log(prob) * (miss * miss if alpha == 2 else miss.pow(alpha))
    neg = torch.log(miss) * (prob * prob if alpha == 2 else prob.pow(alpha)) * \
        (one - target).pow(gamma)
    return -torch.where(peaks, pos, neg).sum() / peaks.sum().clamp_min(1)


def anchoring_loss(outputs: dict, targets: dict, size_weight: float = 0.1) -> torch.Tensor:
    """Focal heatmap loss + L1 size (weight 0.1, as CenterNet) + L1 offset at the centres."""
    centres = targets['centres'].unsqueeze(1)  # (B,1,H,W)
    weights = _c((size_weight, size_weight, 1.0, 1.0), centres.device)[:, None, None]
    l1 = ((_float(_box(outputs)) - _box(targets)).abs() * (centres * weights)).sum()
    return focal_loss(outputs['heatmap'], targets['heatmap']) + l1 / centres.sum().clamp_min(1)


# ------------------------------------------------------------------------------ targets


def gaussian_radius(height: torch.Tensor, width: torch.Tensor,
                    min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's radius: the smallest of the three corner-shift cases keeping the IoU, the
    three quadratics' larger roots ``(b + sqrt(b^2 - k c)) / 2`` computed side by side along a
    last dimension (the same arithmetic, term by term, as CenterNet's three formulas)."""
    return _radius(height.unsqueeze(-1), width.unsqueeze(-1), min_overlap).squeeze(-1)


def _radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float) -> torch.Tensor:
    """``gaussian_radius`` of (..., 1) heights and widths, (..., 1)."""
    m, device = min_overlap, height.device
    b = (height + width) * _c((1.0, 2.0, -2 * m), device)
    c = width * _c((1.0, 1 - m, m - 1), device) * height
    c = c * _c((1 - m, 1.0, 1.0), device) / _c((1 + m, 1.0, 1.0), device)
    root = (b + (b * b - _c((4.0, 16.0, 4 * (4 * m)), device) * c).sqrt()) * _c(0.5, device)
    return root.amin(dim=-1, keepdim=True).clamp_min(0)


def _padded(boxes, labels, num_classes: int):
    """``(boxes (B,N,4), labels (B,N) or None)``: per-image lists padded with empty boxes,
    which make no target."""
    if torch.is_tensor(boxes):
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(f'boxes as a tensor must be (B,N,4), got {tuple(boxes.shape)}')
        labels = None if labels is None or num_classes == 1 else torch.as_tensor(
            labels, device=boxes.device).reshape(boxes.shape[:2]).long()
        return _float(boxes), labels
    device = next((b.device for b in boxes if torch.is_tensor(b)), torch.device('cpu'))
    per_image = [torch.as_tensor(b, dtype=torch.float32, device=device).reshape(-1, 4)
                 for b in boxes]
    padded = pad_sequence(per_image, batch_first=True) if per_image else \
        torch.zeros(0, 0, 4, device=device)
    if labels is None or num_classes == 1:
        return padded, None
    return padded, pad_sequence([torch.as_tensor(l, device=device).reshape(-1).long()
                                 for l in labels], batch_first=True)


def centernet_targets(boxes, labels, num_classes: int, height: int,
                      width: int) -> dict[str, torch.Tensor]:
    """Targets on an (height, width) grid from per-image boxes in grid cells: a list of
    (N_i, 4) tensors, or one (B,N,4) tensor (SoKD's classification pseudo-boxes, one per
    image).

    Returns ``heatmap`` (B,K,H,W) Gaussians peaking at 1 on box centres (the maximum where they
    overlap), ``size`` and ``offset`` (B,2,H,W) set at the centre cells (``box``, the two
    together), and ``centres`` (B,H,W) marking them. ``labels`` (per image (N_i,) class ids)
    may be None, and with ``num_classes=1`` they are ignored: every box goes to channel 0.
    Empty (zero-area) boxes make no target. Two boxes of one image centred in the same cell:
    the later one's size and offset.
    """
    boxes, labels = _padded(boxes, labels, num_classes)
    batch, count = boxes.shape[:2]
    device = boxes.device
    if count == 0:
        zeros = torch.zeros(batch, num_classes + 5, height, width, device=device)
        return dict(heatmap=zeros[:, :num_classes], size=zeros[:, num_classes:num_classes + 2],
                    offset=zeros[:, num_classes + 2:num_classes + 4],
                    box=zeros[:, num_classes:num_classes + 4], centres=zeros[:, -1])
    zero, one = _c(0.0, device), _c(1.0, device)
    low, high = boxes[..., :2], boxes[..., 2:]  # (B,N,2): x, y
    extent = high - low  # w, h
    centre = (low + high) / _c(2.0, device)
    cell = centre.floor().clamp(zero, _c((width - 1.0, height - 1.0), device))
    valid = (extent > zero).all(dim=-1)[..., None, None]  # (B,N,1,1)
    radius = _radius(extent[..., 1:], extent[..., :1], 0.7).floor()[..., None]  # (B,N,1,1)
    sigma = torch.add(one, radius, alpha=2) / _c(6.0, device)  # (2r + 1) / 6
    # each cell's distance to the centre cell, along x (B,N,1,W) and y (B,N,H,1)
    xs = (_grid(width, device) - cell[..., :1])[..., None, :]
    ys = (_grid(height, device) - cell[..., 1:])[..., None]
    inside = (xs.abs() <= radius) & (ys.abs() <= radius) & valid  # (B,N,H,W)
    blobs = torch.where(inside, torch.exp(-(xs * xs + ys * ys) / (sigma * sigma * _c(2.0, device))),
                        zero)
    if num_classes == 1:
        heatmap = blobs if count == 1 else blobs.amax(dim=1, keepdim=True)
    else:  # each class's channel: the maximum of its boxes' Gaussians (labels None: class 0)
        labels = torch.zeros_like(boxes[..., 0], dtype=torch.long) if labels is None else labels
        one_hot = F.one_hot(labels, num_classes).to(blobs.dtype)  # (B,N,K)
        heatmap = (blobs[:, :, None] * one_hot[..., None, None]).amax(dim=1)
    marks = (xs == zero) & (ys == zero) & valid  # (B,N,H,W): each box's centre cell
    if count > 1:  # one box per centre cell: the later one
        order = _grid(count, device).reshape(1, count, 1, 1) + one
        latest = torch.where(marks, order, zero).amax(dim=1, keepdim=True)
        marks = marks & (order == latest)
    values = torch.cat([extent, centre - cell], dim=-1)  # (B,N,4): w, h, dx, dy
    marks = torch.where(marks, one, zero)
    if count == 1:
        box, centres = marks * values[:, 0, :, None, None], marks[:, 0]
    else:
        box = (marks[:, :, None] * values[..., None, None]).sum(dim=1)
        centres = marks.amax(dim=1)
    return dict(heatmap=heatmap, size=box[:, :2], offset=box[:, 2:], box=box, centres=centres)


def scale_boxes(boxes, from_size: tuple, to_size: tuple):
    """Rescale per-image boxes from a (H, W) grid (e.g. input pixels) to another: a list of
    (N_i, 4) boxes, or one (B,N,4) tensor (returned as a tensor; as it is when the grids are
    the same)."""
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    if torch.is_tensor(boxes):
        if (sy, sx) == (1.0, 1.0):
            return _float(boxes)
        return _float(boxes) * _c((sx, sy, sx, sy), boxes.device)
    scale = torch.tensor([sx, sy, sx, sy])
    return [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) * scale.to(
        b.device if torch.is_tensor(b) else 'cpu') for b in boxes]


# ------------------------------------------------------------------- pseudo-boxes (classif.)


def activation_map(feature: torch.Tensor, labels: torch.Tensor | None,
                   fc_weight: torch.Tensor | None) -> torch.Tensor:
    """Class activation map of the true class, ReLU'd, (B,H,W): ``sum_c W[y,c] f[c]``.

    Without a usable linear head (``fc_weight`` None, or not matching the channels) it falls
    back to the channel-mean activation map, which shows where the feature is strong but not
    which class it is about.
    """
    feature = _float(feature.detach())
    if (fc_weight is None or labels is None or fc_weight.dim() != 2
            or fc_weight.shape[1] != feature.shape[1]):
        return feature.mean(dim=1).relu()
    class_weights = _float(fc_weight.detach())[labels]  # (B, C)
    cam = torch.bmm(class_weights[:, None], feature.flatten(2))  # (B, 1, HW)
    return cam.reshape(feature.shape[0], *feature.shape[2:]).relu()


# Above this many cells a map's components are found by label propagation (steps as long as
# the longest path in a component, each a read of the device) rather than by the transitive
# closure (cells^3 work per squaring).
CLOSURE_MAX_CELLS = 1024


@functools.lru_cache(maxsize=16)
def _neighbours(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(HW, HW) bool: cells within one step (8-connected, a cell with itself)."""
    with torch.inference_mode(False):
        rows = torch.arange(height, device=device).repeat_interleave(width)
        cols = torch.arange(width, device=device).repeat(height)
        return (((rows[:, None] - rows[None, :]).abs() <= 1)
                & ((cols[:, None] - cols[None, :]).abs() <= 1))


def _largest_component_by_propagation(fg: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the largest component, by label propagation (large maps)."""
    b, h, w = fg.shape
    index = torch.arange(1, h * w + 1, device=fg.device, dtype=torch.float32).reshape(1, h, w)
    labels = torch.where(fg, index, 0.0)
    for _ in range(h * w):
        grown = F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * fg
        if torch.equal(grown, labels):
            break
        labels = grown
    flat = labels.flatten(1).long()
    counts = torch.zeros(b, h * w + 1, device=fg.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float32))
    counts[:, 0] = 0
    return labels.long().eq(counts.argmax(dim=1).reshape(b, 1, 1))


def largest_component_boxes(cam: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Box (B,4) in grid cells of the largest 8-connected component of ``cam >= threshold *
    max`` (of equal ones, the one whose largest cell index is smallest); the whole map when
    the CAM is flat zero.

    Up to ``CLOSURE_MAX_CELLS`` cells the components come from the transitive closure of the
    foreground's 8-neighbourhood, by repeated squaring: log2(HW) batched matrix products and no
    loop that waits on the device; each cell's component is named by its largest 1-based cell
    index, as label propagation names it."""
    b, h, w = cam.shape
    n, device = h * w, cam.device
    zero, one = _c(0.0, device), _c(1.0, device)
    peak = cam.amax(dim=(1, 2), keepdim=True)
    # ((cam >= t max) & (max > 0)) | (max <= 0): a dead CAM takes everything
    fg = (cam >= peak * _c(threshold, device)) | (peak <= zero)
    if n > CLOSURE_MAX_CELLS:
        component = _largest_component_by_propagation(fg)
    else:
        flat = fg.reshape(b, n)
        reach = torch.where(_neighbours(h, w, device) & flat[:, :, None] & flat[:, None, :],
                            one, zero)
        for _ in range(max(1, (n - 1).bit_length())):  # paths of up to 2^k steps
            reach = torch.bmm(reach, reach).clamp_max_(1)
        labels = (reach * (_grid(n, device) + one)).amax(dim=2)  # (B, HW); 0: background
        # the largest component, ties to the smallest label (as argmax over labels' counts)
        key = reach.sum(dim=2) * _c(n + 1.0, device) - labels
        chosen = reach.gather(1, key.argmax(dim=1)[:, None, None].expand(b, 1, n))
        component = (chosen > zero).reshape(b, h, w)
    # the columns and rows the component touches, (B, 2, L): x then y, padded to the longer
    length = max(h, w)
    lines = [component.any(dim=1), component.any(dim=2)]
    lines = torch.stack([x if x.shape[1] == length else F.pad(x, (0, length - x.shape[1]))
                         for x in lines], dim=1)
    cells = _grid(length, device)
    low = torch.where(lines, cells, _c(float(length), device)).amin(dim=2)
    high = torch.where(lines, cells, _c(-1.0, device)).amax(dim=2) + one
    return torch.cat([low, high], dim=1)  # x1, y1, x2, y2


# ------------------------------------------------------------------------------ decoding


@functools.lru_cache(maxsize=16)
def _cell_xy(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(HW, 2): each flat cell index's (column, row)."""
    with torch.inference_mode(False):
        index = torch.arange(height * width, device=device)
        return torch.stack([index % width, index // width], dim=1).float()


@torch.no_grad()
def _decode(heatmap_prob: torch.Tensor, box: torch.Tensor, top_k: int):
    """``(low corners (N,k,2) x1 y1, high corners (N,k,2) x2 y2, scores (N,k))`` of the top-k
    3x3-max-pool peaks, clamped to the map; ``box`` (N,4,H,W) holds size and offset."""
    n, k_classes, h, w = heatmap_prob.shape
    device = heatmap_prob.device
    zero = _c(0.0, device)
    peaks = torch.where(F.max_pool2d(heatmap_prob, 3, stride=1, padding=1) == heatmap_prob,
                        heatmap_prob, zero)
    k = min(top_k, k_classes * h * w)
    scores, cell = peaks.flatten(1).topk(k, dim=1)
    if k_classes > 1:
        cell = cell % (h * w)
    values = _float(box).flatten(2).transpose(1, 2).gather(1, cell[..., None].expand(n, k, 4))
    centre = _cell_xy(h, w, device)[cell] + values[..., 2:]  # (N,k,2): cx, cy
    half = values[..., :2].clamp_min(0) * _c(0.5, device)
    limit = _c((float(w), float(h)), device)
    return (centre - half).clamp(zero, limit), (centre + half).clamp(zero, limit), scores


@torch.no_grad()
def decode_boxes(heatmap_prob: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
                 top_k: int = 8, score_threshold: float = 0.3):
    """Peaks -> boxes. Returns ``boxes`` (B,k,4) in grid cells, clamped to the map, ``scores``
    (B,k) and ``keep`` (B,k) (score above the threshold)."""
    low, high, scores = _decode(heatmap_prob, torch.cat([size, offset], dim=1), top_k)
    return torch.cat([low, high], dim=-1), scores, scores >= score_threshold


def _corners_to_mask(low: torch.Tensor, high: torch.Tensor, keep: torch.Tensor, height: int,
                     width: int) -> torch.Tensor:
    """(N,1,H,W) bool: the cells that overlap any kept box of corners ``low``/``high``
    (N,k,2)."""
    cells = _grid(max(height, width), low.device)
    inside = (cells < high[..., None]) & (cells + _c(1.0, low.device) > low[..., None])
    in_x, in_y = inside[:, :, 0, :width], inside[:, :, 1, :height]  # (N,k,W), (N,k,H)
    covered = (in_x & keep[..., None])[..., None, :] & in_y[..., :, None]
    return covered.any(dim=1, keepdim=True)


def boxes_to_mask(boxes: torch.Tensor, keep: torch.Tensor, height: int,
                  width: int) -> torch.Tensor:
    """(B,1,H,W) mask of the cells that overlap any kept box."""
    return _corners_to_mask(boxes[..., :2], boxes[..., 2:], keep, height, width).float()


@torch.no_grad()
def decode_mask(out: torch.Tensor, num_classes: int, sides: int, top_k: int = 8,
                score_threshold: float = 0.3) -> torch.Tensor:
    """The mask (B,1,H,W) of DAM's fused output ``out`` (sides*B, K+4, H, W), ``sides`` sides
    stacked along the batch: the union over the sides of the cells that overlap a decoded box
    whose score passes the threshold; an image with no such box keeps its whole map."""
    h, w = out.shape[-2:]
    device = out.device
    low, high, scores = _decode(torch.sigmoid(_float(out[:, :num_classes])), out[:, num_classes:],
                                top_k)
    covered = _corners_to_mask(low, high, scores >= _c(score_threshold, device), h, w)
    if sides > 1:
        covered = covered.reshape(sides, -1, 1, h, w).any(dim=0)
    covered = covered | ~covered.any(dim=(2, 3), keepdim=True)  # no box: the whole map
    return torch.where(covered, _c(1.0, device), _c(0.0, device))


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
    mask = _float(resize_mask(_float(mask), distance.shape[-2:]))[:, 0].to(distance.dtype)
    outside_mask = _c(1.0, mask.device).to(distance.dtype) - mask
    inside = (mask * distance).sum() / mask.sum().clamp_min(1)
    outside = (outside_mask * distance).sum() / outside_mask.sum().clamp_min(1)
    return torch.add(inside, outside, alpha=beta)
