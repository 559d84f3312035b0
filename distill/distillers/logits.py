"""Logits-only distillers: DML (online, mutual), KD (offline) and DKD (offline, decoupled)."""
from __future__ import annotations

from distill.distillers.base import Distiller
from distill.losses.logits import dkd_loss
from distill.registry import DISTILLERS


@DISTILLERS.register_module()
class DML(Distiller):
    """Deep mutual learning: CE + a * T^2 * KL to the other network's detached predictions."""

    default_online = True


@DISTILLERS.register_module()
class KD(Distiller):
    """Hinton KD from a frozen teacher (``online=True`` gives a one-way online variant)."""

    default_online = False


@DISTILLERS.register_module()
class DKD(KD):
    """Decoupled KD: the KD term is ``alpha * TCKD + beta * NCKD`` (classifiers)."""

    def __init__(self, *args, alpha: float = 1.0, beta: float = 8.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha, self.beta = alpha, beta

    def logits_loss(self, student_logits, target_logits, batch, detach_target: bool = True):
        labels = self.adapter.labels(batch)
        if labels is None:
            raise ValueError('DKD needs class labels; this task adapter gives none')
        return dkd_loss(student_logits, target_logits, labels, self.alpha, self.beta,
                        self.temperature, detach_target=detach_target)

    def output_loss(self, learner_out, target_out, batch):
        # the base's output_terms (and its teacher_kd) with DKD in place of KD
        return self.logits_loss(learner_out.outputs, target_out.outputs, batch)
