"""Validation of the teacher alongside the student, with the task's own metric.

In ``predict`` mode the distillation model stores the teacher's predictions beside the
student's, under the same field names prefixed ``teacher_`` (``teacher_pred_sem_seg``,
``teacher_pred_instances``). ``TeacherMetric`` wraps any metric (``IoUMetric``,
``CocoMetric``) and shows it the teacher's fields under the usual names; its results are
reported as ``teacher/<name>`` (``teacher/mIoU``, ``teacher/bbox_mAP``).
"""
from __future__ import annotations

from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import Registry

METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='distill', locations=['distill.mm'])

TEACHER_FIELD_PREFIX = 'teacher_'


def teacher_view(data_sample: dict, field_prefix: str = TEACHER_FIELD_PREFIX) -> dict:
    """A copy of a data-sample dict where the teacher's fields replace the student's."""
    view = {k: v for k, v in data_sample.items() if not k.startswith(field_prefix)}
    for name, value in data_sample.items():
        if name.startswith(field_prefix):
            view[name[len(field_prefix):]] = value
    return view


@METRICS.register_module()
class TeacherMetric(BaseMetric):
    """``metric`` evaluated on the teacher's predictions, reported under ``prefix``."""

    def __init__(self, metric: dict, prefix: str = 'teacher', collect_device: str = 'cpu',
                 field_prefix: str = TEACHER_FIELD_PREFIX):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metric = metric if isinstance(metric, BaseMetric) else MMENGINE_METRICS.build(metric)
        self.field_prefix = field_prefix

    @property
    def dataset_meta(self):
        return self.metric.dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta):
        self.metric.dataset_meta = dataset_meta

    def process(self, data_batch, data_samples) -> None:
        views = [teacher_view(s, self.field_prefix) for s in data_samples]
        if any(not any(k.startswith(self.field_prefix) for k in s) for s in data_samples):
            raise KeyError('TeacherMetric found no teacher predictions: set '
                           'validate_teacher=True on the DistillationModel')
        self.metric.process(data_batch, views)
        # the wrapped metric's per-sample results become ours: evaluate() collects them
        self.results.extend(self.metric.results)
        self.metric.results.clear()

    def compute_metrics(self, results: list) -> dict:
        return self.metric.compute_metrics(results)
