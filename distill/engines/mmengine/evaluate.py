"""The test entry point shared by ``tasks/segmentation/test.py`` and
``tasks/detection/test.py``: the options and behaviour of MMSegmentation's and MMDetection's
own ``tools/test.py`` (``CONFIG CHECKPOINT --work-dir --out --show --show-dir --wait-time
--cfg-options --launcher --tta --local_rank``), for

* a distillation config and its checkpoint: student and teacher are both evaluated with the
  config's own test metric, labelled (``mIoU`` / ``coco/bbox_mAP`` for the student,
  ``teacher/mIoU`` / ``teacher/bbox_mAP`` for the teacher); the teacher's weights come from
  the checkpoint (``teacher_ckpt`` is not read);
* a plain config (the student's config written by ``export.py``, or any MMSeg / MMDet config):
  exactly what the framework's ``tools/test.py`` does.
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import os.path as osp
import warnings

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

import distill.engines.mmengine  # noqa: F401  (distill.* types; the weights-only allow-list)
from distill.dist import close_process_group
from distill.engines.core.cli_errors import add_debug_option
from distill.engines.core.cli_options import ConfigOptionsAction
from distill.engines.core.targets import check_output
from distill.engines.mmengine.cfg_options import merge_cfg_options
from distill.engines.mmengine.checkpoint_files import (NETWORK_PREFIXES, check_checkpoint_fits,
                                                       verify_checkpoint)
from distill.engines.mmengine.launch import prepare_data, setup_cpu_distributed
from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals
from distill.engines.mmengine.teacher_metric import TeacherMetric, labelled_metrics

DISTILLATION_TYPES = ('distill.DistillationModel', 'DistillationModel')
VISUALIZATION_HOOKS = dict(mmseg='SegVisualizationHook', mmdet='DetVisualizationHook')


def parse_args(description: str, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='test config file path (a distillation config, or the '
                                       'student config written by export.py)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing '
                                           'evaluation metrics')
    parser.add_argument('--out', type=str,
                        help='segmentation: the directory to save output predictions to; '
                             'detection: a .pkl file to dump predictions to (distillation '
                             'checkpoints: the teacher\'s go to <out>/teacher or '
                             '<out stem>.teacher.pkl)')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images will be saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptionsAction,
                        help='override settings of the config, key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--tta', action='store_true', help='test time augmentation')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_option(parser)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def is_distillation(cfg) -> bool:
    return isinstance(cfg.get('model'), dict) and cfg.model.get('type') in DISTILLATION_TYPES


def add_visualization(cfg, args, scope: str) -> None:
    """As the frameworks' ``trigger_visualization_hook`` (the hook is added when missing)."""
    hooks = cfg.setdefault('default_hooks', ConfigDict())
    if 'visualization' not in hooks:
        hooks['visualization'] = dict(type=VISUALIZATION_HOOKS[scope])
    hook = hooks['visualization']
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if scope == 'mmdet':
            hook['test_out_dir'] = args.show_dir
        else:
            cfg.visualizer['save_dir'] = args.show_dir


def add_tta(cfg, scope: str) -> None:
    """MMSegmentation: the config's ``tta_model``/``tta_pipeline``; MMDetection: those, or its
    tools/test.py defaults (flip TTA, NMS merge)."""
    if scope == 'mmdet':
        if 'tta_model' not in cfg:
            warnings.warn('Cannot find ``tta_model`` in config, we will set it as default.')
            cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        if 'tta_pipeline' not in cfg:
            warnings.warn('Cannot find ``tta_pipeline`` in config, we will set it as default.')
            data = cfg.test_dataloader.dataset
            while 'dataset' in data:
                data = data['dataset']
            cfg.tta_pipeline = copy.deepcopy(data.pipeline)
            cfg.tta_pipeline[-1] = dict(type='TestTimeAug', transforms=[
                [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                [dict(type='PackDetInputs',
                      meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                 'scale_factor', 'flip', 'flip_direction'))]])
    missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
    if missing:
        raise KeyError(f'--tta: the config has no {" and no ".join(missing)}')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def set_seg_output(cfg, out: str, distillation: bool) -> None:
    """``--out`` for MMSegmentation: ``output_dir`` + ``keep_results`` on the IoU metric."""
    if not distillation:
        metrics = cfg.test_evaluator
        for metric in (metrics if isinstance(metrics, (list, tuple)) else [metrics]):
            metric.update(output_dir=out, keep_results=True)
        return
    for entry in cfg.test_evaluator:
        label = 'teacher' if 'Teacher' in entry['type'] else 'student'
        entry['metric'].update(output_dir=osp.join(out, label), keep_results=True)


def load_test_config(args) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    merge_cfg_options(cfg, args.cfg_options)  # data_root=NEW moves the loaders' roots too
    # work_dir: command line > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    scope = cfg.get('default_scope', 'mmseg')
    distillation = is_distillation(cfg)
    if distillation:
        imports = list(cfg.get('custom_imports', {}).get('imports', []))
        if 'distill.engines.mmengine' not in imports:
            cfg.custom_imports = dict(imports=imports + ['distill.engines.mmengine'],
                                      allow_failed_imports=False)
        cfg.model.validate_teacher = True
        cfg.model.teacher_ckpt = None  # the checkpoint under test holds the teacher,
        cfg.model.random_teacher = True  # loaded over the built one (not a random teacher)
        cfg.test_evaluator = labelled_metrics(cfg.test_evaluator)
    if args.show or args.show_dir:
        add_visualization(cfg, args, scope)
    if args.tta:
        if distillation:
            raise ValueError('--tta evaluates a plain model: export the student first '
                             '(export.py) and test student.py with --tta')
        add_tta(cfg, scope)
    if args.out is not None and scope == 'mmseg':
        set_seg_output(cfg, args.out, distillation)
    elif args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out {args.out!r}: the dump file must be a .pkl file')
    return cfg


def check_distillation_weights(path) -> None:
    """A distillation config tests the student and teacher of its checkpoint: one without
    their weights (a plain model's ``iter_N.pth``) would leave both randomly initialised
    (mmengine loads non-strictly), so it is refused, naming the file."""
    import torch
    allow_mmengine_checkpoint_globals()
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    missing = [network for network, prefixes in NETWORK_PREFIXES.items()
               if not any(key.startswith(prefixes) for key in state)]
    if missing:
        raise ValueError(
            f'{path} holds no {" and no ".join(missing)} weights of a distillation model '
            f'(keys {" or ".join(p + "*" for n in missing for p in NETWORK_PREFIXES[n])}): it '
            f'is not a checkpoint of this distillation config. Test a plain model\'s checkpoint '
            f'with its own config (e.g. the student.py that export.py writes)')


def is_pickle_dump(path) -> bool:
    """``path`` looks like what ``DumpDetResults`` writes: a pickle stream (not a zip file,
    a torch checkpoint, a config or text). Read by its first bytes, never unpickled."""
    with open(path, 'rb') as file:
        head = file.read(16)
    legacy_torch = head.startswith(b'\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8')
    return head[:1] == b'\x80' and not legacy_torch


def check_test_outputs(args, cfg) -> None:
    """Neither the Runner's config dump nor ``--out`` replaces an input (the config, the
    checkpoint), nor does a detection dump replace an existing file other than a pickle dump
    (``targets.check_output``)."""
    scope, distillation = cfg.get('default_scope', 'mmseg'), is_distillation(cfg)
    from distill.engines.mmengine.work_dir import check_config_dump
    check_config_dump(cfg.work_dir, args.config)
    if args.out is None:
        return
    inputs = {'the config being run': args.config, 'the checkpoint': args.checkpoint}
    if scope == 'mmseg':  # a folder of predictions (and its student/, teacher/)
        check_output(args.out, inputs, '--out')
        if osp.isfile(args.out):
            raise FileExistsError(f'--out {args.out} is a file; segmentation predictions go '
                                  f'into a folder: nothing was written')
        return
    stem, ext = osp.splitext(args.out)
    for target in [args.out] + [f'{stem}.teacher{ext}'] * distillation:
        check_output(target, inputs, '--out', written_by=is_pickle_dump,
                     kind='a pickle of predictions')


def test(description: str, argv=None) -> dict:
    """Parse the command line, build the Runner and test; returns the metrics. Destroys the
    process group at the end: call it as a program's last step. Nothing is written or reported
    for a checkpoint that does not fit the config's model (``check_checkpoint_fits``) nor into
    an ``--out`` that is an input (``check_test_outputs``)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    args = parse_args(description, argv)
    if '://' not in args.checkpoint:  # a checkpoint with a .sha256 beside it must match it
        if not verify_checkpoint(args.checkpoint):
            print_log(f'{args.checkpoint} has no .sha256 beside it: its integrity is '
                      f'unverified', logger='current', level=logging.WARNING)
    cfg = load_test_config(args)
    check_test_outputs(args, cfg)
    if is_distillation(cfg) and '://' not in args.checkpoint:
        check_distillation_weights(args.checkpoint)
    prepare_data(cfg)
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if '://' not in args.checkpoint:
        check_checkpoint_fits(runner.model, args.checkpoint, args.config)
    if args.out is not None and cfg.get('default_scope') == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
        if is_distillation(cfg):
            stem, ext = osp.splitext(args.out)
            runner.test_evaluator.metrics.append(
                TeacherMetric(DumpDetResults(out_file_path=f'{stem}.teacher{ext}')))
    metrics = runner.test()
    close_process_group()
    return metrics
