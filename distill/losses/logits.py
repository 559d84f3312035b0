"""Logits distillation: KD (Hinton), DML (mutual KD) and DKD (decoupled KD).

Logits have their class dimension at 1: (N, C) for classifiers, (N, C, H, W) for segmentors.
The target side is always detached: these losses update only the network that learns.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(learner_logits: torch.Tensor, target_logits: torch.Tensor,
            temperature: float = 4.0, valid_mask: torch.Tensor | None = None,
            detach_target: bool = True) -> torch.Tensor:
    """``T^2 * KL(softmax(sg(target)/T) || softmax(learner/T))`` averaged over samples (and
    pixels); ``valid_mask`` (N, ...) keeps only the locations to average over.
    ``detach_target=False`` keeps the target's graph (SoKD's hypergradient needs it)."""
    if learner_logits.shape != target_logits.shape:
        raise ValueError(f'logits of different shapes: learner {tuple(learner_logits.shape)}, '
                         f'target {tuple(target_logits.shape)}')
    t = temperature
    log_p_learner = F.log_softmax(learner_logits.float() / t, dim=1)
    target_logits = target_logits.detach() if detach_target else target_logits
    log_p_target = F.log_softmax(target_logits.float() / t, dim=1)
    kl = F.kl_div(log_p_learner, log_p_target, reduction='none', log_target=True).sum(dim=1)
    if valid_mask is not None:
        kl = kl[valid_mask]
        if kl.numel() == 0:
            return learner_logits.sum() * 0.0
    return t * t * kl.mean()


def dkd_loss(learner_logits: torch.Tensor, target_logits: torch.Tensor, labels: torch.Tensor,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
             detach_target: bool = True) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): ``alpha * TCKD + beta * NCKD``, classifiers.
    ``detach_target=False`` keeps the target's graph (SoKD's hypergradient needs it)."""
    t = temperature
    learner = learner_logits.float() / t
    target = (target_logits.detach() if detach_target else target_logits).float() / t
    gt_mask = F.one_hot(labels, learner.shape[1]).bool()
    p_learner, p_target = learner.softmax(dim=1), target.softmax(dim=1)

    def binary(p):  # (N, 2): probability of the true class and of all the others
        p_true = (p * gt_mask).sum(dim=1, keepdim=True)
        return torch.cat([p_true, 1 - p_true], dim=1).clamp_min(1e-12)

    b_learner, b_target = binary(p_learner), binary(p_target)
    tckd = (b_target * (b_target.log() - b_learner.log())).sum(dim=1).mean() * t * t
    # the true class masked out: distribution over the non-target classes only
    log_nt_learner = F.log_softmax(learner.masked_fill(gt_mask, -1e4), dim=1)
    log_nt_target = F.log_softmax(target.masked_fill(gt_mask, -1e4), dim=1)
    nckd = F.kl_div(log_nt_learner, log_nt_target, reduction='none',
                    log_target=True).sum(dim=1).mean() * t * t
    return alpha * tckd + beta * nckd
