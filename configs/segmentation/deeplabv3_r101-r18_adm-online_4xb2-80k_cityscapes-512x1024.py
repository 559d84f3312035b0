# Online ADM: DeepLabV3 R101 and DeepLabV3 R18 trained together from ImageNet backbones.
# Validation reports the student's mIoU and the teacher's (teacher/mIoU).
_base_ = './_base_/cityscapes_80k.py'
model = dict(
    type='distill.DistillationModel', scope='mmseg',
    student='mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher='mmseg::deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    distiller=dict(
        # the ADM class's defaults (co=0.1, di=0.01, kd=1 at T=1, a 30 % warm-up, tau=1), as the
        # shapes config measured on real images (README, Segmentation results): co=di=1, shipped
        # before, cost both networks mIoU there; its tau_schedule was never measured
        type='ADM', online=True,
        taps=[dict(student='backbone.layer4', teacher='backbone.layer4'),
              dict(student='decode_head.bottleneck', teacher='decode_head.bottleneck')]))
# each labelled in the log; tasks/segmentation/export.py keeps the plain IoUMetric
val_evaluator = [dict(type='distill.StudentMetric',
                      metric=dict(type='IoUMetric', iou_metrics=['mIoU'])),
                 dict(type='distill.TeacherMetric',
                      metric=dict(type='IoUMetric', iou_metrics=['mIoU']))]
test_evaluator = val_evaluator
