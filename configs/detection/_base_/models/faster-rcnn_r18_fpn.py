# Faster R-CNN with a ResNet-18 FPN (MMDetection ships no 1x config for it): the R50 model
# with an 18-layer backbone. A local model config, named by the distillation configs.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[64, 128, 256, 512]))
