# FitNet on the shapes set: hint loss on both FPN levels, frozen teacher.
_base_ = './_base_.py'
model = dict(
    type='distill.DistillationModel', scope='mmdet',
    student=_base_.student_model, teacher=_base_.teacher_model,
    teacher_ckpt='work_dirs/shapes_det/teacher/iter_400.pth',  # read when training starts
    teacher_trained_by='configs/detection/shapes/teacher.py',
    teacher_map_location='cpu',
    distiller=dict(type='FitNet', online=False, loss_weights=dict(task=1.0, kd=0.0, fitnet=1.0),
                   taps=[dict(student='neck', teacher='neck', index=0),
                         dict(student='neck', teacher='neck', index=1)]))
work_dir = 'work_dirs/shapes_det/fitnet'
