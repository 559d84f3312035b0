"""Run a shipped config through its own entry point on stand-in data (``standins.py``).

Each run works in a fresh directory holding the data in the layout and at the relative path the
config names (``data/cityscapes``, ``data/coco``, ``data/cifar-100-python``, ...), and trains
the config through a small wrapper config that inherits it (``_base_ = <shipped config>``) and
changes only sizes, batch sizes and lengths, the way a user adapts a config: the networks, the
method, the hooks and the evaluators stay the shipped config's own.
"""
from __future__ import annotations

from pathlib import Path

from mmengine.config import Config

from mm_helpers import REPO, build_from_config, run_script, save_model_checkpoint, scalars
from standins import (STANDIN_RUN, cache_pretrained_weights, write_cityscapes,
                      write_coco2017)

CONFIGS = REPO / 'configs'


def shipped_configs(task: str) -> list[Path]:
    """Every config file of a task, but the ``_base_`` files they inherit."""
    return sorted(p for p in (CONFIGS / task).rglob('*.py')
                  if '_base_' not in p.parts and p.name != '_base_.py')


def config_id(path: Path) -> str:
    return str(path.relative_to(CONFIGS).with_suffix(''))


def write_wrapper(directory: Path, config: Path, body: str) -> Path:
    """``directory/run_config.py``: ``_base_ = config`` and ``body``."""
    path = directory / 'run_config.py'
    path.write_text(f'_base_ = {str(config)!r}\n{body}')
    return path


def run_entry_point(task: str, config: Path, cwd: Path, *args, env: dict | None = None,
                    timeout: int = 600) -> str:
    """``python tasks/<task>/train.py CONFIG ARGS`` from ``cwd``, torchvision's URL table
    standing in (see ``standins.STANDIN_RUN``); returns the output."""
    script = str(REPO / 'tasks' / task / 'train.py')
    return run_script('-c', STANDIN_RUN, script, str(config), *args, timeout=timeout,
                      cwd=cwd, env=env)


# ------------------------------------------------------------------ MMSeg / MMDet configs
# Cityscapes at a 64x128 crop: mmseg's cityscapes pipeline resizes to 2048x1024 first
CITYSCAPES_SIZES = """
crop_size = (64, 128)
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
                  dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'),
                 dict(type='Resize', scale=(128, 64), keep_ratio=True),
                 dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
model = dict(data_preprocessor=dict(
    type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size))
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
"""
SHAPES_SIZES = """
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
"""
# COCO at 96x128: mmdet's coco pipeline resizes to 1333x800 first; one image per step
COCO_SIZES = """
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                  dict(type='Resize', scale=(128, 96), keep_ratio=True),
                  dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 96),
                                                      keep_ratio=True),
                 dict(type='LoadAnnotations', with_bbox=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                       'img_shape', 'scale_factor'))]
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
"""


def _prepare(config, tmp_path):
    """The data and weights ``config`` reads, in place under ``tmp_path``; returns the wrapper
    config's body and the environment of the run."""
    cfg = Config.fromfile(str(config))
    env = dict(TORCH_HOME=str(tmp_path / 'torch_home'))
    shapes = 'shapes' in config.parts
    if not shapes and isinstance(cfg.get('model'), dict) and 'student' in cfg.model:
        cache_pretrained_weights(env['TORCH_HOME'], cfg)
    if 'segmentation' in config.parts:
        if not shapes:
            write_cityscapes(tmp_path / 'data' / 'cityscapes')
        return (SHAPES_SIZES if shapes else CITYSCAPES_SIZES), env
    if not shapes:
        write_coco2017(tmp_path / 'data' / 'coco')
    return (SHAPES_SIZES if shapes else COCO_SIZES), env


def _teacher_checkpoint_options(config, tmp_path) -> list[str]:
    """The ``--cfg-options`` pointing an offline shapes config's local ``teacher_ckpt`` (the
    teacher config's run) at a stand-in."""
    cfg = Config.fromfile(str(config))
    model = cfg.get('model') or {}
    path = model.get('teacher_ckpt') if isinstance(model, dict) else None
    if not path or '://' in path:
        return []
    return [f'model.teacher_ckpt={tmp_path / "teacher.pth"}']


def run_mm_config(config: Path, tmp_path: Path) -> None:
    """Train a segmentation or detection config two iterations and validate it, through its
    entry point, on stand-ins; check the losses and the evaluation were logged."""
    task = 'segmentation' if 'segmentation' in config.parts else 'detection'
    body, env = _prepare(config, tmp_path)
    options = _teacher_checkpoint_options(config, tmp_path)
    if options:  # an offline shapes config: its teacher's weights, random
        save_model_checkpoint(build_from_config(config.parent / 'teacher.py'),
                              tmp_path / 'teacher.pth')
    wrapper = write_wrapper(tmp_path, config, body)
    output = run_entry_point(task, wrapper, tmp_path, '--work-dir', str(tmp_path / 'work'),
                             *(['--cfg-options', *options] if options else []), env=env)
    records = scalars(tmp_path / 'work')
    assert sum('loss' in r for r in records) == 2, output[-3000:]
    assert 'Epoch(val)' in output or 'Iter(val)' in output, output[-3000:]
    if task == 'segmentation':
        assert any('mIoU' in r for r in records), output[-3000:]
    # a detector of random weights detects nothing (CocoMetric then reports no numbers): its
    # evaluator ran
    assert 'Evaluating bbox' in output or task == 'segmentation', output[-3000:]
