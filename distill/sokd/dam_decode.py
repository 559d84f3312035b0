"""DAM's decoding (README, "SoKD"): heatmap peaks to boxes, boxes to the mask that weights the
base loss per location. Batched: no loop over images or boxes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.sokd.dam_constants import as_float32, cell_grid, cell_xy, const


@torch.no_grad()
def _decode(heatmap_prob: torch.Tensor, box: torch.Tensor, top_k: int):
    """``(low corners (N,k,2) x1 y1, high corners (N,k,2) x2 y2, scores (N,k))`` of the top-k
    3x3-max-pool peaks, clamped to the map; ``box`` (N,4,H,W) holds size and offset."""
    n, k_classes, h, w = heatmap_prob.shape
    device = heatmap_prob.device
    zero = const(0.0, device)
    peaks = torch.where(F.max_pool2d(heatmap_prob, 3, stride=1, padding=1) == heatmap_prob,
                        heatmap_prob, zero)
    k = min(top_k, k_classes * h * w)
    scores, cell = peaks.flatten(1).topk(k, dim=1)
    if k_classes > 1:
        cell = cell % (h * w)
    values = as_float32(box).flatten(2).transpose(1, 2).gather(1, cell[..., None].expand(n, k, 4))
    centre = cell_xy(h, w, device)[cell] + values[..., 2:]  # (N,k,2): cx, cy
    half = values[..., :2].clamp_min(0) * const(0.5, device)
    limit = const((float(w), float(h)), device)
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
    cells = cell_grid(max(height, width), low.device)
    inside = (cells < high[..., None]) & (cells + const(1.0, low.device) > low[..., None])
    in_x, in_y = inside[:, :, 0, :width], inside[:, :, 1, :height]  # (N,k,W), (N,k,H)
    covered = (in_x & keep[..., None])[..., None, :] & in_y[..., :, None]
    return covered.any(dim=1, keepdim=True)


def boxes_to_mask(boxes: torch.Tensor, keep: torch.Tensor, height: int,
                  width: int) -> torch.Tensor:
    """(B,1,H,W) mask of the cells that overlap any kept box."""
    return _corners_to_mask(boxes[..., :2], boxes[..., 2:], keep, height, width).float()


@torch.no_grad()
def decode_mask(out: torch.Tensor, num_classes: int, sides: int, top_k: int = 8,
                score_threshold: float = 0.3, heatmap_prob: torch.Tensor | None = None
                ) -> torch.Tensor:
    """The mask (B,1,H,W) of DAM's fused output ``out`` (sides*B, K+4, H, W), ``sides`` sides
    stacked along the batch: the union over the sides of the cells that overlap a decoded box
    whose score passes the threshold; an image with no such box keeps its whole map.
    ``heatmap_prob``: the sigmoid of ``out``'s heatmaps, when the caller has it."""
    h, w = out.shape[-2:]
    device = out.device
    if heatmap_prob is None:
        heatmap_prob = torch.sigmoid(as_float32(out[:, :num_classes]))
    low, high, scores = _decode(heatmap_prob, out[:, num_classes:], top_k)
    covered = _corners_to_mask(low, high, scores >= const(score_threshold, device), h, w)
    if sides > 1:
        covered = covered.reshape(sides, -1, 1, h, w).any(dim=0)
    covered = covered | ~covered.any(dim=(2, 3), keepdim=True)  # no box: the whole map
    return torch.where(covered, const(1.0, device), const(0.0, device))
