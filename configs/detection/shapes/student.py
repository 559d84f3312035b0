# The tiny shapes RetinaNet student trained alone (a plain MMDetection config): the baseline.
_base_ = './_base_.py'
model = _base_.student_model
work_dir = 'work_dirs/shapes_det/student'
