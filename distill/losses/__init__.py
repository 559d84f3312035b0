"""Loss functions on plain tensors, and their registered ``nn.Module`` forms."""
from torch import nn

from distill.losses.adm import (consensus_loss, divergence_loss, location_weights,
                                similarity_map)
from distill.losses.feature import fitnet_distance, fitnet_loss
from distill.losses.logits import dkd_loss, dml_losses, kd_loss
from distill.registry import LOSSES

__all__ = ['similarity_map', 'location_weights', 'consensus_loss', 'divergence_loss',
           'kd_loss', 'dml_losses', 'dkd_loss', 'fitnet_loss', 'fitnet_distance',
           'KDLoss', 'DKDLoss']


@LOSSES.register_module()
class KDLoss(nn.Module):
    """Logits KD; ``forward(learner, target, labels=None, valid_mask=None)``."""

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, learner_logits, target_logits, labels=None, valid_mask=None):
        return kd_loss(learner_logits, target_logits, self.temperature, valid_mask)


@LOSSES.register_module()
class DKDLoss(nn.Module):
    """Decoupled KD; needs the labels."""

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0):
        super().__init__()
        self.alpha, self.beta, self.temperature = alpha, beta, temperature

    def forward(self, learner_logits, target_logits, labels=None, valid_mask=None):
        if labels is None:
            raise ValueError('DKDLoss needs the labels of the batch')
        return dkd_loss(learner_logits, target_logits, labels, self.alpha, self.beta,
                        self.temperature)
