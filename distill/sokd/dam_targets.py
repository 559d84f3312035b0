"""DAM's anchoring targets (README, "SoKD"): CenterNet heatmaps, sizes and offsets from boxes,
and for classification the boxes themselves, the largest component of the teacher's class
activation map. Batched, without a loop over images or boxes and without a read of a device
value (``tests/test_sokd_dam.py`` checks them against ``tests/dam_reference.py``, the loop and
scatter code they replaced)."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from distill.sokd.dam_constants import as_float32, cell_grid, cell_xy, const



def gaussian_radius(height: torch.Tensor, width: torch.Tensor,
                    min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's radius: the smallest of the three corner-shift cases keeping the IoU, the
    three quadratics' larger roots ``(b + sqrt(b^2 - k c)) / 2`` computed side by side along a
    last dimension (the same arithmetic, term by term, as CenterNet's three formulas)."""
    return _radius(height.unsqueeze(-1), width.unsqueeze(-1), min_overlap).squeeze(-1)


def _radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float) -> torch.Tensor:
    """``gaussian_radius`` of (..., 1) heights and widths, (..., 1)."""
    m, device = min_overlap, height.device
    b = (height + width) * const((1.0, 2.0, -2 * m), device)
    c = width * const((1.0, 1 - m, m - 1), device) * height
    c = c * const((1 - m, 1.0, 1.0), device) / const((1 + m, 1.0, 1.0), device)
    root = (b + (b * b - const((4.0, 16.0, 4 * (4 * m)), device) * c).sqrt()) * const(0.5, device)
    return root.amin(dim=-1, keepdim=True).clamp_min(0)


def _padded(boxes, labels, num_classes: int):
    """``(boxes (B,N,4), labels (B,N) or None)``: per-image lists padded with empty boxes,
    which make no target."""
    if torch.is_tensor(boxes):
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(f'boxes as a tensor must be (B,N,4), got {tuple(boxes.shape)}')
        labels = None if labels is None or num_classes == 1 else torch.as_tensor(
            labels, device=boxes.device).reshape(boxes.shape[:2]).long()
        return as_float32(boxes), labels
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
    zero, one = const(0.0, device), const(1.0, device)
    low, high = boxes[..., :2], boxes[..., 2:]  # (B,N,2): x, y
    extent = high - low  # w, h
    centre = (low + high) / const(2.0, device)
    cell = centre.floor().clamp(zero, const((width - 1.0, height - 1.0), device))
    valid = (extent > zero).all(dim=-1)[..., None, None]  # (B,N,1,1)
    radius = _radius(extent[..., 1:], extent[..., :1], 0.7).floor()[..., None]  # (B,N,1,1)
    sigma = torch.add(one, radius, alpha=2) / const(6.0, device)  # (2r + 1) / 6
    # each cell's distance to the centre cell, along x (B,N,1,W) and y (B,N,H,1)
    xs = (cell_grid(width, device) - cell[..., :1])[..., None, :]
    ys = (cell_grid(height, device) - cell[..., 1:])[..., None]
    # |d| <= r as d^2 <= r^2 (whole numbers: exact), the squares the Gaussian needs anyway
    xs2, ys2, radius2 = xs * xs, ys * ys, radius * radius
    inside = (xs2 <= radius2) & (ys2 <= radius2) & valid  # (B,N,H,W)
    two_sigma_sq = sigma * sigma * const(2.0, device)
    blobs = torch.where(inside, torch.exp(-(xs2 + ys2) / two_sigma_sq), zero)
    if num_classes == 1:
        heatmap = blobs if count == 1 else blobs.amax(dim=1, keepdim=True)
    else:  # each class's channel: the maximum of its boxes' Gaussians (labels None: class 0)
        labels = torch.zeros_like(boxes[..., 0], dtype=torch.long) if labels is None else labels
        one_hot = F.one_hot(labels, num_classes).to(blobs.dtype)  # (B,N,K)
        heatmap = (blobs[:, :, None] * one_hot[..., None, None]).amax(dim=1)
    marks = (xs == zero) & (ys == zero) & valid  # (B,N,H,W): each box's centre cell
    if count > 1:  # one box per centre cell: the later one
        order = cell_grid(count, device).reshape(1, count, 1, 1) + one
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
            return as_float32(boxes)
        return as_float32(boxes) * const((sx, sy, sx, sy), boxes.device)
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
    feature = as_float32(feature.detach())
    if (fc_weight is None or labels is None or fc_weight.dim() != 2
            or fc_weight.shape[1] != feature.shape[1]):
        return feature.mean(dim=1).relu()
    class_weights = as_float32(fc_weight.detach())[labels]  # (B, C)
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


@functools.lru_cache(maxsize=16)
def _one_based(n: int, device: torch.device) -> torch.Tensor:
    """``1, 2, ..., n`` as floats (1-based cell indices)."""
    with torch.inference_mode(False):
        return torch.arange(1, n + 1, dtype=torch.float32, device=device)


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
    zero, one = const(0.0, device), const(1.0, device)
    peak = cam.amax(dim=(1, 2), keepdim=True)
    # ((cam >= t max) & (max > 0)) | (max <= 0): a dead CAM takes everything
    fg = (cam >= peak * const(threshold, device)) | (peak <= zero)
    if n > CLOSURE_MAX_CELLS:
        inside = _largest_component_by_propagation(fg).reshape(b, n, 1)
    else:
        flat = fg.reshape(b, n)
        reach = torch.where(_neighbours(h, w, device) & flat[:, :, None] & flat[:, None, :],
                            one, zero)
        for _ in range(max(1, (n - 1).bit_length())):  # paths of up to 2^k steps
            reach = torch.bmm(reach, reach).clamp_max_(1)
        # (B, HW, 1): each cell's component named by its largest 1-based cell index, 0 for the
        # background; the largest component, ties to the smallest label (argmax over counts)
        labels = (reach * _one_based(n, device)).amax(dim=2, keepdim=True)
        key = reach.sum(dim=2, keepdim=True) * const(n + 1.0, device) - labels
        inside = labels == labels.gather(1, key.argmax(dim=1, keepdim=True))
    # the extent of the component's cells: x1, y1 the least column and row, x2, y2 the
    # greatest plus one
    xy = cell_xy(h, w, device)  # (HW, 2)
    low = torch.where(inside, xy, const(float(n), device)).amin(dim=1)
    high = torch.where(inside, xy, const(-1.0, device)).amax(dim=1) + one
    return torch.cat([low, high], dim=1)  # x1, y1, x2, y2


def cam_boxes(feature: torch.Tensor, labels: torch.Tensor | None,
              fc_weight: torch.Tensor | None, threshold: float, grid: tuple):
    """``(boxes (B,1,4), labels (B,1) or None)`` on ``grid``: the box of the largest component
    of the teacher's class activation map of the true class (``activation_map``,
    ``largest_component_boxes``), SoKD's pseudo-box for classification."""
    cam = activation_map(feature, labels, fc_weight)
    boxes = largest_component_boxes(cam, threshold)
    return (scale_boxes(boxes[:, None], tuple(cam.shape[-2:]), grid),
            None if labels is None else labels[:, None])


def cam_targets(feature: torch.Tensor, labels: torch.Tensor | None,
                fc_weight: torch.Tensor | None, threshold: float, grid: tuple,
                num_classes: int) -> dict[str, torch.Tensor]:
    """``centernet_targets`` of the CAM pseudo-boxes (``cam_boxes``): one function from the
    teacher's feature to the targets, which ``dam.compile`` compiles whole."""
    return centernet_targets(*cam_boxes(feature, labels, fc_weight, threshold, grid),
                             num_classes, *grid)
