# ADM online on the shapes set: student and teacher train together from scratch.
_base_ = './_base_.py'
model = dict(
    type='distill.DistillationModel', scope='mmseg',
    student=_base_.student_model, teacher=_base_.teacher_model,
    adapter=dict(background_classes=[0]),
    distiller=dict(type='ADM', online=True, temperature=1.0, tau=1.0,
                   loss_weights=dict(task=1.0, kd=1.0, co=1.0, di=1.0),
                   taps=[dict(student='backbone.layer3', teacher='backbone.layer3'),
                         dict(student='backbone.layer4', teacher='backbone.layer4')]))
# student (mIoU) and teacher (teacher/mIoU), each labelled in the log; the exported student's
# config keeps the plain IoUMetric
val_evaluator = [dict(type='distill.StudentMetric',
                      metric=dict(type='IoUMetric', iou_metrics=['mIoU'])),
                 dict(type='distill.TeacherMetric',
                      metric=dict(type='IoUMetric', iou_metrics=['mIoU']))]
test_evaluator = val_evaluator
work_dir = 'work_dirs/shapes_seg/adm_online'
