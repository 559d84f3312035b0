"""Feature distillation: FitNet hint loss."""
from __future__ import annotations

import torch


def fitnet_distance(fs: torch.Tensor, ft: torch.Tensor,
                    detach_target: bool = True) -> torch.Tensor:
    """Squared error averaged over channels per location, (B, H, W); gradient to ``fs`` only
    (``detach_target=False`` keeps the target's graph, for SoKD's hypergradient)."""
    if fs.shape != ft.shape:
        raise ValueError(f'FitNet needs aligned features of equal shape, got '
                         f'{tuple(fs.shape)} and {tuple(ft.shape)}')
    ft = ft.detach() if detach_target else ft
    return (fs.float() - ft.float()).pow(2).mean(dim=1)


def fitnet_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """``MSE(fs, sg(ft))`` over all elements."""
    return fitnet_distance(fs, ft).mean()
