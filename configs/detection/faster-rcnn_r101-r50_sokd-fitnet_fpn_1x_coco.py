# SoKD + FitNet: Faster R-CNN R101-FPN (frozen) -> Faster R-CNN R50-FPN on COCO.
_base_ = './faster-rcnn_r101-r18_sokd-fitnet_fpn_1x_coco.py'
model = dict(student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
