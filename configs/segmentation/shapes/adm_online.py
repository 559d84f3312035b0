# ADM online on the shapes set: student and teacher train together from scratch, with the ADM
# class's defaults (co=0.1, di=0.01, kd=1 at T=1, a 30 % warm-up). co=di=1, shipped before,
# cost the student and the teacher mIoU on real images (README, Segmentation results).
_base_ = './_base_.py'
model = dict(
    type='distill.DistillationModel', scope='mmseg',
    student=_base_.student_model, teacher=_base_.teacher_model,
    adapter=dict(background_classes=[0]),
    distiller=dict(type='ADM', online=True,
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
