"""Registries of the ``distill`` scope.

They are mmengine ``Registry`` objects, children of mmengine's root registries so that an
mmengine ``Runner`` (segmentation, detection) finds what is registered here under the
``distill`` scope.  ``locations`` makes them import the modules that fill them on first use,
so ``from distill import DISTILLERS`` is cheap and needs no task framework.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import Registry

DISTILLERS = Registry('distiller', scope='distill', locations=['distill.distillers'])
LOSSES = Registry('distill loss', scope='distill', locations=['distill.losses'])
CONNECTORS = Registry('connector', scope='distill', locations=['distill.connectors'])
ADAPTERS = Registry('adapter', scope='distill', locations=['distill.adapters'])
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='distill',
                  locations=['distill.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='distill',
                    locations=['distill.data'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='distill',
                 locations=['distill.engines.mmengine.hooks'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='distill',
                   locations=['distill.engines.mmengine.teacher_metric'])
