"""The loop-and-scatter DAM that distill/sokd/dam.py replaced, kept verbatim (the parts the
batched code rewrote; the unchanged helpers are not repeated) as the slow, obvious reference of
tests/test_sokd_dam.py: the batched code must give its targets, boxes, masks and losses on
fixed inputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEATMAP_BIAS = -2.19  # sigmoid(-2.19) ~ 0.1, CenterNet's prior


def _head(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(channels, out_channels, 1))


def rms_normalised(feature: torch.Tensor) -> torch.Tensor:
    """``feature`` divided by its root mean square per sample (the scale detached). DAM's
    inputs are raw backbone maps whose scale varies by orders of magnitude (resnet32x4's
    layer3 at initialisation: ~16); unnormalised, SGD at lr 0.05 drove the anchoring term from
    5 to 1e11 in six steps on CIFAR-size resnet32x4 -> resnet8x4."""
    scale = feature.detach().float().pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    return feature / (scale.to(feature.dtype) + 1e-6)


class DAM(nn.Module):
    """Shared three-head module with per-network input projections. Each side's input is
    RMS-normalised per sample first (``rms_normalised``), so DAM trains alike whatever the
    scale of the tapped features."""

    def __init__(self, teacher_channels: int, student_channels: int, channels: int = 64,
                 num_classes: int = 1):
        super().__init__()
        self.num_classes = num_classes
        self.teacher_proj = nn.Conv2d(teacher_channels, channels, 1)
        self.student_proj = nn.Conv2d(student_channels, channels, 1)
        self.heatmap = _head(channels, num_classes)
        self.size = _head(channels, 2)
        self.offset = _head(channels, 2)
        nn.init.constant_(self.heatmap[-1].bias, HEATMAP_BIAS)

    def forward(self, feature: torch.Tensor, side: str) -> dict[str, torch.Tensor]:
        """Head outputs on one network's feature: heatmap logits, size, offset."""
        proj = self.teacher_proj if side == 'teacher' else self.student_proj
        hidden = F.relu(proj(rms_normalised(feature)))
        return dict(heatmap=self.heatmap(hidden), size=self.size(hidden),
                    offset=self.offset(hidden))

    def both(self, teacher_feature: torch.Tensor, student_feature: torch.Tensor):
        """``(teacher side, student side)``: as two ``forward`` calls, with the shared heads
        run once over both sides stacked along the batch (half the head operator calls)."""
        hidden = torch.cat([F.relu(self.teacher_proj(rms_normalised(teacher_feature))),
                            F.relu(self.student_proj(rms_normalised(student_feature)))])
        out = dict(heatmap=self.heatmap(hidden), size=self.size(hidden),
                   offset=self.offset(hidden))
        batch = teacher_feature.shape[0]
        return ({k: v[:batch] for k, v in out.items()}, {k: v[batch:] for k, v in out.items()})


# ------------------------------------------------------------------------------ losses


def consistency_loss(student_out: dict, teacher_out: dict) -> torch.Tensor:
    """MSE of the student-side heads to the detached teacher-side heads.

    The heatmap (as probabilities) is matched everywhere. Size and offset only mean something
    where there is an object (CenterNet supervises them at centres only; elsewhere the teacher
    side's values are arbitrary), so their squared errors are weighted by the teacher side's
    detached heatmap confidence (max over classes), normalised by its sum; sizes are measured
    in map widths/heights, so that all three terms lie on the same [0, 1] scale (in grid cells
    a size error dominates the sum and destabilises training).
    """
    teacher_prob = torch.sigmoid(teacher_out['heatmap'].float()).detach()
    loss = F.mse_loss(torch.sigmoid(student_out['heatmap'].float()), teacher_prob)
    confidence = teacher_prob.amax(dim=1, keepdim=True)  # (B,1,H,W)
    norm = confidence.sum().clamp_min(1e-6)
    h, w = teacher_prob.shape[-2:]
    map_size = torch.tensor([w, h], device=confidence.device, dtype=torch.float32)
    for key, scale in (('size', map_size.reshape(1, 2, 1, 1)), ('offset', 1.0)):
        error = ((student_out[key].float() - teacher_out[key].detach().float()) / scale).pow(2)
        loss = loss + (confidence * error).sum() / (norm * error.shape[1])
    return loss


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
               gamma: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, normalised by the number of peaks."""
    prob = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    peaks = target.eq(1).float()
    pos = -torch.log(prob) * (1 - prob).pow(alpha) * peaks
    neg = -torch.log(1 - prob) * prob.pow(alpha) * (1 - target).pow(gamma) * (1 - peaks)
    return (pos.sum() + neg.sum()) / peaks.sum().clamp_min(1)


def anchoring_loss(outputs: dict, targets: dict, size_weight: float = 0.1) -> torch.Tensor:
    """Focal heatmap loss + L1 size (weight 0.1, as CenterNet) + L1 offset at the centres."""
    centres = targets['centres'].unsqueeze(1)  # (B,1,H,W)
    count = centres.sum().clamp_min(1)
    size_l1 = ((outputs['size'].float() - targets['size']).abs() * centres).sum() / count
    offset_l1 = ((outputs['offset'].float() - targets['offset']).abs() * centres).sum() / count
    return focal_loss(outputs['heatmap'], targets['heatmap']) + size_weight * size_l1 + offset_l1


# ------------------------------------------------------------------------------ targets


def gaussian_radius(height: torch.Tensor, width: torch.Tensor,
                    min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's radius: the smallest of the three corner-shift cases keeping the IoU."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3).clamp_min(0)


def centernet_targets(boxes: list, labels: list | None, num_classes: int, height: int,
                      width: int) -> dict[str, torch.Tensor]:
    """Targets on an (height, width) grid from per-image boxes (N_i, 4) in grid cells.

    Returns ``heatmap`` (B,K,H,W) Gaussians peaking at 1 on box centres, ``size`` and
    ``offset`` (B,2,H,W) set at the centre cells, and ``centres`` (B,H,W) marking them.
    ``labels`` (per image (N_i,) class ids) may be None, and with ``num_classes=1`` they are
    ignored: every box goes to channel 0. Empty (zero-area) boxes are skipped.

    ``boxes`` may also be one (B,N,4) tensor (``labels`` then (B,N) or None): the same targets
    without a Python loop over the images or a host sync, which SoKD's classification
    pseudo-boxes (one per image) use in every step.
    """
    if torch.is_tensor(boxes):
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(f'boxes as a tensor must be (B,N,4), got {tuple(boxes.shape)}')
        batch, per_image = boxes.shape[:2]
        device = boxes.device
        all_boxes = boxes.reshape(-1, 4).float()
        image = torch.arange(batch, device=device).repeat_interleave(per_image)
        label = (torch.zeros_like(image) if labels is None or num_classes == 1
                 else torch.as_tensor(labels, device=device).reshape(-1).long())
        keep = None  # empty boxes are masked out below instead of dropped (no sync)
    else:
        batch = len(boxes)
        device = next((b.device for b in boxes if torch.is_tensor(b)), torch.device('cpu'))
        all_boxes = torch.cat([torch.as_tensor(b, dtype=torch.float32, device=device)
                               .reshape(-1, 4) for b in boxes]) if batch else \
            torch.zeros(0, 4, device=device)
        image = torch.cat([torch.full((torch.as_tensor(b).reshape(-1, 4).shape[0],), i,
                                      dtype=torch.long, device=device)
                           for i, b in enumerate(boxes)]) if batch else torch.zeros(0).long()
        if labels is None or num_classes == 1:
            label = torch.zeros_like(image)
        else:
            label = torch.cat([torch.as_tensor(l, device=device).reshape(-1).long()
                               for l in labels])
        keep = True
    heatmap = torch.zeros(batch * num_classes, height, width, device=device)
    size = torch.zeros(batch, 2, height, width, device=device)
    offset = torch.zeros(batch, 2, height, width, device=device)
    centres = torch.zeros(batch, height, width, device=device)
    box_w, box_h = all_boxes[:, 2] - all_boxes[:, 0], all_boxes[:, 3] - all_boxes[:, 1]
    valid = (box_w > 0) & (box_h > 0)
    if keep is not None:
        all_boxes, image, label = all_boxes[valid], image[valid], label[valid]
        box_w, box_h = box_w[valid], box_h[valid]
        valid = None
        if len(all_boxes) == 0:
            return dict(heatmap=heatmap.reshape(batch, num_classes, height, width), size=size,
                        offset=offset, centres=centres)
    cx = (all_boxes[:, 0] + all_boxes[:, 2]) / 2
    cy = (all_boxes[:, 1] + all_boxes[:, 3]) / 2
    col = cx.floor().long().clamp(0, width - 1)
    row = cy.floor().long().clamp(0, height - 1)
    radius = gaussian_radius(box_h, box_w).floor()
    sigma = ((2 * radius + 1) / 6).reshape(-1, 1, 1)
    xs = torch.arange(width, device=device).reshape(1, 1, width) - col.reshape(-1, 1, 1)
    ys = torch.arange(height, device=device).reshape(1, height, 1) - row.reshape(-1, 1, 1)
    blobs = torch.exp(-(xs ** 2 + ys ** 2) / (2 * sigma ** 2))
    inside = (xs.abs() <= radius.reshape(-1, 1, 1)) & (ys.abs() <= radius.reshape(-1, 1, 1))
    if valid is not None:  # tensor input: an empty box writes zeros, no peak
        inside = inside & valid.reshape(-1, 1, 1)
    blobs = torch.where(inside, blobs, torch.zeros_like(blobs))
    channel = (image * num_classes + label).reshape(-1, 1).expand(-1, height * width)
    heatmap.view(-1, height * width).scatter_reduce_(0, channel, blobs.flatten(1), 'amax')
    weight = 1.0 if valid is None else valid.float().reshape(-1, 1)
    size[image, :, row, col] = torch.stack([box_w, box_h], dim=1) * weight
    offset[image, :, row, col] = torch.stack([cx - col, cy - row], dim=1) * weight
    centres[image, row, col] = 1.0 if valid is None else valid.float()
    return dict(heatmap=heatmap.reshape(batch, num_classes, height, width), size=size,
                offset=offset, centres=centres)


def largest_component_boxes(cam: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Box (B,4) in grid cells of the largest 8-connected component of ``cam >= threshold *
    max``; the whole map when the CAM is flat zero."""
    b, h, w = cam.shape
    peak = cam.flatten(1).max(dim=1).values.reshape(b, 1, 1)
    fg = (cam >= threshold * peak) & (peak > 0)
    fg = fg | (peak <= 0)  # a dead CAM: take everything
    # label propagation: each fg cell takes the largest index in its 3x3 neighbourhood
    index = torch.arange(1, h * w + 1, device=cam.device, dtype=torch.float32).reshape(1, h, w)
    labels = torch.where(fg, index.expand(b, h, w), torch.zeros(()).to(cam.device))
    for _ in range(h * w):
        grown = F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * fg
        if torch.equal(grown, labels):
            break
        labels = grown
    flat = labels.flatten(1).long()
    counts = torch.zeros(b, h * w + 1, device=cam.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float32))
    counts[:, 0] = 0
    biggest = counts.argmax(dim=1).reshape(b, 1, 1)
    component = labels.long().eq(biggest)
    rows = component.any(dim=2)  # (B, H)
    cols = component.any(dim=1)  # (B, W)
    r = torch.arange(h, device=cam.device)
    c = torch.arange(w, device=cam.device)
    y1 = torch.where(rows, r, h).min(dim=1).values
    y2 = torch.where(rows, r, -1).max(dim=1).values + 1
    x1 = torch.where(cols, c, w).min(dim=1).values
    x2 = torch.where(cols, c, -1).max(dim=1).values + 1
    return torch.stack([x1, y1, x2, y2], dim=1).float()


# ------------------------------------------------------------------------------ decoding


@torch.no_grad()
def decode_boxes(heatmap_prob: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
                 top_k: int = 8, score_threshold: float = 0.3):
    """Peaks -> boxes. Returns ``boxes`` (B,k,4) in grid cells, clamped to the map, ``scores``
    (B,k) and ``keep`` (B,k) (score above the threshold)."""
    b, k_classes, h, w = heatmap_prob.shape
    peaks = heatmap_prob * (F.max_pool2d(heatmap_prob, 3, stride=1, padding=1)
                            == heatmap_prob)
    k = min(top_k, k_classes * h * w)
    scores, index = peaks.flatten(1).topk(k, dim=1)
    cell = index % (h * w)
    rows, cols = (cell // w), (cell % w)

    def at(map2):  # (B,2,H,W) -> (B,k,2) values at the peaks
        return map2.flatten(2).gather(2, cell[:, None].expand(b, 2, k)).transpose(1, 2)

    off, wh = at(offset.float()), at(size.float()).clamp_min(0)
    cx, cy = cols.float() + off[..., 0], rows.float() + off[..., 1]
    boxes = torch.stack([(cx - wh[..., 0] / 2).clamp(0, w), (cy - wh[..., 1] / 2).clamp(0, h),
                         (cx + wh[..., 0] / 2).clamp(0, w), (cy + wh[..., 1] / 2).clamp(0, h)],
                        dim=-1)
    return boxes, scores, scores >= score_threshold


def boxes_to_mask(boxes: torch.Tensor, keep: torch.Tensor, height: int,
                  width: int) -> torch.Tensor:
    """(B,1,H,W) mask of the cells that overlap any kept box."""
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))  # (B,k,1)
    in_x = (cols < x2) & (cols + 1 > x1)  # (B,k,W)
    in_y = (rows < y2) & (rows + 1 > y1)  # (B,k,H)
    covered = in_y[..., :, None] & in_x[..., None, :] & keep[..., None, None]
    return covered.any(dim=1, keepdim=True).float()


# ------------------------------------------------- the old DAMTerms.decode_mask, as a function


@torch.no_grad()
def decode_mask(teacher_side: dict, student_side: dict, mode: str = 'mutual', top_k: int = 8,
                score_threshold: float = 0.3) -> torch.Tensor:
    sides = dict(mutual=(teacher_side, student_side), teacher=(teacher_side,),
                 student=(student_side,))[mode]
    h, w = teacher_side['heatmap'].shape[-2:]
    stacked = {key: torch.cat([side[key] for side in sides]) for key in sides[0]}
    boxes, _, keep = decode_boxes(torch.sigmoid(stacked['heatmap'].float()), stacked['size'],
                                  stacked['offset'], top_k, score_threshold)
    mask = boxes_to_mask(boxes, keep, h, w)
    mask = mask.reshape(len(sides), -1, *mask.shape[1:]).amax(dim=0)
    empty = mask.flatten(1).sum(dim=1).eq(0).reshape(-1, 1, 1, 1)
    return torch.where(empty, torch.ones_like(mask), mask)
