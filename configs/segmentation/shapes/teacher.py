# The tiny shapes teacher trained alone: its checkpoint is the offline teacher of
# adm_offline.py (tasks/segmentation/train.py configs/segmentation/shapes/teacher.py).
_base_ = './_base_.py'
model = _base_.teacher_model
work_dir = 'work_dirs/shapes_seg/teacher'
