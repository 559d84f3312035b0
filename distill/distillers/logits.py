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

    def output_terms(self, student_out, teacher_out, batch):
        labels = self.adapter.labels(batch)
        if labels is None:
            raise ValueError('DKD needs class labels; this task adapter gives none')
        w, temp = self.loss_weights['kd'], self.temperature
        terms = {'student.kd': w * dkd_loss(student_out.outputs, teacher_out.outputs, labels,
                                            self.alpha, self.beta, temp)}
        if self.online:
            terms['teacher.kd'] = w * dkd_loss(teacher_out.outputs, student_out.outputs,
                                               labels, self.alpha, self.beta, temp)
        return terms
