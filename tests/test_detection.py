"""Detection distillation on the mmengine Runner (MMDetection detectors).

Runs tasks/detection/train.py and export.py on the tiny shapes RetinaNet pair for a few
iterations; the COCO configs (Faster R-CNN / RetinaNet, R101 teachers) are only built.
"""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mm_helpers import (REPO, build_from_config, check_loss_sum, printed_test_metrics,
                        run_framework_tool, run_script, save_model_checkpoint, scalars)

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)

pytest.importorskip('mmdet')

SHAPES = 'configs/detection/shapes'
TRAIN = 'tasks/detection/train.py'
EXPORT = 'tasks/detection/export.py'
TEST = 'tasks/detection/test.py'
DET_CONFIGS = sorted(p for p in glob.glob(str(REPO / 'configs/detection/**/*.py'),
                                          recursive=True) if '_base_' not in p)


def few_iters(data_root, iters=4, interval=2, extra=(), ann_keys=('val_evaluator.ann_file',)):
    ann = f'{data_root}/annotations/instances_val.json'
    return ['--cfg-options', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={interval}',
            f'default_hooks.checkpoint.interval={interval}', 'default_hooks.logger.interval=1',
            f'prepare_data.root={data_root}', f'train_dataloader.dataset.data_root={data_root}/',
            f'val_dataloader.dataset.data_root={data_root}/',
            f'test_dataloader.dataset.data_root={data_root}/', *(f'{k}={ann}' for k in ann_keys),
            *extra]


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from distill.data.coco_layout import write_shapes_coco
    root = tmp_path_factory.mktemp('det') / 'shapes_coco'
    write_shapes_coco(root, num_train=16, num_val=8, image_size=64)
    return root


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    from mmengine.config import Config
    from distill.engines.mmengine.build import build_mm_model
    cfg = Config.fromfile(str(REPO / SHAPES / '_base_.py'))
    return save_model_checkpoint(build_mm_model(cfg.teacher_model, 'mmdet'),
                                 tmp_path_factory.mktemp('det_teacher') / 'teacher.pth')


# ------------------------------------------------------------------ units
def test_coco_writer(data_root):
    with open(data_root / 'annotations' / 'instances_train.json') as f:
        coco = json.load(f)
    assert len(coco['images']) == 16 and len(coco['categories']) == 6
    ann = coco['annotations'][0]
    assert ann['iscrowd'] == 0 and ann['area'] > 0 and ann['bbox'][2] > 0
    assert ann['area'] <= ann['bbox'][2] * ann['bbox'][3]
    assert (data_root / 'images' / 'train' / coco['images'][0]['file_name']).is_file()


def _dataset_with_crowd_and_empty(tmp_path):
    """A COCO set of 3 images: one with boxes and a crowd annotation, one with none."""
    from distill.data.coco_layout import shapes_coco_dict
    from mmdet.datasets import CocoDataset
    (tmp_path / 'images').mkdir()
    coco = shapes_coco_dict('train', 3, 64, 6, (1, 2), 0, save_images_to=tmp_path / 'images')
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] != 3]  # no boxes
    crowd = dict(coco['annotations'][0], id=999, iscrowd=1, bbox=[0.0, 0.0, 20.0, 20.0])
    coco['annotations'].append(crowd)
    with open(tmp_path / 'ann.json', 'w') as f:
        json.dump(coco, f)
    from distill.data.shapes import shape_class_names
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                dict(type='Resize', scale=(64, 64), keep_ratio=True), dict(type='PackDetInputs')]
    dataset = CocoDataset(data_root=str(tmp_path), ann_file='ann.json',
                          data_prefix=dict(img='images/'),
                          metainfo=dict(classes=tuple(shape_class_names(6))),
                          filter_cfg=dict(filter_empty_gt=False), pipeline=pipeline)
    return dataset, coco


def test_dam_targets_from_gt_boxes_at_each_fpn_level(tmp_path):
    from mmdet.utils import register_all_modules
    register_all_modules()
    from distill.adapters.mmdet import MMDetAdapter
    from distill.sokd.dam import centernet_targets, scale_boxes
    dataset, coco = _dataset_with_crowd_and_empty(tmp_path)
    items = [dataset[i] for i in range(len(dataset))]
    batch = dict(inputs=torch.stack([it['inputs'] for it in items]).float(),
                 data_samples=[it['data_samples'] for it in items])
    adapter = MMDetAdapter()
    boxes = adapter.anchor_boxes(batch)
    by_image = {}
    for ann in coco['annotations']:
        if not ann['iscrowd']:
            x, y, w, h = ann['bbox']
            by_image.setdefault(ann['image_id'], []).append([x, y, x + w, y + h])
    for sample, image_boxes in zip(batch['data_samples'], boxes):
        expected = torch.tensor(by_image.get(sample.img_id, []), dtype=torch.float32)
        assert image_boxes.shape == (len(expected), 4)  # crowd boxes are not anchors
        if len(expected):
            torch.testing.assert_close(image_boxes, expected)
    assert boxes[-1].shape == (0, 4)  # the image without boxes
    assert len(batch['data_samples'][0].ignored_instances) == 1  # the crowd one

    for stride in (8, 16, 32):  # FPN levels of a 64x64 input
        grid = (64 // stride, 64 // stride)
        level_boxes = scale_boxes(boxes, adapter.input_size(batch), grid)
        targets = centernet_targets(level_boxes, None, 1, *grid)
        for i, image_boxes in enumerate(level_boxes):
            assert int(targets['centres'][i].sum()) <= len(image_boxes)
            for x1, y1, x2, y2 in image_boxes.tolist():
                row = min(int((y1 + y2) / 2), grid[0] - 1)
                col = min(int((x1 + x2) / 2), grid[1] - 1)
                assert targets['heatmap'][i, 0, row, col] == pytest.approx(1.0)
                # centre + offset and size give back the box, in input pixels
                cx = col + targets['offset'][i, 0, row, col]
                cy = row + targets['offset'][i, 1, row, col]
                w, h = targets['size'][i, :, row, col]
                decoded = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * stride
                original = torch.tensor([x1, y1, x2, y2]) * stride
                if targets['centres'][i].sum() == len(image_boxes):  # no two share a cell
                    torch.testing.assert_close(decoded, original, atol=1e-4, rtol=0)
        assert targets['heatmap'][-1].sum() == 0


def test_sokd_step_with_crowd_and_empty_images(tmp_path):
    from mmdet.utils import register_all_modules
    register_all_modules()
    model = build_from_config(REPO / SHAPES / 'sokd_fitnet.py',
                              {'model.teacher_ckpt': None, 'model.random_teacher': True})
    from mmengine.dataset import pseudo_collate
    from distill.engines.mmengine.sokd_search import ShuffledTrainBatches
    dataset, _ = _dataset_with_crowd_and_empty(tmp_path)
    data = model.data_preprocessor(
        dict(inputs=[dataset[i]['inputs'] for i in range(3)],
             data_samples=[dataset[i]['data_samples'] for i in range(3)]), True)
    # the arch step's val batch: a shuffle of the same images (as ArchBatchesHook sets up)
    model.arch_search.val_batches = ShuffledTrainBatches(
        dataset, pseudo_collate, 3, seed=0, prepare=lambda d: model.data_preprocessor(d, True))
    terms = model(**data, mode='loss')
    assert {'student.task', 'student.fitnet', 'student.dam', 'dam.anchor'} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    total, log_vars = model.parse_losses(terms)
    assert 'arch.val_loss' in log_vars  # the arch step ran (iteration 0)
    total.backward()


def test_kd_weight_must_be_zero_for_detectors():
    with pytest.raises(ValueError, match='kd'):
        build_from_config(REPO / SHAPES / 'adm_online.py',
                          {'model.distiller.loss_weights.kd': 1.0})


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize('config', DET_CONFIGS, ids=lambda p: Path(p).stem)
def test_every_detection_config_builds(config):
    from mmengine.config import Config
    from distill.engines.mmengine import DistillationModel
    cfg = Config.fromfile(config)
    overrides = ({'model.teacher_ckpt': None, 'model.random_teacher': True}
                 if 'teacher_ckpt' in cfg.model else None)
    model = build_from_config(config, overrides)
    if cfg.model.type == 'distill.DistillationModel':
        assert isinstance(model, DistillationModel)
        assert model.scope == 'mmdet'
        assert sum(p.numel() for p in model.student.parameters()) < sum(
            p.numel() for p in model.teacher.parameters())
    else:
        assert type(model).__name__ == 'RetinaNet'


# ------------------------------------------------------------------ Runner runs
def test_shapes_sokd_trains_evaluates_resumes_and_exports(data_root, teacher_ckpt, tmp_path):
    pytest.importorskip('distill.distillers.sokd')
    work = tmp_path / 'sokd'
    extra = [f'model.teacher_ckpt={teacher_ckpt}', 'model.search_iters=4',
             'model.distiller.arch_interval=2']
    run_script(TRAIN, f'{SHAPES}/sokd_fitnet.py', '--work-dir', str(work),
               *few_iters(data_root, iters=4, interval=2, extra=extra))
    records = scalars(work)
    assert any('coco/bbox_mAP' in r for r in records)  # pycocotools bbox evaluation
    train = [r for r in records if 'student.loss_fitnet' in r]
    assert train and {'student.loss_task', 'student.loss_dam', 'dam.loss_anchor'} <= set(
        train[-1])
    assert any('arch.val_loss' in r for r in records)

    # MMDetection's --resume CHECKPOINT form
    out = run_script(TRAIN, f'{SHAPES}/sokd_fitnet.py', '--work-dir', str(work),
                     '--resume', str(work / 'iter_4.pth'),
                     *few_iters(data_root, iters=6, interval=2, extra=extra))
    assert 'resumed epoch: 0, iter: 4' in out and (work / 'iter_6.pth').is_file()

    run_script(EXPORT, f'{SHAPES}/sokd_fitnet.py', str(work / 'iter_6.pth'),
               str(tmp_path / 'student.pth'))
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(str(tmp_path / 'student.py'), str(tmp_path / 'student.pth'),
                          device='cpu')
    assert model.dataset_meta['classes'][0] == 'disk'
    from distill.engines.mmengine import allow_mmengine_checkpoint_globals
    allow_mmengine_checkpoint_globals()  # Runner checkpoints, weights_only still on
    checkpoint = torch.load(work / 'iter_6.pth', weights_only=True)['state_dict']
    key = 'neck.fpn_convs.0.conv.weight'
    torch.testing.assert_close(model.state_dict()[key], checkpoint[f'distiller.base.student.{key}'])
    result = inference_detector(model, np.zeros((64, 64, 3), np.uint8))
    assert result.pred_instances.bboxes.shape[-1] == 4


def test_shapes_adm_online_reports_tests_and_exports_student_and_teacher_map(data_root,
                                                                            tmp_path):
    work = tmp_path / 'adm'
    ann_keys = ('val_evaluator.0.metric.ann_file', 'val_evaluator.1.metric.ann_file',
                'test_evaluator.0.metric.ann_file', 'test_evaluator.1.metric.ann_file')
    out = run_script(TRAIN, f'{SHAPES}/adm_online.py', '--work-dir', str(work),
                     *few_iters(data_root, iters=2, interval=2, ann_keys=ann_keys))
    assert check_loss_sum(out) == 2
    # the shapes configs keep boxes of any score: a quick run is rated, not "empty"
    assert 'results of the whole dataset is empty' not in out
    assert 'evaluating the student (CocoMetric, coco/*)' in out
    assert 'evaluating the teacher (CocoMetric, teacher/*)' in out
    records = scalars(work)
    val = [r for r in records if 'coco/bbox_mAP' in r]
    assert val and 'teacher/bbox_mAP' in val[-1]
    train = [r for r in records if 'student.loss_co' in r]
    assert train and {'teacher.loss_task', 'teacher.loss_di'} <= set(train[-1])

    out = run_script(TEST, f'{SHAPES}/adm_online.py', str(work / 'iter_2.pth'), '--work-dir',
                     str(tmp_path / 'test'), '--out', str(tmp_path / 'dets.pkl'),
                     '--show-dir', str(tmp_path / 'shown'),
                     *few_iters(data_root, ann_keys=ann_keys))
    distilled = printed_test_metrics(out)
    assert {'coco/bbox_mAP', 'teacher/bbox_mAP'} <= set(distilled)
    assert list((tmp_path / 'test').rglob('shown/*.png')) or list(
        (tmp_path / 'shown').rglob('*.png'))  # --show-dir draws the detections
    assert (tmp_path / 'dets.pkl').is_file() and (tmp_path / 'dets.teacher.pkl').is_file()

    # the exported student under MMDetection's own tools/test.py: same mAP, no distill import
    run_script(EXPORT, f'{SHAPES}/adm_online.py', str(work / 'iter_2.pth'),
               str(tmp_path / 'student.pth'), *few_iters(data_root, ann_keys=ann_keys))
    assert 'distill' not in (tmp_path / 'student.py').read_text()
    out = run_framework_tool('mmdet', 'test.py', str(tmp_path / 'student.py'),
                             str(tmp_path / 'student.pth'), '--work-dir', str(tmp_path / 'p'))
    assert 'DISTILL IMPORTED: False' in out
    assert printed_test_metrics(out)['coco/bbox_mAP'] == distilled['coco/bbox_mAP']
    # and MMDetection's own tools/train.py fine-tunes it (load_from: the exported weights)
    out = run_framework_tool('mmdet', 'train.py', str(tmp_path / 'student.py'), '--work-dir',
                             str(tmp_path / 'tuned'), '--cfg-options', 'train_cfg.max_iters=2',
                             'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2')
    assert 'DISTILL IMPORTED: False' in out and 'Load checkpoint from' in out
    assert (tmp_path / 'tuned' / 'iter_2.pth').is_file()


def test_two_stage_detector_loss_step():
    """Faster R-CNN (two-stage) through the adapter: the detector's own RPN + RoI losses, FPN
    taps at every level, gradients to the student (and, online, to the teacher)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    # outside a Runner nothing sets the progress ADM's warm-up needs: the terms at full weight
    model = build_from_config(REPO / 'configs/detection/faster-rcnn_r101-r18_adm_fpn_1x_coco.py',
                              {'model.distiller.warmup': 0.0})
    samples = []
    for boxes in ([[4.0, 6.0, 40.0, 50.0]], []):
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                             pad_shape=(64, 64), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4),
                                           labels=torch.zeros(len(boxes), dtype=torch.long))
        samples.append(sample)
    model.train()
    terms = model(torch.randn(2, 3, 64, 64), samples, mode='loss')
    assert {'student.task', 'teacher.task', 'student.co', 'teacher.di'} <= set(terms)
    total, log_vars = model.parse_losses(terms)
    total.backward()
    assert float(model.student.neck.fpn_convs[0].conv.weight.grad.abs().sum()) > 0
    assert float(model.teacher.roi_head.bbox_head.fc_cls.weight.grad.abs().sum()) > 0
    assert [p['student'] for p in model.distiller.tap_pairs] == [f'neck[{i}]' for i in range(4)]
