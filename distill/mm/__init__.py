"""The mmengine side of the library: a distillation ``BaseModel`` the Runner trains
(segmentation with MMSegmentation, detection with MMDetection), its teacher metric, and the
weights-only allow-list that lets mmengine resume under torch >= 2.6.

Importing this package registers ``distill.DistillationModel`` and ``distill.TeacherMetric``;
configs name it in ``custom_imports`` so that a plain ``Runner`` finds them.
"""
from distill.mm.compat import patch_package_lookup

patch_package_lookup()  # before any ``mmseg::`` config is read

from distill.mm.metrics import TeacherMetric  # noqa: E402
from distill.mm.export import export_student  # noqa: E402
from distill.mm.model import DistillationModel  # noqa: E402
from distill.mm.safe_load import allow_mmengine_checkpoint_globals  # noqa: E402

__all__ = ['DistillationModel', 'TeacherMetric', 'export_student',
           'allow_mmengine_checkpoint_globals']
