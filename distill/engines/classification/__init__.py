"""The classification engine: ``train.py`` (``train_classification``, what
``tasks/classification/train.py`` runs), its config checks, data, metrics, the trainer core's
hooks (``task.py``) and the evaluation of a trained run (``eval.py``, ``tasks/classification/
test.py``)."""
from distill.engines.classification.train import (DEFAULT_TRAIN, DataLoadError, TrainResult,
                                                  train_classification)

__all__ = ['train_classification', 'TrainResult', 'DataLoadError', 'DEFAULT_TRAIN']
