"""The training entry point shared by ``tasks/segmentation/train.py`` and
``tasks/detection/train.py``: the options and behaviour of MMSegmentation's and MMDetection's
own ``tools/train.py`` (``CONFIG --work-dir --amp --auto-scale-lr --resume [CHECKPOINT]
--cfg-options --launcher --local_rank``), plus:

* ``distill.engines.mmengine`` is imported (and added to ``custom_imports``), so ``distill.*``
  types resolve
  whatever the config's ``default_scope``;
* a config's ``prepare_data`` entry writes the synthetic shapes set if its folder is missing
  and the config's loaders read it;
* ``--cfg-options data_root=DIR`` moves the loaders (and evaluators' ``ann_file``) that read the
  config's own ``data_root`` (``cfg_options.py``);
* mmengine checkpoints resume under torch >= 2.6 with ``weights_only`` on (see safe_load);
* a missing local teacher checkpoint is reported before the Runner starts, with the config
  that trains it;
* before the Runner is built (so before anything is written): unknown keys of the
  ``DistillationModel`` section, of its ``adapter`` and of its ``distiller`` are named with the
  closest valid ones; each local COCO annotation JSON is parsed (a bad one fails naming the
  file and the config key); a fresh run (no ``--resume``) refuses a work dir that holds an
  earlier run (config dump, checkpoints, ``last_checkpoint``) unless ``--overwrite``, which
  deletes them (``distill/engines/mmengine/work_dir.py``);
* a data file the pipeline cannot decode (a corrupt image or label map) ends the run with one
  line naming it (``data_files.py``), not a traceback through the data loader;
* ``distill.FiniteStateHook`` is added to ``custom_hooks``: a checkpoint is only written from
  finite weights, and the iteration where one became NaN/inf is named (``hooks.py``);
* so is ``distill.ResumeHook`` (``resume.py``): checkpoints are written atomically with a
  ``.sha256`` beside them, ``--resume`` takes the newest one that verifies (warning about each
  damaged one it skips), the config's ``lr`` / ``weight_decay`` win over the restored ones, and
  every config key the resume changes is logged (an architecture change refused); the work
  dir's config dump keeps the first run's config (put back after the Runner rewrites it), a
  resume that changes it writing ``<config name>.resumed-at-N.py`` beside it;
* and ``distill.ArchBatchesHook`` (``sokd_search.py``): SoKD's val batches for the arch step.
"""
from __future__ import annotations

import argparse
import logging
import os
import os.path as osp
from pathlib import Path

from mmengine.config import Config
from mmengine.logging import print_log

import distill.engines.mmengine  # noqa: F401  (registers distill.DistillationModel, distill.TeacherMetric)
from distill.checkpoint import write_atomic
from distill.dist import close_process_group
from distill.engines.core.cli_errors import add_debug_option
from distill.engines.core.cli_options import ConfigOptionsAction
from distill.engines.mmengine.cfg_options import merge_cfg_options
from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals


def parse_args(description: str, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR (the config\'s auto_scale_lr)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CHECKPOINT if given, else from the latest checkpoint '
                             'in the work directory')
    parser.add_argument('--overwrite', action='store_true',
                        help='start afresh in a work dir that holds an earlier run, deleting its '
                             'config dump, checkpoints, last_checkpoint and log folders first')
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptionsAction,
                        help='override settings of the config, key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_option(parser)
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        parser.error("--resume continues the work dir's run and --overwrite deletes it: "
                     'give one of them')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def loader_data_roots(cfg) -> set:
    """The ``data_root`` of every data set the config's train/val/test loaders read (through
    dataset wrappers such as ``RepeatDataset``'s ``dataset`` and ``ConcatDataset``'s
    ``datasets``), as absolute paths."""
    roots = set()

    def visit(dataset):
        if isinstance(dataset, dict):
            if dataset.get('data_root'):
                roots.add(osp.abspath(str(dataset['data_root'])))
            visit(dataset.get('dataset'))
            for inner in dataset.get('datasets') or ():
                visit(inner)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        visit((cfg.get(name) or {}).get('dataset'))
    return roots


def prepare_data(cfg) -> None:
    """Write the dataset a config's ``prepare_data`` describes, if its root is missing and the
    config's loaders read it: a config that inherits a shapes config and points its loaders at
    the user's own data writes nothing."""
    spec = cfg.get('prepare_data')
    if not spec:
        return
    spec = dict(spec)
    roots = loader_data_roots(cfg)
    if osp.abspath(str(spec.get('root'))) not in roots:
        print_log(f"prepare_data ({spec.get('type')}, root {spec.get('root')}) skipped: the "
                  f"data loaders read {', '.join(sorted(roots)) or 'no data_root'}",
                  logger='current')
        return
    kind = spec.pop('type')
    from distill.data import coco_layout, mmseg_layout
    writers = dict(shapes_mmseg=mmseg_layout.write_shapes_mmseg,
                   shapes_coco=coco_layout.write_shapes_coco,
                   garments_mmseg=mmseg_layout.write_garments_mmseg,
                   garments_coco=coco_layout.write_garments_coco)
    if kind not in writers:
        raise ValueError(f'unknown prepare_data type {kind!r}: one of {", ".join(writers)}')
    write = writers[kind]
    if not osp.isdir(spec['root']):
        print_log(f"writing the {kind} data set to {spec['root']}", logger='current')
    write(**spec)


def load_config(args) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        check_cfg_options(list(cfg.keys()), args.cfg_options)
        merge_cfg_options(cfg, args.cfg_options)  # data_root=NEW moves the loaders' roots too
    hooks = list(cfg.get('custom_hooks') or [])
    for name in ('FiniteStateHook', 'ResumeHook', 'ArchBatchesHook'):
        if not any(isinstance(h, dict) and str(h.get('type', '')).endswith(name) for h in hooks):
            hooks.append(dict(type=f'distill.{name}'))
    cfg.custom_hooks = hooks
    imports = list(cfg.get('custom_imports', {}).get('imports', []))
    if 'distill.engines.mmengine' not in imports:
        cfg.custom_imports = dict(imports=imports + ['distill.engines.mmengine'],
                                  allow_failed_imports=False)

    # work_dir: command line > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        wrapper = cfg.optim_wrapper.type
        if wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.', logger='current',
                      level=logging.WARNING)
        else:
            assert wrapper == 'OptimWrapper', (
                f'--amp needs optim_wrapper type OptimWrapper, got {wrapper}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        scale = cfg.get('auto_scale_lr') or {}
        if 'enable' not in scale or 'base_batch_size' not in scale:
            raise RuntimeError(f'--auto-scale-lr: {args.config} has no auto_scale_lr with '
                               f'"enable" and "base_batch_size" (e.g. auto_scale_lr = '
                               f'dict(enable=False, base_batch_size=16))')
        cfg.auto_scale_lr.enable = True
    # as MMDetection's tools/train.py: --resume alone = the latest checkpoint of work_dir
    # (MMSegmentation's store_true form), --resume CHECKPOINT = that file
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def check_teacher_checkpoint(cfg) -> None:
    """Before the Runner prints the config and builds everything: a distillation config whose
    local ``teacher_ckpt`` is missing fails with a message saying how to get it."""
    from distill.engines.mmengine.model import check_teacher_ckpt
    model = cfg.get('model') or {}
    path = model.get('teacher_ckpt') if isinstance(model, dict) else None
    if not path:
        return
    check_teacher_ckpt(path, model.get('teacher_trained_by'), model.get('scope', 'mmseg'))


def check_model_keys(cfg) -> None:
    """Unknown keys of a ``distill.DistillationModel`` section, of its ``adapter`` and of its
    ``distiller`` (the distiller's own check, under ``model.distiller``), named with the
    closest valid ones before the Runner is built (mmengine would give a bare TypeError from
    inside it, after creating the work dir)."""
    from distill.config_checks import check_distiller_cfg, check_kwargs
    from distill.engines.mmengine.model import DEFAULT_ADAPTERS, DistillationModel, adapter_class
    model = cfg.get('model')
    if not isinstance(model, dict) or model.get('type') not in ('distill.DistillationModel',
                                                                'DistillationModel'):
        return
    check_kwargs('model', model, DistillationModel)
    scope = model.get('scope', 'mmseg')
    adapter = model.get('adapter') or {}
    if scope in DEFAULT_ADAPTERS and isinstance(adapter, dict):
        found = adapter_class(adapter, scope)
        if found is not None:
            check_kwargs('model.adapter', adapter, found)
    if isinstance(model.get('distiller'), dict):
        check_distiller_cfg(model['distiller'], 'model.distiller')


#: top-level keys the Runner (``Runner.from_cfg``) and these entry points read, besides the
#: ``Runner.__init__`` arguments
RUNNER_EXTRA_KEYS = ('custom_imports', 'runner_type', 'model_wrapper_cfg',
                     'find_unused_parameters', 'compile', 'strategy', 'tta_model',
                     'tta_pipeline', 'prepare_data', 'auto_scale_lr')


def check_cfg_options(file_keys, cfg_options) -> None:
    """A ``--cfg-options`` key must start with a key of the config file or one the Runner
    reads: ``max_iterz=3`` is a typo the Runner would silently ignore."""
    from mmengine.runner import Runner
    from distill.config_checks import accepted_kwargs, check_top_level_keys
    known = [*(accepted_kwargs(Runner.__init__) or ()), *RUNNER_EXTRA_KEYS, *file_keys]
    check_top_level_keys({}, known, cfg_options)


def check_hook_keys(cfg) -> None:
    """The arguments of every hook in ``default_hooks`` and ``custom_hooks`` whose class is
    registered, before the Runner is built: a typo (``default_hooks.checkpoint.intervall``)
    would otherwise surface only when the hook first fires, hundreds of iterations in, with
    nothing saved. ``CheckpointHook``'s ``**kwargs`` go to ``Runner.save_checkpoint``, which
    takes none beyond what the hook passes itself, so its named arguments are the valid ones."""
    import inspect
    from mmengine.registry import HOOKS, DefaultScope
    from distill.config_checks import REGISTRY_KEYS, check_keys, check_kwargs
    hooks = [(f'default_hooks.{name}', hook) for name, hook in
             (cfg.get('default_hooks') or {}).items()]
    hooks += [(f'custom_hooks[{i}]', hook) for i, hook in enumerate(cfg.get('custom_hooks') or [])]
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        for section, hook in hooks:
            if not isinstance(hook, dict) or not isinstance(hook.get('type'), str):
                continue
            hook_class = HOOKS.get(hook['type'])
            if hook_class is None:  # a scope's hook not imported yet: the Runner checks it
                continue
            if hook['type'].split('.')[-1] == 'CheckpointHook':
                params = inspect.signature(hook_class.__init__).parameters.values()
                check_keys(section, [k for k in hook if k not in (*REGISTRY_KEYS, 'priority')],
                           [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD
                            and p.name != 'self'])
            else:
                check_kwargs(section, hook, hook_class, skip=('priority',))


def check_amp_device(cfg) -> None:
    """``AmpOptimWrapper`` (``--amp``) trains on CUDA, NPU, MLU or MUSA only: on a machine with
    none of them, say so before the Runner is built, not after it has written the work dir (whose
    config dump would then refuse the next plain run until ``--overwrite``)."""
    from mmengine.device import get_device
    wrapper = cfg.get('optim_wrapper') or {}
    if isinstance(wrapper, dict) and wrapper.get('type') == 'AmpOptimWrapper' and \
            get_device() == 'cpu':
        raise RuntimeError('--amp (AmpOptimWrapper) needs a GPU (CUDA, NPU, MLU or MUSA) and '
                           'this machine has none: run without --amp')


def setup_cpu_distributed(cfg) -> None:
    """``--launcher pytorch`` without CUDA (CPU, gloo): mmengine 0.10.7's launcher calls
    ``torch.cuda.set_device`` and gives DDP a device id; initialise the process group here
    (the Runner then keeps it) and wrap the model with ``device_ids=None``."""
    import torch
    import torch.distributed as dist
    if cfg.launcher != 'pytorch' or torch.cuda.is_available() or dist.is_initialized():
        return
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'gloo')
    if backend != 'gloo':
        print_log(f'no CUDA: using the gloo backend instead of {backend}', logger='current',
                  level=logging.WARNING)
    dist.init_process_group(backend='gloo', init_method='env://')
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel'))
    wrapper['device_ids'] = None
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper


def earlier_config_dump(work_dir, config_name: str):
    """``(path, bytes)`` of the work dir's config dump before a resumed run's Runner rewrites
    it (None if there is none): put back once the Runner is built, so the dump keeps the config
    of the first run and a resume that changes it writes its own beside it
    (``ResumeHook``)."""
    path = Path(work_dir) / osp.basename(config_name)
    return (path, path.read_bytes()) if path.is_file() else None


def train(description: str, argv=None):
    """Parse the command line, build the Runner and train; returns the Runner. Destroys the
    process group at the end: call it as a program's last step."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    from distill.data.coco_layout import check_annotation_files
    from distill.engines.mmengine.data_files import data_files_named
    from distill.engines.mmengine.work_dir import check_fresh_work_dir, claim_work_dir
    args = parse_args(description, argv)
    cfg = load_config(args)
    fresh = not args.resume
    if fresh and not args.overwrite:
        check_fresh_work_dir(cfg.work_dir, config_name=args.config)  # nothing written before
    check_model_keys(cfg)
    check_hook_keys(cfg)
    check_amp_device(cfg)
    check_teacher_checkpoint(cfg)
    prepare_data(cfg)
    check_annotation_files(cfg)
    claim_work_dir(cfg, args.config, resume=not fresh, overwrite=fresh and args.overwrite,
                   main=int(os.environ.get('RANK', '0')) == 0)  # inputs kept, one run at a time
    if fresh and args.overwrite:  # every check passed: now delete the earlier run (rank 0)
        check_fresh_work_dir(cfg.work_dir, overwrite=True, config_name=args.config,
                             delete=int(os.environ.get('RANK', '0')) == 0)
    setup_cpu_distributed(cfg)
    allow_mmengine_checkpoint_globals()
    main = int(os.environ.get('RANK', '0')) == 0
    earlier = earlier_config_dump(cfg.work_dir, args.config) if not fresh and main else None
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if earlier is not None:  # the Runner rewrote it: the first run's dump stays as it was
        write_atomic(earlier[1], earlier[0])
    with data_files_named():
        runner.train()
    close_process_group()
    return runner
