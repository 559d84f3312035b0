"""Student-only export: a DistillationModel checkpoint -> a plain segmentor / detector
checkpoint plus the student's own config, which ``mmseg.apis.init_model`` /
``mmdet.apis.init_detector`` load, and the framework's own ``tools/test.py`` evaluates, as
they would any MMSegmentation / MMDetection model (no import of ``distill``)."""
from __future__ import annotations

import argparse
import copy
import io
import os.path as osp
import re
from collections import OrderedDict

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from distill.engines.core.cli_options import ConfigOptionsAction
from distill.engines.mmengine.build import load_model_cfg
from distill.engines.mmengine.checkpoint_files import (NETWORK_PREFIXES, verify_checkpoint,
                                                    write_checkpoint_bytes)
from distill.engines.mmengine.teacher_metric import plain_metrics, single_or_list
from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals

DISTILL_TYPE = re.compile(r"""['"](distill\.\w+)['"]""")
# the student's weights in a DistillationModel state dict: ``distiller.student.*``, or
# ``distiller.base.student.*`` when a plug-in (SoKD) wraps the distiller
STUDENT_PREFIXES = NETWORK_PREFIXES['student']
# the config entries the student's config keeps besides ``model``: everything the framework's
# own tools/test.py, tools/train.py (to fine-tune the student) and init_model / init_detector
# read (the train, val and test sections complete, default_scope, dataset_meta through the
# datasets, visualiser, hooks)
KEPT_CONFIG_KEYS = ('default_scope', 'custom_imports', 'train_dataloader', 'train_cfg',
                    'train_pipeline', 'optim_wrapper', 'param_scheduler', 'auto_scale_lr',
                    'val_dataloader', 'val_cfg', 'val_evaluator', 'test_dataloader', 'test_cfg',
                    'test_evaluator', 'test_pipeline', 'tta_model', 'tta_pipeline', 'env_cfg',
                    'default_hooks', 'log_processor', 'log_level', 'visualizer', 'vis_backends',
                    'randomness')
# the Runner wants each loop's dataloader, loop config and evaluator (optimiser, for training)
# all present or all absent
LOOP_SECTIONS = dict(train=('train_dataloader', 'train_cfg', 'optim_wrapper'),
                     val=('val_dataloader', 'val_cfg', 'val_evaluator'),
                     test=('test_dataloader', 'test_cfg', 'test_evaluator'))


def export_student(checkpoint_path: str, output_path: str, map_location: str = 'cpu') -> dict:
    """Write the student weights of ``checkpoint_path`` (``state_dict`` keys without the
    ``distiller.student.`` prefix, and ``meta`` with ``dataset_meta``) to ``output_path``, and
    its SHA-256 to ``output_path.sha256``."""
    allow_mmengine_checkpoint_globals()
    if '://' not in str(checkpoint_path):
        verify_checkpoint(checkpoint_path)  # a .sha256 beside it must match (none: unchecked)
    checkpoint = torch.load(checkpoint_path, map_location=map_location, weights_only=True)
    state = checkpoint.get('state_dict', checkpoint)
    prefix = next((p for p in STUDENT_PREFIXES if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        raise KeyError(f'{checkpoint_path} holds no {" or ".join(STUDENT_PREFIXES)}* weights: '
                       f'is it a DistillationModel checkpoint?')
    student_state = OrderedDict((k[len(prefix):], v) for k, v in state.items()
                                if k.startswith(prefix))
    meta = {k: v for k, v in checkpoint.get('meta', {}).items()
            if k in ('dataset_meta', 'epoch', 'iter', 'seed', 'mmengine_version')}
    buffer = io.BytesIO()
    torch.save(dict(state_dict=student_state, meta=meta), buffer)
    # with a .sha256 beside it, as the training checkpoints: test.py and a later export check it
    write_checkpoint_bytes(buffer.getvalue(), output_path)
    print_log(f'wrote the student ({len(student_state)} tensors) to {output_path}',
              logger='current')
    return student_state


def student_config(cfg: Config) -> Config:
    """The student's own config: its model dict and the evaluation settings of ``cfg``, with
    only the framework's metric types (``TeacherMetric`` dropped, ``StudentMetric`` unwrapped)
    and no import of ``distill``: MMSegmentation's / MMDetection's ``tools/test.py``,
    ``init_model`` and ``init_detector`` run it unchanged."""
    model = cfg.model
    if model.get('type') not in ('distill.DistillationModel', 'DistillationModel'):
        raise ValueError(f"{cfg.filename} is not a distillation config (model type "
                         f"{model.get('type')!r})")
    kept = {k: copy.deepcopy(cfg[k]) for k in KEPT_CONFIG_KEYS if cfg.get(k) is not None}
    imports = [name for name in kept.pop('custom_imports', {}).get('imports', [])
               if name != 'distill' and not name.startswith('distill.')]
    if imports:  # the student alone needs nothing from distill; other imports stay
        kept['custom_imports'] = dict(imports=imports, allow_failed_imports=False)
    for section, keys in LOOP_SECTIONS.items():
        evaluator = keys[2]
        if section != 'train' and evaluator in kept:
            kept[evaluator] = single_or_list(plain_metrics(kept[evaluator]))
        if not all(key in kept for key in keys):  # incomplete: the Runner would refuse it
            for key in keys:
                kept.pop(key, None)
    exported = Config(dict(model=load_model_cfg(model.student), **kept))
    leftover = sorted(DISTILL_TYPE.findall(exported.pretty_text))
    if leftover:
        raise ValueError(f'the exported student config still names {leftover}')
    return exported


def export_main(description: str, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='the distillation config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a DistillationModel checkpoint (iter_N.pth)')
    parser.add_argument('out', help='output checkpoint path (.pth); the student config is '
                                    'written beside it with the extension .py')
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptionsAction,
                        help='override settings of the config (data roots, ...) before the '
                             'student config is written, key=value pairs')
    args = parser.parse_args(argv)
    import distill.engines.mmengine  # noqa: F401
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    config = student_config(cfg)  # before writing anything: a config error leaves no file
    export_student(args.checkpoint, args.out)
    config_path = osp.splitext(args.out)[0] + '.py'
    # the framework's tools/train.py on this config fine-tunes the exported student
    config.load_from = args.out
    config.dump(config_path)
    print_log(f'wrote the student config to {config_path}', logger='current')
    return args.out, config_path
