# The synthetic shapes set in MMSeg's img_dir/ann_dir layout, with a tiny student/teacher
# pair (64x64 images, 7 classes incl. background) that trains on 2 CPU cores in minutes.
# Plain mmseg configs of each network (student.py, teacher.py) train them alone.
default_scope = 'mmseg'
custom_imports = dict(imports=['distill.engines.mmengine'], allow_failed_imports=False)

data_root = 'data/shapes_seg'
num_classes = 7  # background + 6 shapes
image_size = 64
# tasks/segmentation/train.py writes the set here when the folder is missing
prepare_data = dict(type='shapes_mmseg', root=data_root, num_train=32, num_val=16,
                    image_size=image_size, num_classes=num_classes - 1)
metainfo = dict(classes=('background', 'disk', 'square', 'triangle', 'ring', 'cross',
                         'diamond'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# test.py --tta (on an exported student): flips at three scales, averaged (mmseg's SegTTAModel;
# its configs use the same pipeline at six scales)
tta_model = dict(type='SegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.75, 1.0, 1.25)],
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')]])]
train_dataloader = dict(
    batch_size=8, num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                 img_suffix='.png', seg_map_suffix='.png',
                 data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                 img_suffix='.png', seg_map_suffix='.png',
                 data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# the networks (plain MMSeg model dicts); BN, not SyncBN, so that CPU runs work
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                         seg_pad_val=255, size=(image_size, image_size))
student_model = dict(
    type='EncoderDecoder', data_preprocessor=data_preprocessor,
    backbone=dict(type='ResNetV1c', depth=18, stem_channels=16, base_channels=8,
                  out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                  norm_cfg=norm_cfg, contract_dilation=True),
    decode_head=dict(type='ASPPHead', in_channels=64, in_index=3, channels=32,
                     dilations=(1, 2, 4), dropout_ratio=0.1, num_classes=num_classes,
                     norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
teacher_model = dict(
    type='EncoderDecoder', data_preprocessor=data_preprocessor,
    backbone=dict(type='ResNetV1c', depth=34, stem_channels=32, base_channels=16,
                  out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                  norm_cfg=norm_cfg, contract_dilation=True),
    decode_head=dict(type='ASPPHead', in_channels=128, in_index=3, channels=64,
                     dilations=(1, 2, 4), dropout_ratio=0.1, num_classes=num_classes,
                     norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))

# schedule: a few minutes on 2 CPU cores
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
max_iters = 400
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters,
                        by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=200)
# --auto-scale-lr: the lr above is for 8 images per step (one process of batch 8)
auto_scale_lr = dict(enable=False, base_batch_size=8)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=200, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # as mmseg's default_runtime, but every image (mmseg's 50 would draw none of a small val
    # set): test.py --show-dir DIR turns drawing on
    visualization=dict(type='SegVisualizationHook', interval=1))
env_cfg = dict(cudnn_benchmark=False,
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
# TensorBoard beside the local files (tensorboard --logdir WORK_DIR), as classification and
# diffusion write it
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
