# ADM (online): Faster R-CNN R101-FPN and R18-FPN trained together from ImageNet backbones.
# Consensus (student) and divergence (teacher) on four FPN levels; the detectors' own losses
# replace logits KD (kd=0). Validation reports the student's and the teacher's bbox mAP.
_base_ = './_base_/coco_1x.py'
fpn_taps = [dict(student='neck', teacher='neck', index=i) for i in (0, 1, 2, 3)]
model = dict(
    type='distill.DistillationModel', scope='mmdet',
    student='{{fileDirname}}/_base_/models/faster-rcnn_r18_fpn.py',
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py',
    # the ADM class's defaults (co=0.1, di=0.01, a 30 % warm-up), as the shapes config measured
    # on real images (README, Detection results), but kd=0 (a detector has no logits tensor);
    # co=di=1, shipped before, cost both detectors mAP there
    distiller=dict(type='ADM', online=True, loss_weights=dict(kd=0.0), taps=fpn_taps))
val_evaluator = [
    dict(type='distill.StudentMetric',
         metric=dict(type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
                     metric='bbox', format_only=False)),
    dict(type='distill.TeacherMetric',
         metric=dict(type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
                     metric='bbox', format_only=False))]
test_evaluator = val_evaluator
