# SoKD + FitNet: Faster R-CNN R101-FPN (trained, frozen) -> Faster R-CNN R18-FPN on COCO.
# FitNet hints on four FPN levels; DAFA refines the teacher's levels; DAM, anchored on the
# ground-truth boxes scaled to the level, masks the hint loss of the last listed level.
_base_ = './_base_/coco_1x.py'
fpn_taps = [dict(student='neck', teacher='neck', index=i) for i in (0, 2, 3, 1)]
model = dict(
    type='distill.DistillationModel', scope='mmdet',
    student='{{fileDirname}}/_base_/models/faster-rcnn_r18_fpn.py',
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/'
                 'faster_rcnn_r101_fpn_2x_coco/'
                 'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
    teacher_map_location='cpu',
    search_iters=7330,  # one COCO epoch at 16 images per step: the policy search
    distiller=dict(
        type='SoKD',
        base=dict(type='FitNet', online=False, loss_weights=dict(task=1.0, kd=0.0, fitnet=1.0),
                  taps=fpn_taps),
        dafa=dict(), dam=dict(channels=64, top_k=8),
        arch_interval=10, search_epochs=1, xi=0.02))
# SoKD's arch step draws its val batches from a second shuffle of the training set
# (tasks/*/train.py add this hook anyway; a plain tools/train.py run needs it here)
custom_hooks = [dict(type='distill.ArchBatchesHook')]
