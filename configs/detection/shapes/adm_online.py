# ADM online on the shapes set: student and teacher detectors train together from scratch;
# validation reports both (coco/bbox_mAP and teacher/bbox_mAP). The ADM class's defaults
# (co=0.1, di=0.01, a 30 % warm-up) but kd=0: a detector has no single logits tensor. co=di=1,
# shipped before, cost both detectors mAP on real images (README, Detection results).
_base_ = './_base_.py'
model = dict(
    type='distill.DistillationModel', scope='mmdet',
    student=_base_.student_model, teacher=_base_.teacher_model,
    distiller=dict(type='ADM', online=True, loss_weights=dict(kd=0.0),
                   taps=[dict(student='neck', teacher='neck', index=0),
                         dict(student='neck', teacher='neck', index=1)]))
val_evaluator = [
    dict(type='distill.StudentMetric',
         metric=dict(type='CocoMetric',
                     ann_file=_base_.data_root + 'annotations/instances_val.json',
                     metric='bbox')),
    dict(type='distill.TeacherMetric',
         metric=dict(type='CocoMetric',
                     ann_file=_base_.data_root + 'annotations/instances_val.json',
                     metric='bbox'))]
test_evaluator = val_evaluator
work_dir = 'work_dirs/shapes_det/adm_online'
