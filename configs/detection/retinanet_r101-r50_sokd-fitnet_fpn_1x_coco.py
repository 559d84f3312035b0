# SoKD + FitNet: RetinaNet R101-FPN (frozen) -> RetinaNet R50-FPN on COCO.
_base_ = './faster-rcnn_r101-r18_sokd-fitnet_fpn_1x_coco.py'
model = dict(
    student='mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
    teacher_ckpt='https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
                 'retinanet_r101_fpn_2x_coco/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth')
# RetinaNet's usual optimiser (gradient clipping, as in mmdet's retinanet configs)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
