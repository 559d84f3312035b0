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
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from distill.checkpoint import check_state_dict
from distill.engines.core.cli_errors import add_debug_option
from distill.engines.core.cli_options import ConfigOptionsAction
from distill.engines.core.targets import check_output, same_file
from distill.engines.mmengine.build import build_mm_model, load_model_cfg
from distill.engines.mmengine.cfg_options import merge_cfg_options
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


def is_exported_student(path) -> bool:
    """``path`` is what ``export_student`` writes: a weights-only file of a ``state_dict``
    (no ``distiller.*`` key) and ``meta``, nothing else (a training checkpoint also holds the
    optimiser, the message hub, ...)."""
    allow_mmengine_checkpoint_globals()
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a torch file, or not a zip one: not ours
        return False
    return (isinstance(checkpoint, dict) and set(checkpoint) <= {'state_dict', 'meta'}
            and isinstance(checkpoint.get('state_dict'), dict)
            and not any(str(k).startswith('distiller.') for k in checkpoint['state_dict']))


def is_exported_config(path, student_path) -> bool:
    """``path`` is the student config ``export_main`` wrote for ``student_path``: a Python
    file whose top-level ``load_from`` names that checkpoint (read, never run)."""
    import ast
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return False
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == 'load_from'
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return same_file(node.value.value, student_path)
    return False


def build_student(config: Config, scope: str):
    """The plain student model of an exported config, built (nothing loaded, nothing
    downloaded), for checking a checkpoint against it."""
    return build_mm_model(config.model, scope, drop_pretrained=True)


def export_student(checkpoint_path: str, output_path: str, map_location: str = 'cpu',
                   model=None, model_name: str = 'the student model') -> dict:
    """Write the student weights of ``checkpoint_path`` (``state_dict`` keys without the
    ``distiller.student.`` prefix, and ``meta`` with ``dataset_meta``) to ``output_path``, and
    its SHA-256 to ``output_path.sha256``. Refused before anything is written: an
    ``output_path`` that is the checkpoint or an existing file other than an exported student
    (``targets.check_output``), and, given the student ``model`` it is for, weights whose keys
    or shapes differ from it (a checkpoint of another task or model, named)."""
    check_output(output_path, {'the checkpoint': checkpoint_path}, 'the student checkpoint',
                 written_by=is_exported_student, kind='a student checkpoint export.py wrote')
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
    if model is not None:
        check_state_dict(checkpoint_path, model.state_dict(), student_state, model_name)
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
    add_debug_option(parser)
    args = parser.parse_args(argv)
    import distill.engines.mmengine  # noqa: F401
    cfg = Config.fromfile(args.config)
    merge_cfg_options(cfg, args.cfg_options)  # data_root=NEW moves the loaders' roots too
    config = student_config(cfg)  # before writing anything: a config error leaves no file
    config_path = osp.splitext(args.out)[0] + '.py'
    if same_file(config_path, args.out):
        raise ValueError(f'out {args.out}: the student config is written beside it with the '
                         f'extension .py, so the checkpoint cannot end in .py (use .pth)')
    check_output(config_path, {'the config being run': args.config,
                               'the checkpoint': args.checkpoint}, 'the student config',
                 written_by=lambda path: is_exported_config(path, args.out),
                 kind='a student config export.py wrote for this checkpoint path')
    student = build_student(config, cfg.model.get('scope', 'mmseg'))
    export_student(args.checkpoint, args.out, model=student,
                   model_name=f'the student model of {args.config}')
    # the framework's tools/train.py on this config fine-tunes the exported student
    config.load_from = args.out
    config.dump(config_path)
    print_log(f'wrote the student config to {config_path}', logger='current')
    return args.out, config_path
