# The synthetic shapes set as a COCO-format dataset (images + annotations/*.json), with a
# tiny RetinaNet student/teacher pair (64x64 images, a 2-level FPN of 32 channels) that trains
# on 2 CPU cores in minutes. student.py / teacher.py train each network alone.
default_scope = 'mmdet'
custom_imports = dict(imports=['distill.engines.mmengine'], allow_failed_imports=False)

data_root = 'data/shapes_coco/'
image_size = 64
classes = ('disk', 'square', 'triangle', 'ring', 'cross', 'diamond')
# tasks/detection/train.py writes the set here when the folder is missing
prepare_data = dict(type='shapes_coco', root=data_root, num_train=32, num_val=16,
                    image_size=image_size, num_classes=len(classes))
metainfo = dict(classes=classes)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),  # sets scale_factor
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=0), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='images/val/'), test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json',
                     metric='bbox', format_only=False)
test_evaluator = val_evaluator

# the networks (plain MMDetection model dicts)
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=16)


def retinanet(depth, base_channels, fpn_channels=32):
    return dict(
        type='RetinaNet', data_preprocessor=data_preprocessor,
        backbone=dict(type='ResNet', depth=depth, base_channels=base_channels,
                      stem_channels=base_channels, num_stages=3, out_indices=(1, 2),
                      strides=(1, 2, 2), dilations=(1, 1, 1), frozen_stages=-1,
                      norm_cfg=norm_cfg, norm_eval=False, style='pytorch'),
        neck=dict(type='FPN', in_channels=[base_channels * 2, base_channels * 4],
                  out_channels=fpn_channels, start_level=0, num_outs=2),
        bbox_head=dict(
            type='RetinaHead', num_classes=len(classes), in_channels=fpn_channels,
            stacked_convs=1, feat_channels=fpn_channels,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=3,
                                  scales_per_octave=2, ratios=[0.5, 1.0, 2.0],
                                  strides=[8, 16]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                     min_pos_iou=0, ignore_iof_thr=-1),
                       sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1,
                       debug=False),
        # score_thr 0 (MMDetection's configs use 0.05): a few-iteration run scores every box
        # near the focal-loss prior 0.01, and with none kept COCO evaluation has nothing to
        # rate; max_per_img bounds the boxes kept
        test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.0,
                      nms=dict(type='nms', iou_threshold=0.5), max_per_img=20))


student_model = retinanet(depth=18, base_channels=8)
teacher_model = retinanet(depth=34, base_channels=16)

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10, norm_type=2))
max_iters = 400
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1)]
# --auto-scale-lr scales lr by (processes x batch_size) / base_batch_size, as in MMDetection
auto_scale_lr = dict(enable=False, base_batch_size=8)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=200)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=200, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # as mmdet's default_runtime, but every image (mmdet's 50 would draw none of a small val
    # set): test.py --show-dir DIR turns drawing on
    visualization=dict(type='DetVisualizationHook', interval=1))
env_cfg = dict(cudnn_benchmark=False,
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
# TensorBoard beside the local files (tensorboard --logdir WORK_DIR), as classification and
# diffusion write it
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
