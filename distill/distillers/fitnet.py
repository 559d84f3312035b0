"""FitNet: hint loss (MSE) between the aligned student feature and the teacher feature."""
from __future__ import annotations

from distill.distillers.base import Distiller
from distill.losses.feature import fitnet_distance, fitnet_loss
from distill.registry import DISTILLERS


@DISTILLERS.register_module()
class FitNet(Distiller):
    """CE + ``fitnet`` * sum over taps of MSE(connector(fs), sg(ft)); KD off by default."""

    default_online = False
    default_loss_weights = dict(task=1.0, kd=0.0, fitnet=1.0)
    uses_taps = True
    feature_term = 'fitnet'

    def location_distance(self, gs, ft, detach_target: bool = True):
        """Per-location FitNet distance (B,H,W) whose mean is one tap's MSE (SoKD masks it)."""
        return fitnet_distance(gs, ft, detach_target)

    def feature_terms(self, student_feats, teacher_feats, batch):
        total = sum(pair['weight'] * fitnet_loss(gs, ft)
                    for pair, gs, ft in self.aligned_features(student_feats, teacher_feats))
        return {'student.fitnet': self.loss_weights['fitnet'] * total}
