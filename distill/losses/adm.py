"""ADM's consensus and divergence losses (DESIGN 1.1, steps 2-5).

The paper states the ideas; these are this library's exact formulation of them:

    S     = cos(gs, ft) per location, on detached tensors, float32       (B, H, W)
    w_co  = softmax_hw( S / tau)         w_di = softmax_hw(-S / tau)
    L_co  = mean_b sum_hw w_co * (1 - cos(gs, sg(ft)))   -> gradient to the student only
    L_di  = mean_b sum_hw w_di * (1 + cos(ft, sg(gs)))   -> gradient to the teacher only

Inputs are already aligned (same shape); the connector lives in the distiller.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pair(fs: torch.Tensor, ft: torch.Tensor) -> None:
    if fs.shape != ft.shape or fs.dim() != 4:
        raise ValueError(f'ADM losses need aligned (B,C,H,W) features of equal shape, got '
                         f'{tuple(fs.shape)} and {tuple(ft.shape)}')


def similarity_map(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Per-location cosine similarity over channels, (B, H, W), float32, no gradient."""
    _check_pair(fs, ft)
    with torch.no_grad():
        return F.cosine_similarity(fs.detach().float(), ft.detach().float(), dim=1)


def location_weights(similarity: torch.Tensor, tau: float, emphasise: str) -> torch.Tensor:
    """Softmax over the H*W locations of each sample: ``'agreement'`` -> w_co, else w_di."""
    if tau <= 0:
        raise ValueError(f'tau must be > 0, got {tau}')
    sign = 1.0 if emphasise == 'agreement' else -1.0
    b, h, w = similarity.shape
    return torch.softmax(sign * similarity.reshape(b, h * w) / tau, dim=1).reshape(b, h, w)


def consensus_distance(fs: torch.Tensor, ft: torch.Tensor,
                       detach_target: bool = True) -> torch.Tensor:
    """``1 - cos(fs, sg(ft))`` per location (B, H, W); gradient to ``fs`` only
    (``detach_target=False`` keeps the target's graph, for SoKD's hypergradient)."""
    ft = ft.detach() if detach_target else ft
    return 1 - F.cosine_similarity(fs.float(), ft.float(), dim=1)


def divergence_affinity(ft: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
    """``1 + cos(ft, sg(fs))`` per location (B, H, W); gradient to ``ft`` only."""
    return 1 + F.cosine_similarity(ft.float(), fs.detach().float(), dim=1)


def consensus_loss(fs: torch.Tensor, ft: torch.Tensor, tau: float = 1.0,
                   similarity: torch.Tensor | None = None) -> torch.Tensor:
    """L_co: pull the student toward the teacher where they already agree."""
    similarity = similarity_map(fs, ft) if similarity is None else similarity
    weights = location_weights(similarity, tau, 'agreement')
    return (weights * consensus_distance(fs, ft)).sum(dim=(1, 2)).mean()


def divergence_loss(ft: torch.Tensor, fs: torch.Tensor, tau: float = 1.0,
                    similarity: torch.Tensor | None = None) -> torch.Tensor:
    """L_di: push the teacher away from the student where they disagree."""
    similarity = similarity_map(fs, ft) if similarity is None else similarity
    weights = location_weights(similarity, tau, 'disagreement')
    return (weights * divergence_affinity(ft, fs)).sum(dim=(1, 2)).mean()
