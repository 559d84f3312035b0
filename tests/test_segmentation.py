"""Segmentation distillation on the mmengine Runner (MMSegmentation segmentors).

Runs the real entry points (tasks/segmentation/train.py, export.py) on the tiny shapes config
for a few iterations; the Cityscapes configs are only built (random weights, nothing loaded).
"""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import torch

from mm_helpers import (REPO, build_from_config, check_loss_sum, printed_test_metrics,
                        run_framework_tool, run_script, save_model_checkpoint, scalars)

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)

pytest.importorskip('mmseg')

SHAPES = 'configs/segmentation/shapes'
TRAIN = 'tasks/segmentation/train.py'
EXPORT = 'tasks/segmentation/export.py'
TEST = 'tasks/segmentation/test.py'
SEG_CONFIGS = sorted(p for p in glob.glob(str(REPO / 'configs/segmentation/**/*.py'),
                                          recursive=True) if '_base_' not in p)


def few_iters(data_root, iters=4, interval=2, extra=()):
    """--cfg-options for a short run on the test's own copy of the shapes set."""
    return ['--cfg-options', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={interval}',
            f'default_hooks.checkpoint.interval={interval}', 'default_hooks.logger.interval=1',
            f'prepare_data.root={data_root}', f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}',
            f'test_dataloader.dataset.data_root={data_root}', *extra]


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from distill.data.mmseg_layout import write_shapes_mmseg
    root = tmp_path_factory.mktemp('seg') / 'shapes_seg'
    write_shapes_mmseg(root, num_train=16, num_val=8, image_size=64)
    return root


# ------------------------------------------------------------------ units
def test_shapes_writer_layout(data_root):
    from PIL import Image
    images = sorted((data_root / 'img_dir' / 'train').glob('*.png'))
    labels = sorted((data_root / 'ann_dir' / 'train').glob('*.png'))
    assert len(images) == len(labels) == 16
    label = np.array(Image.open(labels[0]))
    assert label.shape == (64, 64) and label.max() <= 6 and (label > 0).any()


def _adapter_and_batch(labels):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from distill.adapters.mmseg import MMSegAdapter
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.as_tensor(label)[None].long())
        samples.append(sample)
    batch = dict(inputs=torch.zeros(len(labels), 3, *labels[0].shape), data_samples=samples)
    return MMSegAdapter(ignore_index=255, background_classes=[0]), batch


def test_per_pixel_kd_ignores_ignore_index():
    from distill.adapters.base import ModelOutput
    label = np.zeros((8, 8), np.int64)
    label[:, 4:] = 255
    adapter, batch = _adapter_and_batch([label])
    student = torch.zeros(1, 3, 8, 8)
    teacher = torch.zeros(1, 3, 8, 8)
    teacher[:, 0, :, 4:] = 5.0  # differs only where the label is ignored
    loss = adapter.output_loss(ModelOutput(outputs=student), ModelOutput(outputs=teacher),
                               batch, temperature=1.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-7)
    teacher[:, 0, 0, 0] = 5.0  # and now at one labelled pixel
    loss = adapter.output_loss(ModelOutput(outputs=student), ModelOutput(outputs=teacher),
                               batch, temperature=1.0)
    assert float(loss) > 1e-3
    # logits at a lower resolution are resized to the label size
    loss_low = adapter.output_loss(ModelOutput(outputs=torch.zeros(1, 3, 4, 4)),
                                   ModelOutput(outputs=torch.zeros(1, 3, 4, 4)), batch, 1.0)
    assert float(loss_low) == pytest.approx(0.0, abs=1e-7)


def test_anchor_boxes_are_class_components():
    label = np.zeros((16, 16), np.int64)
    label[1:3, 1:4] = 1    # two components of class 1
    label[10:12, 10:16] = 1
    label[5:9, 5:7] = 2    # one of class 2
    label[0, 15] = 255     # ignored pixels give no box
    adapter, batch = _adapter_and_batch([label, np.zeros((16, 16), np.int64)])
    boxes = adapter.anchor_boxes(batch)
    got = sorted(map(tuple, boxes[0].tolist()))
    assert got == sorted([(1, 1, 4, 3), (10, 10, 16, 12), (5, 5, 7, 9)])
    assert boxes[1].shape == (0, 4)  # background only: no boxes, no crash


def test_teacher_input_conversion_matches_its_own_preprocessing():
    from mmseg.models.data_preprocessor import SegDataPreProcessor
    from distill.adapters.mm_common import Normalisation, convert_inputs
    student_pp = SegDataPreProcessor(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                                     bgr_to_rgb=True)
    teacher_pp = SegDataPreProcessor(mean=[100.0, 110.0, 120.0], std=[50.0, 60.0, 70.0],
                                     bgr_to_rgb=False)
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    data = dict(inputs=[image], data_samples=None)
    student_inputs = student_pp(dict(data), False)['inputs']
    teacher_inputs = teacher_pp(dict(data), False)['inputs']
    converted = convert_inputs(student_inputs, Normalisation.of(student_pp),
                               Normalisation.of(teacher_pp))
    torch.testing.assert_close(converted, teacher_inputs, atol=1e-4, rtol=1e-4)


def test_safe_globals_keep_weights_only_and_refuse_other_getattr(tmp_path):
    import pickle
    from mmengine.logging import HistoryBuffer
    from distill.engines.mmengine.safe_load import (allow_mmengine_checkpoint_globals,
                                                    history_buffer_method)
    buffer = HistoryBuffer()
    buffer.update(np.float64(1.5))
    path = tmp_path / 'hub.pth'
    torch.save(dict(message_hub=dict(log_scalars={'loss': buffer}), meta=dict(seed=np.int64(3))),
               path)
    allow_mmengine_checkpoint_globals()
    loaded = torch.load(path, weights_only=True)
    assert loaded['message_hub']['log_scalars']['loss'].current() == 1.5
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_method(torch, 'load')

    class Evil:  # getattr on an allowed class, for a name that is no statistics method
        def __reduce__(self):
            return (getattr, (HistoryBuffer, 'register_statistics'))
    torch.save(dict(x=Evil()), tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / 'evil.pth', weights_only=True)


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize('config', SEG_CONFIGS, ids=lambda p: Path(p).stem)
def test_every_segmentation_config_builds(config):
    from mmengine.config import Config
    from distill.engines.mmengine import DistillationModel
    cfg = Config.fromfile(config)
    overrides = {}
    if 'teacher_ckpt' in cfg.model:
        overrides['model.teacher_ckpt'] = None  # nothing is downloaded or loaded
        overrides['model.random_teacher'] = True
    model = build_from_config(config, overrides)
    if cfg.model.type == 'distill.DistillationModel':
        assert isinstance(model, DistillationModel)
        assert model.distiller.student is not model.distiller.teacher
        assert sum(p.numel() for p in model.student.parameters()) < sum(
            p.numel() for p in model.teacher.parameters())
    else:
        assert type(model).__name__ == 'EncoderDecoder'


# ------------------------------------------------------------------ Runner runs
def test_shapes_adm_trains_validates_resumes_tests_and_exports(data_root, tmp_path):
    work = tmp_path / 'adm'
    out = run_script(TRAIN, f'{SHAPES}/adm_online.py', '--work-dir', str(work),
                     *few_iters(data_root, iters=4, interval=2))
    assert (work / 'iter_4.pth').is_file()
    assert check_loss_sum(out) == 4  # the printed terms add up to the printed loss
    assert out.count('evaluating the student (IoUMetric') == 2  # labelled tables, 2 vals
    assert out.count('evaluating the teacher (IoUMetric, teacher/*)') == 2
    val = [r for r in scalars(work) if 'mIoU' in r]
    assert val and all('teacher/mIoU' in r for r in val)  # student and teacher, online
    train = [r for r in scalars(work) if 'student.loss_co' in r]
    assert train and {'student.loss_task', 'teacher.loss_task', 'student.loss_kd',
                      'teacher.loss_kd', 'teacher.loss_di'} <= set(train[-1])

    # MMSegmentation's own tools/train.py resumes it: custom_imports=['distill.engines.mmengine']
    # brings the types and the weights-only allow-list
    out = run_framework_tool('mmseg', 'train.py', f'{SHAPES}/adm_online.py', '--work-dir',
                             str(work), '--resume', *few_iters(data_root, iters=6, interval=2))
    assert 'resumed epoch: 0, iter: 4' in out
    assert (work / 'iter_6.pth').is_file()
    assert list(work.rglob('events.out.tfevents.*'))  # TensorBoard by default

    # student and teacher of the distillation checkpoint, each labelled
    out = run_script(TEST, f'{SHAPES}/adm_online.py', str(work / 'iter_6.pth'), '--work-dir',
                     str(tmp_path / 'test'), '--show-dir', str(tmp_path / 'shown'),
                     *few_iters(data_root))
    distilled = printed_test_metrics(out)
    assert {'mIoU', 'teacher/mIoU'} <= set(distilled)
    assert list((tmp_path / 'shown').rglob('*.png'))  # --show-dir draws the predictions
    assert 'evaluating the teacher' in out

    # export the student; MMSegmentation's own tools/test.py runs it (no distill import) and
    # gives the student's mIoU
    run_script(EXPORT, f'{SHAPES}/adm_online.py', str(work / 'iter_6.pth'),
               str(tmp_path / 'student.pth'), *few_iters(data_root))
    assert 'distill' not in (tmp_path / 'student.py').read_text()
    out = run_framework_tool('mmseg', 'test.py', str(tmp_path / 'student.py'),
                             str(tmp_path / 'student.pth'), '--work-dir', str(tmp_path / 'plain'))
    assert 'DISTILL IMPORTED: False' in out
    plain = printed_test_metrics(out)
    assert plain['mIoU'] == distilled['mIoU'] and plain['aAcc'] == distilled['aAcc']
    out = run_script(TEST, str(tmp_path / 'student.py'), str(tmp_path / 'student.pth'),
                     '--work-dir', str(tmp_path / 'tta'), '--tta')  # flips at three scales
    assert 'mIoU' in printed_test_metrics(out)

    from mmseg.apis import inference_model, init_model
    model = init_model(str(tmp_path / 'student.py'), str(tmp_path / 'student.pth'),
                       device='cpu')
    assert model.dataset_meta['classes'][0] == 'background'
    checkpoint = torch.load(work / 'iter_6.pth', map_location='cpu', weights_only=True)
    key = 'backbone.layer1.0.conv1.weight'
    torch.testing.assert_close(model.state_dict()[key],
                               checkpoint['state_dict'][f'distiller.student.{key}'])
    result = inference_model(model, np.zeros((64, 64, 3), np.uint8))
    assert tuple(result.pred_sem_seg.shape) == (64, 64)


def test_missing_offline_teacher_names_the_config_that_trains_it(data_root, tmp_path):
    out = run_script(TRAIN, f'{SHAPES}/adm_offline.py', '--work-dir', str(tmp_path / 'w'),
                     *few_iters(data_root, extra=[
                         f'model.teacher_ckpt={tmp_path}/no_teacher.pth']), expect_fail=True)
    assert 'no_teacher.pth' in out and 'configs/segmentation/shapes/teacher.py' in out
    assert 'model.teacher_ckpt=PATH' in out
    assert 'Config:' not in out  # said before the Runner dumps the config


def test_shapes_adm_offline_with_teacher_checkpoint(data_root, tmp_path):
    # a teacher trained alone (a Runner checkpoint: HistoryBuffer and all) -> offline ADM
    teacher_dir = tmp_path / 'teacher'
    run_script(TRAIN, f'{SHAPES}/teacher.py', '--work-dir', str(teacher_dir),
               *few_iters(data_root, iters=2, interval=2))
    work = tmp_path / 'offline'
    run_script(TRAIN, f'{SHAPES}/adm_offline.py', '--work-dir', str(work),
               *few_iters(data_root, iters=2, interval=2,
                          extra=[f'model.teacher_ckpt={teacher_dir}/iter_2.pth']))
    records = scalars(work)
    train = [r for r in records if 'student.loss_co' in r]
    assert train and 'teacher.loss_task' not in train[-1] and 'teacher.loss_di' not in train[-1]
    assert any('mIoU' in r for r in records)
    # the frozen teacher kept the checkpoint's weights
    from distill.engines.mmengine import allow_mmengine_checkpoint_globals
    allow_mmengine_checkpoint_globals()
    teacher = torch.load(teacher_dir / 'iter_2.pth', weights_only=True)['state_dict']
    final = torch.load(work / 'iter_2.pth', weights_only=True)['state_dict']
    key = 'backbone.layer1.0.conv1.weight'
    torch.testing.assert_close(final[f'distiller.teacher.{key}'], teacher[key])


def test_shapes_sokd_fitnet_trains_and_searches(data_root, tmp_path):
    pytest.importorskip('distill.distillers.sokd')
    from mmengine.config import Config
    from distill.engines.mmengine.build import build_mm_model
    cfg = Config.fromfile(str(REPO / SHAPES / '_base_.py'))
    teacher_ckpt = save_model_checkpoint(build_mm_model(cfg.teacher_model, 'mmseg'),
                                         tmp_path / 'teacher.pth')
    work = tmp_path / 'sokd'
    run_script(TRAIN, f'{SHAPES}/sokd_fitnet.py', '--work-dir', str(work),
               *few_iters(data_root, iters=4, interval=4,
                          extra=[f'model.teacher_ckpt={teacher_ckpt}', 'model.search_iters=4',
                                 'model.distiller.arch_interval=2']))
    records = scalars(work)
    train = [r for r in records if 'student.loss_fitnet' in r]
    assert train and {'student.loss_dam', 'dam.loss_anchor'} <= set(train[-1])
    assert any('arch.val_loss' in r for r in records)  # the policy search ran
    assert any('mIoU' in r for r in records)


def test_two_process_cpu_run_with_torchrun(data_root, tmp_path):
    work = tmp_path / 'ddp'
    out = run_script(TRAIN, f'{SHAPES}/adm_online.py', '--launcher', 'pytorch',
                     '--work-dir', str(work), *few_iters(data_root, iters=2, interval=2),
                     torchrun=2)
    assert 'Distributed training: True' in out
    # 8 validation images, batch 8 per process: one batch each when there are 2 processes
    assert 'Iter(val) [1/1]' in out
    assert out.count('[rank1]') == 0 and (work / 'iter_2.pth').is_file()
