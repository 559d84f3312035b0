"""Configs written the way MMSegmentation and MMDetection users write theirs, on the user's own
data in the framework's layout, through ``tasks/<task>/train.py`` (README, "Segmentation
(MMSegmentation) and detection (MMDetection)"): the framework's ``mmseg::`` / ``mmdet::``
``_base_`` files (runtime, schedule, a model), the user's own dataset section and networks, and
this library's ``DistillationModel`` with a distiller. And a user's config that inherits a shapes
config but reads its own data: nothing is written outside the work dir.
"""
from __future__ import annotations

import pytest

from config_runs import run_entry_point
from mm_helpers import scalars
from standins import write_coco2017

pytestmark = pytest.mark.end_to_end

pytest.importorskip('mmseg')
pytest.importorskip('mmdet')

MMSEG_USER_CONFIG = """
_base_ = ['mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_20k.py']
custom_imports = dict(imports=['distill.engines.mmengine'], allow_failed_imports=False)

data_root = 'my_scenes'
classes = ('background', 'disk', 'square', 'triangle', 'ring', 'cross', 'diamond')
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                 dict(type='PackSegInputs')]
train_dataloader = dict(
    batch_size=4, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=dict(classes=classes),
                 img_suffix='.png', seg_map_suffix='.png', pipeline=train_pipeline,
                 data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train')))
val_dataloader = dict(
    batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=dict(classes=classes),
                 img_suffix='.png', seg_map_suffix='.png', pipeline=test_pipeline,
                 data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val')))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                         seg_pad_val=255, size=(64, 64))


def fcn(depth, width):
    return dict(type='EncoderDecoder', data_preprocessor=data_preprocessor,
                backbone=dict(type='ResNetV1c', depth=depth, stem_channels=width,
                              base_channels=width // 2, norm_cfg=norm_cfg,
                              dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1)),
                decode_head=dict(type='FCNHead', in_channels=width * 4, in_index=3,
                                 channels=width, num_convs=1, num_classes=len(classes),
                                 norm_cfg=norm_cfg, align_corners=False,
                                 loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
                train_cfg=dict(), test_cfg=dict(mode='whole'))


model = dict(type='distill.DistillationModel', scope='mmseg', student=fcn(18, 16),
             teacher=fcn(34, 32), distiller=dict(type='ADM', taps='auto'))
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
"""

MMDET_USER_CONFIG = """
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/schedules/schedule_1x.py',
          'mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['distill.engines.mmengine'], allow_failed_imports=False)

data_root = 'my_boxes/'
classes = ('person', 'bicycle', 'car', 'motorcycle', 'airplane')
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                  dict(type='Resize', scale=(128, 96), keep_ratio=True),
                  dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]
test_pipeline = [dict(type='LoadImageFromFile'),
                 dict(type='Resize', scale=(128, 96), keep_ratio=True),
                 dict(type='LoadAnnotations', with_bbox=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                       'img_shape', 'scale_factor'))]
train_dataloader = dict(
    batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=dict(classes=classes),
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=dict(classes=classes),
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val2017.json',
                     metric='bbox')
test_evaluator = val_evaluator

# the framework's RetinaNet, without the ImageNet download, for the user's classes
teacher = _base_.model
teacher.backbone.init_cfg = None
teacher.bbox_head.num_classes = len(classes)
student = dict(teacher, backbone=dict(teacher.backbone, depth=18),
               neck=dict(teacher.neck, in_channels=[64, 128, 256, 512]))
model = dict(_delete_=True, type='distill.DistillationModel', scope='mmdet', student=student,
             teacher=teacher,
             distiller=dict(type='ADM', loss_weights=dict(kd=0.0),
                            taps=[dict(student='neck', teacher='neck', index=i)
                                  for i in range(3)]))
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
"""


def test_mmseg_style_config_on_the_users_own_data_trains(tmp_path):
    from distill.data.mmseg_layout import write_shapes_mmseg
    write_shapes_mmseg(tmp_path / 'my_scenes', num_train=8, num_val=4)
    config = tmp_path / 'my_distillation.py'
    config.write_text(MMSEG_USER_CONFIG)
    output = run_entry_point('segmentation', config, tmp_path, '--work-dir',
                             str(tmp_path / 'work'))
    assert "taps='auto' paired" in output
    records = scalars(tmp_path / 'work')
    assert sum('loss' in r for r in records) == 2 and any('mIoU' in r for r in records), \
        output[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['my_distillation.py', 'my_scenes',
                                                          'work']


def test_mmdet_style_config_on_the_users_own_data_trains(tmp_path):
    write_coco2017(tmp_path / 'my_boxes')
    config = tmp_path / 'my_distillation.py'
    config.write_text(MMDET_USER_CONFIG)
    output = run_entry_point('detection', config, tmp_path, '--work-dir',
                             str(tmp_path / 'work'))
    records = scalars(tmp_path / 'work')
    assert sum('loss' in r for r in records) == 2, output[-3000:]
    assert 'Evaluating bbox' in output, output[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['my_boxes', 'my_distillation.py',
                                                          'work']


def test_a_config_inheriting_a_shapes_config_with_its_own_data_writes_no_shapes_set(tmp_path):
    """``prepare_data`` of the inherited shapes config writes its set only where the config's
    loaders read: pointed at the user's own folder, nothing appears in ``data/``."""
    from distill.data.mmseg_layout import write_shapes_mmseg
    from mm_helpers import REPO
    write_shapes_mmseg(tmp_path / 'mine', num_train=8, num_val=4)
    config = tmp_path / 'mine.py'
    config.write_text(
        f"_base_ = {str(REPO / 'configs/segmentation/shapes/adm_online.py')!r}\n"
        "train_dataloader = dict(dataset=dict(data_root='mine'))\n"
        "val_dataloader = dict(dataset=dict(data_root='mine'))\n"
        "test_dataloader = val_dataloader\n"
        "train_cfg = dict(max_iters=2, val_interval=2)\n"
        "default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))\n")
    output = run_entry_point('segmentation', config, tmp_path, '--work-dir',
                             str(tmp_path / 'work'))
    assert 'prepare_data (shapes_mmseg, root data/shapes_seg) skipped' in output
    assert not (tmp_path / 'data').exists()
    assert any('mIoU' in r for r in scalars(tmp_path / 'work'))
