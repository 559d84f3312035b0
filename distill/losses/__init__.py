"""Loss functions on plain tensors.

Each is also registered in ``LOSSES`` under its own name (``LOSSES.get('kd_loss')`` is
``kd_loss``), so a downstream project can name a loss in a config; the distillers call them
directly.
"""
from distill.losses.adm import (consensus_loss, divergence_loss, location_weights,
                                similarity_map)
from distill.losses.feature import fitnet_distance, fitnet_loss
from distill.losses.logits import dkd_loss, kd_loss
from distill.registry import LOSSES

__all__ = ['similarity_map', 'location_weights', 'consensus_loss', 'divergence_loss',
           'kd_loss', 'dkd_loss', 'fitnet_loss', 'fitnet_distance']

for _loss in (kd_loss, dkd_loss, fitnet_loss, consensus_loss, divergence_loss):
    LOSSES.register_module(name=_loss.__name__, module=_loss)
