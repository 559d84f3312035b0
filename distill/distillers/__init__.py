"""Distillers: one ``nn.Module`` per method, each registered in ``DISTILLERS``."""
from distill.distillers.adm import ADM
from distill.distillers.base import Distiller
from distill.distillers.fitnet import FitNet
from distill.distillers.logits import DKD, DML, KD
from distill.distillers.sokd import SoKD

__all__ = ['Distiller', 'ADM', 'DML', 'KD', 'DKD', 'FitNet', 'SoKD']
