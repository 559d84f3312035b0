# ADM (online): RetinaNet R101-FPN and R50-FPN trained together on COCO.
_base_ = './faster-rcnn_r101-r18_adm_fpn_1x_coco.py'
model = dict(student='mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
             teacher='mmdet::retinanet/retinanet_r101_fpn_1x_coco.py')
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
