"""Student-only export: a DistillationModel checkpoint -> a plain segmentor / detector
checkpoint plus the student's own config, which ``mmseg.apis.init_model`` /
``mmdet.apis.init_detector`` load as they would any MMSegmentation / MMDetection model."""
from __future__ import annotations

import argparse
import os.path as osp
from collections import OrderedDict

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from distill.checkpoint import save_atomic
from distill.mm.build import load_model_cfg
from distill.mm.safe_load import allow_mmengine_checkpoint_globals

# the student's weights in a DistillationModel state dict: ``distiller.student.*``, or
# ``distiller.base.student.*`` when a plug-in (SoKD) wraps the distiller
STUDENT_PREFIXES = ('distiller.student.', 'distiller.base.student.')
# the config entries a deployed model keeps besides ``model`` (init_model reads test_pipeline
# from test_dataloader; inference tools read default_scope and dataset_meta)
KEPT_CONFIG_KEYS = ('default_scope', 'custom_imports', 'test_dataloader', 'test_pipeline',
                    'test_evaluator', 'val_evaluator', 'env_cfg', 'visualizer', 'vis_backends')


def export_student(checkpoint_path: str, output_path: str, map_location: str = 'cpu') -> dict:
    """Write the student weights of ``checkpoint_path`` (``state_dict`` keys without the
    ``distiller.student.`` prefix, and ``meta`` with ``dataset_meta``) to ``output_path``."""
    allow_mmengine_checkpoint_globals()
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
    save_atomic(dict(state_dict=student_state, meta=meta), output_path)
    print_log(f'wrote the student ({len(student_state)} tensors) to {output_path}',
              logger='current')
    return student_state


def student_config(cfg: Config) -> Config:
    """The student's own config: its model dict and the test-time settings of ``cfg``."""
    model = cfg.model
    if model.get('type') not in ('distill.DistillationModel', 'DistillationModel'):
        raise ValueError(f"{cfg.filename} is not a distillation config (model type "
                         f"{model.get('type')!r})")
    kept = {k: cfg[k] for k in KEPT_CONFIG_KEYS if k in cfg}
    kept.pop('custom_imports', None)  # the student alone needs nothing from distill
    return Config(dict(model=load_model_cfg(model.student), **kept))


def export_main(description: str, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='the distillation config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a DistillationModel checkpoint (iter_N.pth)')
    parser.add_argument('out', help='output checkpoint path (.pth); the student config is '
                                    'written beside it with the extension .py')
    args = parser.parse_args(argv)
    import distill.mm  # noqa: F401
    cfg = Config.fromfile(args.config)
    export_student(args.checkpoint, args.out)
    config_path = osp.splitext(args.out)[0] + '.py'
    student_config(cfg).dump(config_path)
    print_log(f'wrote the student config to {config_path}', logger='current')
    return args.out, config_path
