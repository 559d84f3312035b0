"""Validation of the teacher alongside the student, with the task's own metric, labelled.

In ``predict`` mode the distillation model stores the teacher's predictions beside the
student's, under the same field names prefixed ``teacher_`` (``teacher_pred_sem_seg``,
``teacher_pred_instances``). ``TeacherMetric`` wraps any metric (``IoUMetric``,
``CocoMetric``) and shows it the teacher's fields under the usual names; its results are
reported as ``teacher/<name>`` (``teacher/mIoU``, ``teacher/bbox_mAP``). ``StudentMetric``
wraps the student's metric and keeps its keys (``mIoU``, ``coco/bbox_mAP``: what
``save_best`` and the framework's tools expect), and adds them as ``student/<name>``. Both
print a header naming the network before
the wrapped metric prints its tables, so the two per-class tables (or the two
"Evaluating bbox..." blocks) can be told apart.

``plain_metrics`` unwraps an evaluator config back to the framework's own metric types (what
the exported student's config keeps); ``labelled_metrics`` builds the student + teacher pair.
"""
from __future__ import annotations

import copy

from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.registry import METRICS as MMENGINE_METRICS

from distill.registry import METRICS

TEACHER_FIELD_PREFIX = 'teacher_'
WRAPPER_TYPES = dict(student=('distill.StudentMetric', 'StudentMetric'),
                     teacher=('distill.TeacherMetric', 'TeacherMetric'))


def teacher_view(data_sample: dict, field_prefix: str = TEACHER_FIELD_PREFIX) -> dict:
    """A copy of a data-sample dict where the teacher's fields replace the student's."""
    view = {k: v for k, v in data_sample.items() if not k.startswith(field_prefix)}
    for name, value in data_sample.items():
        if name.startswith(field_prefix):
            view[name[len(field_prefix):]] = value
    return view


class LabelledMetric(BaseMetric):
    """``metric`` (a config or an instance) evaluated under a label printed before its output.

    ``prefix`` defaults to the wrapped metric's own (``coco`` for ``CocoMetric``, none for
    ``IoUMetric``)."""

    label = 'model'

    def __init__(self, metric, prefix: str | None = None, collect_device: str = 'cpu'):
        self.metric = metric if isinstance(metric, BaseMetric) else MMENGINE_METRICS.build(metric)
        super().__init__(collect_device=collect_device,
                         prefix=prefix if prefix is not None else self.metric.prefix)

    @property
    def dataset_meta(self):
        return self.metric.dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta):
        self.metric.dataset_meta = dataset_meta

    def view(self, data_sample: dict) -> dict:
        return data_sample

    def process(self, data_batch, data_samples) -> None:
        self.metric.process(data_batch, [self.view(s) for s in data_samples])
        # the wrapped metric's per-sample results become ours: evaluate() collects them
        self.results.extend(self.metric.results)
        self.metric.results.clear()

    def compute_metrics(self, results: list) -> dict:
        keys = f'{self.prefix}/*' if self.prefix else 'keys without a prefix'
        print_log(f'---------- evaluating the {self.label} ({type(self.metric).__name__}, '
                  f'{keys}) ----------', logger='current')
        return self.metric.compute_metrics(results)


@METRICS.register_module()
class StudentMetric(LabelledMetric):
    """``metric`` on the student's predictions: its keys unchanged (``mIoU``,
    ``coco/bbox_mAP``: what ``save_best`` and the framework's tools read) and again under
    ``student/`` (``student/mIoU``, ``student/bbox_mAP``), beside the teacher's ``teacher/``
    ones in the logs and TensorBoard."""

    label = 'student'

    def view(self, data_sample: dict) -> dict:
        return {k: v for k, v in data_sample.items() if not k.startswith(TEACHER_FIELD_PREFIX)}

    def evaluate(self, size: int) -> dict:
        metrics = super().evaluate(size)
        drop = len(self.prefix) + 1 if self.prefix else 0  # coco/bbox_mAP -> student/bbox_mAP
        return {**metrics, **{f'student/{key[drop:]}': value for key, value in metrics.items()}}


@METRICS.register_module()
class TeacherMetric(LabelledMetric):
    """``metric`` evaluated on the teacher's predictions, reported under ``prefix``."""

    label = 'teacher'

    def __init__(self, metric, prefix: str = 'teacher', collect_device: str = 'cpu',
                 field_prefix: str = TEACHER_FIELD_PREFIX):
        super().__init__(metric, prefix=prefix, collect_device=collect_device)
        self.field_prefix = field_prefix

    def view(self, data_sample: dict) -> dict:
        if not any(k.startswith(self.field_prefix) for k in data_sample):
            raise KeyError('TeacherMetric found no teacher predictions: set '
                           'validate_teacher=True on the DistillationModel')
        return teacher_view(data_sample, self.field_prefix)


def _as_list(evaluator) -> list:
    if evaluator is None:
        return []
    if isinstance(evaluator, dict) and 'metrics' in evaluator:  # dict(type='Evaluator', ...)
        evaluator = evaluator['metrics']
    return list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]


def plain_metrics(evaluator) -> list:
    """The framework metric configs of an evaluator config: ``TeacherMetric`` entries dropped,
    ``StudentMetric`` ones unwrapped. Raises on any other ``distill.*`` type."""
    plain = []
    for metric in _as_list(evaluator):
        kind = metric.get('type')
        if kind in WRAPPER_TYPES['teacher']:
            continue
        if kind in WRAPPER_TYPES['student']:
            metric = metric['metric']
            kind = metric.get('type')
        if isinstance(kind, str) and kind.startswith('distill.'):
            raise ValueError(f'evaluator entry of type {kind!r} has no plain framework '
                             f'equivalent')
        plain.append(copy.deepcopy(metric))
    return plain


def single_or_list(metrics: list):
    """One metric config as a dict (as the frameworks' configs and tools/test.py expect)."""
    return metrics[0] if len(metrics) == 1 else metrics


def labelled_metrics(evaluator) -> list:
    """Student and teacher entries for every plain metric of ``evaluator``."""
    plain = plain_metrics(evaluator)
    return ([dict(type='distill.StudentMetric', metric=m) for m in plain]
            + [dict(type='distill.TeacherMetric', metric=copy.deepcopy(m)) for m in plain])
