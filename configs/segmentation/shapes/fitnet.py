# FitNet on the shapes set: hint loss on the last backbone stage, frozen teacher of teacher.py
# (SoKD+FitNet's base, sokd_fitnet.py).
_base_ = './_base_.py'
model = dict(
    type='distill.DistillationModel', scope='mmseg',
    student=_base_.student_model, teacher=_base_.teacher_model,
    teacher_ckpt='work_dirs/shapes_seg/teacher/iter_400.pth',  # read when training starts
    teacher_trained_by='configs/segmentation/shapes/teacher.py',
    teacher_map_location='cpu',
    distiller=dict(type='FitNet', online=False, loss_weights=dict(task=1.0, kd=0.0, fitnet=1.0),
                   taps=[dict(student='backbone.layer4', teacher='backbone.layer4')]))
work_dir = 'work_dirs/shapes_seg/fitnet'
