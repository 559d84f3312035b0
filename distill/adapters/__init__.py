"""Adapters: model + batch -> task loss and outputs. Task frameworks are imported only by the
adapter that needs them, when it is used."""
from distill.adapters.base import Adapter, ModelOutput
from distill.adapters.classifier import ClassifierAdapter

__all__ = ['Adapter', 'ModelOutput', 'ClassifierAdapter']
