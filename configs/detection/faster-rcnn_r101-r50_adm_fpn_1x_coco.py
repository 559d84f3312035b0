# ADM (online): Faster R-CNN R101-FPN and R50-FPN trained together on COCO.
_base_ = './faster-rcnn_r101-r18_adm_fpn_1x_coco.py'
model = dict(student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
