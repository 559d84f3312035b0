"""What differs between the four engines, for a comparison: where the distiller section lives,
how a run is started, seeded and resumed, when it is finished, what its metric is, and where
its teacher ends up for the offline methods.

=============== ============================ ===================== ==========================
framework       entry point                  seed                  metric (student, teacher)
=============== ============================ ===================== ==========================
classification  tasks/classification/train.py --cfg-options         ``metrics.json``: last
                                             train.seed=K          ``val/student/top1``,
                                                                   ``val/teacher/top1``
segmentation    tasks/segmentation/train.py  randomness.seed=K     ``vis_data/scalars.json``:
                                                                   last ``mIoU``,
                                                                   ``teacher/mIoU``
detection       tasks/detection/train.py     randomness.seed=K     last ``coco/bbox_mAP``,
                                                                   ``teacher/bbox_mAP`` (x100)
diffusion       tasks/diffusion/train.py     --seed K              the final record's
                                                                   ``student_denoising_mse``
                                                                   mean (lower is better)
=============== ============================ ===================== ==========================
"""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _plain(value):
    """Config values as plain Python (``ConfigDict`` -> dict), for writing a config file."""
    if hasattr(value, 'to_dict'):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _is_kwargs(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and k.isidentifier()
                                           for k in value)


def _flat(value) -> str:
    if _is_kwargs(value):
        return 'dict(' + ', '.join(f'{k}={_flat(v)}' for k, v in value.items()) + ')'
    if isinstance(value, dict):
        return '{' + ', '.join(f'{k!r}: {_flat(v)}' for k, v in value.items()) + '}'
    if isinstance(value, list):
        return '[' + ', '.join(_flat(v) for v in value) + ']'
    if isinstance(value, tuple):
        return '(' + ', '.join(_flat(v) for v in value) + (',)' if len(value) == 1 else ')')
    return repr(value)


def _literal(value, indent: int = 0, width: int = 96) -> str:
    """``value`` as Python source, ``dict(key=value, ...)`` for dicts of identifier keys, on
    one line where it fits and one item a line where not."""
    value = _plain(value)
    flat = _flat(value)
    if len(flat) + indent <= width:
        return flat
    pad = ' ' * (indent + 4)
    if _is_kwargs(value):
        items = [f'{pad}{k}={_literal(v, indent + 4)}' for k, v in value.items()]
        return 'dict(\n' + ',\n'.join(items) + ')'
    if isinstance(value, (list, tuple)):
        items = [pad + _literal(v, indent + 4) for v in value]
        opening, closing = ('[', ']') if isinstance(value, list) else ('(', ')')
        return opening + '\n' + ',\n'.join(items) + closing
    return flat


class Framework:
    """The classification engine's behaviour; the others override what differs."""

    name = 'classification'
    script = 'tasks/classification/train.py'
    section_path = 'distiller'
    #: (record key, title, unit); which way is better
    student_key, teacher_key = 'val/student/top1', 'val/teacher/top1'
    metric_title, unit, higher_is_better, scale, digits = 'top-1', '%', True, 1.0, 2

    # ------------------------------------------------------------------ the config
    @classmethod
    def user_section(cls, cfg) -> dict:
        node = cfg
        for part in cls.section_path.split('.'):
            if part not in node:
                raise ValueError(f'{cls.name} config without a {cls.section_path} section: '
                                 f'compare derives every method from it')
            node = node[part]
        return _plain(node)

    @classmethod
    def load(cls, path, options: dict | None = None):
        """The config a run of ``path`` with ``--cfg-options options`` trains (not checked)."""
        from mmengine.config import Config
        cfg = Config.fromfile(str(path), import_custom_modules=False)
        if options:
            cfg.merge_from_dict(options)
        return cfg

    @classmethod
    def derived_config(cls, user_config: Path, method: str, doc: str, section: dict,
                       teacher: str | None, cfg) -> str:
        """The text of the config of one method: the user's config as ``_base_`` and the
        method's distiller section in place of the user's."""
        if teacher is not None:
            target = section['base'] if section.get('type') == 'SoKD' else section
            target['teacher_ckpt'] = teacher
        return (cls._header(user_config, method, doc)
                + f"distiller = {_literal(dict(_delete_=True, **section))}\n")

    @staticmethod
    def _header(user_config: Path, method: str, doc: str) -> str:
        return (f'# {method}: {doc}\n# Written by distill.compare: the config below (its '
                f'data, networks, schedule and budget)\n# with the distiller section of the '
                f'method in place of its own.\n_base_ = {str(user_config)!r}\n')

    # ------------------------------------------------------------------ a run
    @classmethod
    def command(cls, config: Path, work_dir: Path, seed: int, options: list[str],
                resume: bool, teacher: str | None) -> list[str]:
        import sys
        return [sys.executable, str(REPO / cls.script), str(config), '--work-dir',
                str(work_dir), '--resume' if resume else '--overwrite', '--cfg-options',
                *options, *cls.seed_options(seed)]

    @classmethod
    def seed_options(cls, seed: int) -> list[str]:
        return [f'train.seed={seed}', 'train.progress_bar=False']

    @classmethod
    def has_checkpoint(cls, work_dir: Path) -> bool:
        return any(p.is_dir() for p in work_dir.glob('checkpoint-*'))

    @classmethod
    def final_record(cls, work_dir: Path, cfg) -> dict | None:
        """``dict(student=..., teacher=...)`` of a finished run, else None."""
        path = work_dir / 'metrics.json'
        if not path.is_file() or not (work_dir / 'student.pth').is_file():
            return None
        try:
            records = json.loads(path.read_text())
        except ValueError:
            return None
        epochs = cfg.get('schedule', {}).get('epochs', 1)
        vals = [r for r in records if cls.student_key in r]
        if not vals or vals[-1].get('epoch') != epochs:
            return None
        teacher = vals[-1].get(cls.teacher_key)
        return dict(student=vals[-1][cls.student_key] * cls.scale,
                    teacher=None if teacher is None else teacher * cls.scale)

    @classmethod
    def export_teacher(cls, work_dir: Path, cfg, target: Path) -> None:
        """Make ``target`` the trained teacher of the finished online run in ``work_dir``, as
        the offline runs read it (here: the run's own ``teacher.pth``)."""
        if not target.is_file():
            raise FileNotFoundError(f'{target} missing: the run did not save its teacher')

    @classmethod
    def prepare(cls, cfg) -> None:
        """Anything to do once before the runs start (mmengine: write a prepare_data set)."""

    @classmethod
    def matches(cls, cfg) -> bool:
        section = cfg.get('distiller')
        if not isinstance(section, dict) or 'noise_scheduler' in cfg:
            return False
        nets = section.get('base') if section.get('type') == 'SoKD' else section
        return isinstance(nets, dict) and 'student' in nets


class MMEngine(Framework):
    scope = ''
    section_path = 'model.distiller'

    @classmethod
    def matches(cls, cfg) -> bool:
        model = cfg.get('model')
        return isinstance(model, dict) and 'distiller' in model and \
            model.get('scope', cfg.get('default_scope')) == cls.scope

    @classmethod
    def derived_config(cls, user_config, method, doc, section, teacher, cfg) -> str:
        from distill.engines.mmengine.teacher_metric import labelled_metrics
        model = dict(distiller=dict(_delete_=True, **section), teacher_ckpt=teacher,
                     validate_teacher=True)
        max_iters = cfg.get('train_cfg', {}).get('max_iters')
        if section.get('type') == 'SoKD' and max_iters and not cfg.model.get('search_iters'):
            # SoKD searches its policy over search_epochs * search_iters iterations: an
            # iteration-based loop has no epoch, so a tenth of the run
            model['search_iters'] = max(1, int(max_iters) // 10)
        text = cls._header(user_config, method, doc) + f'model = {_literal(model)}\n'
        # student and teacher each scored by the config's own metric (the teacher: online,
        # the one trained; offline, the frozen one)
        text += f"val_evaluator = {_literal(labelled_metrics(_plain(cfg.val_evaluator)))}\n"
        return text

    @classmethod
    def command(cls, config, work_dir, seed, options, resume, teacher) -> list[str]:
        import sys
        return [sys.executable, str(REPO / cls.script), str(config), '--work-dir',
                str(work_dir), '--resume' if resume else '--overwrite', '--cfg-options',
                *options, f'randomness.seed={seed}']

    @classmethod
    def has_checkpoint(cls, work_dir: Path) -> bool:
        return any(work_dir.glob('iter_*.pth')) or any(work_dir.glob('epoch_*.pth'))

    @staticmethod
    def last_checkpoint(work_dir: Path, cfg) -> Path:
        train_cfg = cfg.get('train_cfg', {})
        if 'max_epochs' in train_cfg:
            return work_dir / f"epoch_{train_cfg['max_epochs']}.pth"
        return work_dir / f"iter_{train_cfg.get('max_iters', cfg.get('max_iters'))}.pth"

    @classmethod
    def final_record(cls, work_dir: Path, cfg) -> dict | None:
        if not cls.last_checkpoint(work_dir, cfg).is_file():
            return None
        # the newest run folder (a resumed run writes a new one) with a validation record
        for scalars in sorted(work_dir.glob('*/vis_data/scalars.json'), reverse=True):
            records = [json.loads(line) for line in scalars.read_text().splitlines()
                       if line.strip()]
            vals = [r for r in records if cls.student_key in r]
            if vals:
                teacher = vals[-1].get(cls.teacher_key)
                return dict(student=vals[-1][cls.student_key] * cls.scale,
                            teacher=None if teacher is None else teacher * cls.scale)
        return None

    @classmethod
    def export_teacher(cls, work_dir: Path, cfg, target: Path) -> None:
        """The teacher's weights of the run's last checkpoint (``distiller.teacher.*``), as a
        plain state dict in ``target`` (what ``model.teacher_ckpt`` loads)."""
        import torch

        from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals
        source, store = cls.last_checkpoint(work_dir, cfg), target
        if store.is_file() and store.stat().st_mtime >= source.stat().st_mtime:
            return
        allow_mmengine_checkpoint_globals()
        checkpoint = torch.load(source, map_location='cpu', weights_only=False)
        prefix = 'distiller.teacher.'
        state = {k[len(prefix):]: v for k, v in checkpoint['state_dict'].items()
                 if k.startswith(prefix)}
        if not state:
            raise KeyError(f'{source} holds no {prefix}* weights')
        store.parent.mkdir(parents=True, exist_ok=True)
        partial = store.with_suffix('.partial')
        torch.save(dict(state_dict=state, meta=dict(source=str(source))), partial)
        partial.replace(store)

    @classmethod
    def prepare(cls, cfg) -> None:
        from distill.engines.mmengine.launch import prepare_data
        prepare_data(cfg)


class Segmentation(MMEngine):
    name, scope, script = 'segmentation', 'mmseg', 'tasks/segmentation/train.py'
    student_key, teacher_key = 'mIoU', 'teacher/mIoU'
    metric_title, unit = 'mIoU', '%'


class Detection(MMEngine):
    name, scope, script = 'detection', 'mmdet', 'tasks/detection/train.py'
    student_key, teacher_key = 'coco/bbox_mAP', 'teacher/bbox_mAP'
    metric_title, unit, scale = 'bbox mAP', 'x 100', 100.0


class Diffusion(Framework):
    name, script = 'diffusion', 'tasks/diffusion/train.py'
    student_key, teacher_key = 'student_denoising_mse', 'teacher_denoising_mse'
    metric_title, unit, higher_is_better, digits = 'denoising MSE', 'held-out mean', False, 4

    @classmethod
    def matches(cls, cfg) -> bool:
        return 'distiller' in cfg and 'noise_scheduler' in cfg

    @classmethod
    def load(cls, path, options=None):
        from distill.engines.diffusion.config import load_config_file
        return load_config_file(path, options)

    @classmethod
    def derived_config(cls, user_config, method, doc, section, teacher, cfg) -> str:
        # the teacher of an offline run is a flag (--teacher_model_name_or_path)
        return (cls._header(user_config, method, doc)
                + f"distiller = {_literal(dict(_delete_=True, **section))}\n")

    @classmethod
    def command(cls, config, work_dir, seed, options, resume, teacher) -> list[str]:
        import sys
        command = [sys.executable, str(REPO / cls.script), str(config), '--output_dir',
                   str(work_dir), '--seed', str(seed)]
        command += ['--resume_from_checkpoint', 'latest'] if resume else \
            ['--overwrite_output_dir']
        if teacher is not None:
            command += ['--teacher_model_name_or_path', teacher]
        return command + (['--cfg-options', *options] if options else [])

    @classmethod
    def final_record(cls, work_dir: Path, cfg) -> dict | None:
        path = work_dir / 'metrics.json'
        if not path.is_file():
            return None
        try:
            finals = [r for r in json.loads(path.read_text()) if r.get('kind') == 'final']
        except ValueError:
            return None
        if not finals or not isinstance(finals[-1].get(cls.student_key), dict):
            return None
        final = finals[-1]
        teacher = final.get(cls.teacher_key)
        return dict(student=final[cls.student_key]['mean'],
                    teacher=teacher['mean'] if isinstance(teacher, dict) else None)

    @classmethod
    def export_teacher(cls, work_dir: Path, cfg, target: Path) -> None:
        if not target.is_dir():
            raise FileNotFoundError(f'{target} missing: the online run did not save its '
                                    f'teacher')


FRAMEWORKS = {f.name: f for f in (Framework, Segmentation, Detection, Diffusion)}


def detect(cfg) -> type[Framework]:
    """The framework of a loaded config (raises naming what it looked for)."""
    for framework in (Diffusion, Segmentation, Detection, Framework):
        if framework.matches(cfg):
            return framework
    raise ValueError('not a distillation config of tasks/*: compare needs a classification '
                     'config (distiller with student and teacher), a segmentation or detection '
                     'config (model.type=distill.DistillationModel, scope mmseg or mmdet) or a '
                     'diffusion config (distiller and noise_scheduler); give --task to say '
                     'which')
