"""The MMSeg / MMDet entry points without a Runner run: flags (those of the frameworks'
tools/train.py and tools/test.py), the configs they make, the exported student's config, the
labelled metrics, loss names, the teacher checkpoint check, file modes, the allow-list."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from mm_helpers import REPO

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)

pytest.importorskip('mmseg')
pytest.importorskip('mmdet')

SEG = str(REPO / 'configs/segmentation/shapes/adm_online.py')
DET = str(REPO / 'configs/detection/shapes/adm_online.py')
# every shapes distillation config, and the full-size ones whose evaluator is wrapped (the
# others differ from these only in networks; each mmseg::/mmdet:: config takes ~2.5 s to read)
DISTILLATION_CONFIGS = sorted(
    p for p in glob.glob(str(REPO / 'configs/*/shapes/*.py'))
    if '_base_' not in p and not p.endswith(('teacher.py', 'student.py'))) + [
    str(REPO / 'configs/segmentation' /
        'deeplabv3_r101-r18_adm-online_4xb2-80k_cityscapes-512x1024.py'),
    str(REPO / 'configs/detection/faster-rcnn_r101-r18_adm_fpn_1x_coco.py')]


@pytest.fixture(autouse=True)
def keep_environment(monkeypatch):
    """parse_args sets LOCAL_RANK when absent, as tools/train.py does: undo it after each
    test, or later subprocesses (accelerate launch) would think they are rank 0 of a group."""
    monkeypatch.setenv('LOCAL_RANK', '0')


def train_cfg(*argv):
    from distill.engines.mmengine.launch import load_config, parse_args
    return load_config(parse_args('t', list(argv)))


def test_train_flags_are_those_of_the_frameworks_tools_train():
    cfg = train_cfg(SEG, '--resume')  # MMSegmentation's form, MMDetection's "auto"
    assert cfg.resume is True and cfg.load_from is None
    cfg = train_cfg(SEG, '--resume', 'work/iter_4.pth')  # MMDetection's --resume CHECKPOINT
    assert cfg.resume is True and cfg.load_from == 'work/iter_4.pth'
    cfg = train_cfg(DET, '--amp', '--auto-scale-lr', '--launcher', 'pytorch', '--local_rank',
                    '0', '--work-dir', 'w', '--cfg-options', 'train_cfg.max_iters=3')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.auto_scale_lr.enable is True
    assert cfg.launcher == 'pytorch' and cfg.work_dir == 'w' and cfg.train_cfg.max_iters == 3
    assert 'distill.engines.mmengine' in cfg.custom_imports.imports
    assert train_cfg(SEG).get('resume') is False
    # every shipped config carries auto_scale_lr (as the frameworks' own configs)
    assert train_cfg(SEG, '--auto-scale-lr').auto_scale_lr == dict(enable=True, base_batch_size=8)
    with pytest.raises(RuntimeError, match='auto_scale_lr'):  # a config without one
        train_cfg(SEG, '--auto-scale-lr', '--cfg-options', 'auto_scale_lr=None')


def test_amp_without_a_gpu_is_refused_before_anything_is_written(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU: --amp runs')
    from distill.engines.mmengine.launch import train
    work_dir = tmp_path / 'w'
    with pytest.raises(RuntimeError, match='--amp .* needs a GPU'):
        train('t', [SEG, '--amp', '--work-dir', str(work_dir)])
    assert not work_dir.exists()  # so the next plain run is not refused
    from distill.engines.mmengine.launch import parse_args
    assert parse_args('t', [SEG, '--local-rank', '1']).local_rank == 1
    assert os.environ['LOCAL_RANK'] == '0'  # an existing LOCAL_RANK is kept


def test_flags_of_tools_test_and_the_config_for_a_distillation_checkpoint():
    from distill.engines.mmengine.evaluate import load_test_config, parse_args
    args = parse_args('t', [SEG, 'ckpt.pth', '--work-dir', 'w', '--out', 'preds',
                            '--show-dir', 'shown', '--wait-time', '1', '--launcher', 'none',
                            '--cfg-options', 'test_dataloader.batch_size=2', '--local_rank', '0'])
    cfg = load_test_config(args)
    assert cfg.load_from == 'ckpt.pth' and cfg.work_dir == 'w'
    assert cfg.model.validate_teacher is True and cfg.model.teacher_ckpt is None
    assert [m['type'] for m in cfg.test_evaluator] == ['distill.StudentMetric',
                                                       'distill.TeacherMetric']
    assert [m['metric']['output_dir'] for m in cfg.test_evaluator] == [
        os.path.join('preds', 'student'), os.path.join('preds', 'teacher')]
    assert cfg.default_hooks.visualization.type == 'SegVisualizationHook'
    assert cfg.visualizer.save_dir == 'shown' and cfg.test_dataloader.batch_size == 2
    with pytest.raises(ValueError, match='export the student'):
        load_test_config(parse_args('t', [SEG, 'ckpt.pth', '--tta']))
    with pytest.raises(ValueError, match='dets.json'):  # checked before anything is built
        load_test_config(parse_args('t', [DET, 'c.pth', '--out', 'dets.json']))
    det = load_test_config(parse_args('t', [DET, 'c.pth', '--show-dir', 'shown']))
    assert det.default_hooks.visualization.test_out_dir == 'shown'
    assert len(det.test_evaluator) == 2  # the config's pair, relabelled once, not doubled


@pytest.mark.parametrize('config', DISTILLATION_CONFIGS,
                         ids=lambda p: os.path.relpath(p, REPO / 'configs'))
def test_exported_student_config_is_plain_and_complete(config):
    from mmengine.config import Config
    import distill.engines.mmengine  # noqa: F401
    from distill.engines.mmengine.export import student_config
    source = Config.fromfile(config)
    # what the frameworks' own tools expect of a config: --auto-scale-lr, --show-dir, TensorBoard
    assert source.auto_scale_lr.base_batch_size > 0
    assert 'visualization' in source.default_hooks
    assert 'TensorboardVisBackend' in [b['type'] for b in source.visualizer.vis_backends]
    exported = student_config(source)
    text = exported.pretty_text
    assert 'distill' not in text
    for keys in (('train_dataloader', 'train_cfg', 'optim_wrapper'),  # fine-tunable
                 ('val_dataloader', 'val_cfg', 'val_evaluator'),
                 ('test_dataloader', 'test_cfg', 'test_evaluator')):
        assert all(key in exported for key in keys), keys
    evaluator = exported.test_evaluator
    assert isinstance(evaluator, dict) and evaluator['type'] in ('IoUMetric', 'CocoMetric')
    assert exported.model.type in ('EncoderDecoder', 'RetinaNet', 'FasterRCNN')


def test_plain_metrics_unwraps_and_refuses_unknown_distill_types():
    from distill.engines.mmengine.teacher_metric import labelled_metrics, plain_metrics
    iou = dict(type='IoUMetric', iou_metrics=['mIoU'])
    assert plain_metrics([dict(type='distill.StudentMetric', metric=iou),
                          dict(type='distill.TeacherMetric', metric=iou)]) == [iou]
    assert len(labelled_metrics(iou)) == 2
    with pytest.raises(ValueError, match='distill.Other'):
        plain_metrics([dict(type='distill.Other')])


def test_labelled_metrics_keep_student_keys_and_prefix_the_teacher():
    import torch
    from mmengine.evaluator import Evaluator
    import distill.engines.mmengine  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    iou = dict(type='IoUMetric', iou_metrics=['mIoU'])
    with DefaultScope.overwrite_default_scope('mmseg'):
        evaluator = Evaluator([dict(type='distill.StudentMetric', metric=iou),
                               dict(type='distill.TeacherMetric', metric=iou)])
    evaluator.dataset_meta = dict(classes=('a', 'b'))
    label = torch.tensor([[[0, 1], [1, 1]]])
    sample = dict(gt_sem_seg=dict(data=label), pred_sem_seg=dict(data=label),
                  teacher_pred_sem_seg=dict(data=torch.zeros_like(label)))
    evaluator.process([sample], dict(inputs=None))
    result = evaluator.evaluate(1)
    assert result['mIoU'] == 100.0 and result['teacher/mIoU'] < 100.0
    assert result['student/mIoU'] == result['mIoU']  # labelled too, beside teacher/


def test_loss_log_names_contain_loss():
    from distill.engines.mmengine.model import loss_log_name
    assert loss_log_name('student.task') == 'student.loss_task'
    assert loss_log_name('dam.anchor') == 'dam.loss_anchor'
    assert loss_log_name('arch.val_loss') == 'arch.val_loss'
    assert loss_log_name('kd') == 'loss_kd'


def test_missing_teacher_checkpoint_message(tmp_path):
    from distill.engines.mmengine.model import check_teacher_ckpt
    with pytest.raises(FileNotFoundError, match=r'tasks/detection/train\.py configs/x\.py'):
        check_teacher_ckpt(str(tmp_path / 'nope.pth'), 'configs/x.py', 'mmdet')
    check_teacher_ckpt('https://example.com/teacher.pth')  # URLs: read when training starts
    # building an offline config touches no file and no network
    from mm_helpers import build_from_config
    model = build_from_config(REPO / 'configs/segmentation/shapes/adm_offline.py',
                              {'model.teacher_ckpt': str(tmp_path / 'nope.pth')})
    with pytest.raises(FileNotFoundError, match='shapes/teacher.py'):
        model.init_weights()


def test_saved_files_get_the_umask(tmp_path):
    from distill.checkpoint import save_atomic
    old = os.umask(0o027)
    try:
        path = save_atomic({'x': 1}, tmp_path / 'a.pth')
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o640


def test_import_distill_mm_allows_runner_checkpoints(tmp_path):
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(np.float64(2.0))
    torch.save(dict(message_hub=dict(log_scalars={'loss': buffer}),
                    meta=dict(seed=np.int64(1))), tmp_path / 'ckpt.pth')
    code = ('import torch, sys, distill.engines.mmengine; '
            'c = torch.load(sys.argv[1], weights_only=True); '
            'print(c["message_hub"]["log_scalars"]["loss"].current())')
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'ckpt.pth')],
                         capture_output=True, text=True, cwd=REPO, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1'))
    assert out.returncode == 0 and out.stdout.strip() == '2.0', out.stderr[-2000:]


def test_url_teacher_is_read_when_training_starts_not_at_build(monkeypatch):
    """The Cityscapes offline config names its teacher by URL: building it must not download
    (no network), ``init_weights`` (the Runner's train start) loads it."""
    import mmengine.runner.checkpoint as checkpoint
    from mm_helpers import build_from_config

    def no_network(*args, **kwargs):
        raise AssertionError('the network was touched while building')
    monkeypatch.setattr(checkpoint, 'load_from_http', no_network)
    config = 'deeplabv3_r101-r18_adm-offline_4xb2-80k_cityscapes-512x1024.py'
    model = build_from_config(REPO / 'configs/segmentation' / config)
    assert model.teacher_ckpt.startswith('https://')
    calls = []

    def read(path, **kwargs):  # the URL's file, as if downloaded: the teacher's own weights
        calls.append(path)
        return dict(state_dict=model.teacher.state_dict())
    monkeypatch.setattr(checkpoint, '_load_checkpoint', read)
    monkeypatch.setattr(model.student, 'init_weights', lambda: None)  # its ImageNet backbone
    model.init_weights()
    assert calls == [model.teacher_ckpt]


def test_layering_adapters_import_no_engine_and_the_model_no_other_engine():
    """distill/adapters import no engine; the mmengine model loads no classification or
    diffusion engine module (the shared guards only); no engine file over ~400 lines."""
    import ast
    import subprocess
    import sys
    for path in sorted((REPO / 'distill' / 'adapters').glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith('distill.engines') for n in names), (path, names)
    loaded = subprocess.run(
        [sys.executable, '-c', 'import sys, distill.engines.mmengine.model, '
         'distill.engines.mmengine.launch; print(" ".join(sys.modules))'],
        cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    other_engines = [m for m in loaded if m.startswith(('distill.engines.classification.train',
                                                        'distill.engines.diffusion.train',
                                                        'distill.engines.core.trainer'))]
    assert not other_engines and 'distill.engines.core.guards' in loaded, other_engines
    for path in (REPO / 'distill' / 'engines' / 'mmengine').glob('*.py'):
        assert len(path.read_text().splitlines()) <= 400, path


def test_sections_inherited_from_framework_bases_pass_the_key_checks():
    """mmengine adds ``_scope_`` to every section a config inherits from an ``mmseg::`` /
    ``mmdet::`` base file: a registry key, never a hook's or a model's argument; a typo beside
    it is still named."""
    from distill.config_checks import ConfigError
    from distill.engines.mmengine.launch import check_hook_keys, check_model_keys
    config = str(REPO / 'configs/segmentation'
                 / 'deeplabv3_r101-r18_adm-online_4xb2-80k_cityscapes-512x1024.py')
    cfg = train_cfg(config)
    assert cfg.default_hooks.timer.get('_scope_') == 'mmseg'
    check_hook_keys(cfg)
    cfg.model['_scope_'] = 'mmseg'
    check_model_keys(cfg)
    cfg = train_cfg(config, '--cfg-options', 'default_hooks.checkpoint.intervall=2')
    with pytest.raises(ConfigError, match=r'default_hooks\.checkpoint\.intervall; did you mean '
                                          r'default_hooks\.checkpoint\.interval'):
        check_hook_keys(cfg)
