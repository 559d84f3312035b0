"""The mmengine side of the library: a distillation ``BaseModel`` the Runner trains
(segmentation with MMSegmentation, detection with MMDetection), its teacher metric, and the
weights-only allow-list that lets mmengine resume under torch >= 2.6.

Importing this package registers ``distill.DistillationModel``, ``distill.StudentMetric`` and
``distill.TeacherMetric``, and adds mmengine's checkpoint contents to torch's weights-only
allow-list; configs name it in ``custom_imports``, so that a plain ``Runner`` (and
MMSegmentation's / MMDetection's own ``tools/train.py --resume`` and ``tools/test.py``) finds
the types and loads our checkpoints with ``weights_only`` left on.
"""
from distill.engines.mmengine.compat import patch_package_lookup

patch_package_lookup()  # before any ``mmseg::`` config is read

from distill.engines.mmengine.teacher_metric import StudentMetric, TeacherMetric  # noqa: E402
from distill.engines.mmengine.export import export_student  # noqa: E402
from distill.engines.mmengine.model import DistillationModel  # noqa: E402
from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals  # noqa: E402

allow_mmengine_checkpoint_globals()

__all__ = ['DistillationModel', 'StudentMetric', 'TeacherMetric', 'export_student',
           'allow_mmengine_checkpoint_globals']
