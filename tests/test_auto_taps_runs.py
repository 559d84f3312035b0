"""``taps='auto'`` through every entry point: the shapes configs of segmentation (MMSeg
EncoderDecoder), detection (MMDet), classification and diffusion (a diffusers UNet) train two
steps with the taps chosen when the distiller is built, and each run's log names the pairs.

The auto pairing probes the modules a training step runs, the way it runs them: MMSeg's
EncoderDecoder calls ``decode_head.forward`` directly, so a hook on ``decode_head`` never fires
in training; the pairing once chose it and the run stopped at its first step with a bare
``KeyError: 'decode_head'``.
"""
from __future__ import annotations

import pytest

from mm_helpers import build_from_config, run_script

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)

SEG_PAIRS = ("taps='auto' paired student backbone.stem (stride 2) -> teacher backbone.stem "
             "(stride 2), student backbone.layer1 (stride 4) -> teacher backbone.layer1 "
             "(stride 4), student backbone.layer4 (stride 8) -> teacher backbone.layer4 "
             "(stride 8)")
DET_PAIRS = ("taps='auto' paired student backbone.relu (stride 2) -> teacher backbone.relu "
             "(stride 2), student backbone.layer1 (stride 4) -> teacher backbone.layer1 "
             "(stride 4), student neck.fpn_convs.0 (stride 8) -> teacher neck.fpn_convs.0 "
             "(stride 8), student neck.fpn_convs.1 (stride 16) -> teacher neck.fpn_convs.1 "
             "(stride 16)")


def two_iters(data_root, *keys):
    """--cfg-options of a 2-iteration run with taps='auto' on the test's own data (no
    validation: the pairs are chosen and used by then)."""
    return ['--cfg-options', 'model.distiller.taps=auto', 'train_cfg.max_iters=2',
            'train_cfg.val_interval=100', 'default_hooks.logger.interval=1',
            f'prepare_data.root={data_root}', *(f'{key}={data_root}/' for key in keys)]


def run_log(work_dir) -> str:
    """The mmengine run's own log file (``WORK_DIR/<timestamp>/<timestamp>.log``)."""
    logs = sorted(work_dir.glob('*/*.log'))
    assert logs, f'no run log under {work_dir}'
    return logs[-1].read_text()


def test_segmentation_auto_taps_train_and_the_log_names_the_pairs(tmp_path):
    pytest.importorskip('mmseg')
    from distill.data.mmseg_layout import write_shapes_mmseg
    data_root = tmp_path / 'shapes_seg'
    write_shapes_mmseg(data_root, num_train=8, num_val=4, image_size=64)
    work = tmp_path / 'work'
    out = run_script('tasks/segmentation/train.py', 'configs/segmentation/shapes/adm_online.py',
                     '--work-dir', str(work),
                     *two_iters(data_root, *(f'{split}_dataloader.dataset.data_root'
                                             for split in ('train', 'val', 'test'))))
    assert SEG_PAIRS in out and SEG_PAIRS in run_log(work)
    assert 'Iter(train) [2/2]' in out and 'student.loss_co' in out


def test_detection_auto_taps_train_and_the_log_names_the_pairs(tmp_path):
    pytest.importorskip('mmdet')
    from distill.data.coco_layout import write_shapes_coco
    data_root = tmp_path / 'shapes_coco'
    write_shapes_coco(data_root, num_train=8, num_val=4, image_size=64)
    work = tmp_path / 'work'
    ann = f'{data_root}/annotations/instances_val.json'
    out = run_script('tasks/detection/train.py', 'configs/detection/shapes/adm_online.py',
                     '--work-dir', str(work),
                     *two_iters(data_root, *(f'{split}_dataloader.dataset.data_root'
                                             for split in ('train', 'val', 'test'))),
                     *(f'{split}_evaluator.{i}.metric.ann_file={ann}'
                       for split in ('val', 'test') for i in (0, 1)))
    assert DET_PAIRS in out and DET_PAIRS in run_log(work)
    assert 'Iter(train) [2/2]' in out and 'student.loss_co' in out


def test_classification_auto_taps_train_and_the_log_names_the_pairs(tmp_path):
    pytest.importorskip('accelerate')
    out = run_script('tasks/classification/train.py', 'configs/classification/demo.py',
                     '--work-dir', str(tmp_path), '--cfg-options', 'distiller.taps=auto',
                     'schedule.epochs=1', 'data.train.num_samples=32', 'data.val.num_samples=16',
                     'data.batch_size=16', 'train.progress_bar=False')
    pairs = ("taps='auto' paired student stage2 (stride 2) -> teacher stage2 (stride 2), "
             "student stage3 (stride 4) -> teacher stage3 (stride 4)")
    assert pairs in out and pairs in (tmp_path / 'train.log').read_text()
    assert 'epoch 1/1' in out


def test_diffusion_auto_taps_train_and_the_log_names_the_pairs(tmp_path):
    pytest.importorskip('diffusers')
    out = run_script('tasks/diffusion/train.py', 'configs/diffusion/adm_shapes_tiny.py',
                     '--output_dir', str(tmp_path), '--max_train_steps', '2',
                     '--validation_steps', '0', '--checkpointing_steps', '0', '--cfg-options',
                     'distiller.taps=auto', 'data.num_samples=32', 'data.num_heldout=8',
                     'evaluation.num_images=8', 'evaluation.num_samples=2',
                     'evaluation.num_inference_steps=2', 'num_inference_steps=2')
    pairs = ("taps='auto' paired student up_blocks.0.resnets.1 (stride 2) -> teacher "
             "up_blocks.0.resnets.2 (stride 2)")
    assert pairs in out and pairs in (tmp_path / 'train.log').read_text()
    assert 'step 2 |' in out


def test_a_segmentor_tap_whose_hook_never_fires_is_refused_when_built():
    pytest.importorskip('mmseg')
    with pytest.raises(RuntimeError, match=r"student tap 'decode_head' recorded nothing in a "
                                           r"probe forward .*decode_head"):
        build_from_config('configs/segmentation/shapes/adm_online.py', {
            'model.distiller.taps': [dict(student='decode_head', teacher='decode_head')]})
    # the decode head's own modules do fire, so a tap on one of them is built and used
    model = build_from_config('configs/segmentation/shapes/adm_online.py', {
        'model.distiller.taps': [dict(student='decode_head.bottleneck',
                                      teacher='decode_head.bottleneck')]})
    assert model.distiller.tap_pairs[0]['student_shape'] == (32, 8, 8)
