# The tiny shapes RetinaNet teacher trained alone: the frozen teacher of sokd_fitnet.py,
# fitnet.py and adm_offline.py (work_dirs/shapes_det/teacher/iter_400.pth).
_base_ = './_base_.py'
model = _base_.teacher_model
work_dir = 'work_dirs/shapes_det/teacher'
