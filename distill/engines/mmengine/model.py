"""``DistillationModel``: a student, a teacher and a distiller as one mmengine ``BaseModel``.

The mmengine ``Runner`` (and so MMSegmentation / MMDetection users' whole tool chain: hooks,
DDP, AMP, checkpoints, resume) trains it like any segmentor or detector:

    model = dict(
        type='distill.DistillationModel', scope='mmseg',
        student='mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py',
        teacher=dict(type='EncoderDecoder', ...),      # or a local config file path
        teacher_ckpt='work_dirs/teacher/iter_80000.pth',  # offline teacher
        distiller=dict(type='ADM', online=False, taps=[dict(student='backbone.layer4',
                                                          teacher='backbone.layer4')]))

* ``forward(mode='loss')`` returns the distiller's named terms (``student.task``,
  ``student.co``, ``teacher.di``, ...); ``parse_losses`` sums all of them, logs each as
  ``student.loss_task``, ``student.loss_co``, ... (names mmengine averages like ``loss``) and
  stops on a non-finite term.
* ``forward(mode='predict')`` returns the student's predictions; with ``validate_teacher``
  (default: when the teacher trains online) the teacher's are added as ``teacher_pred_*``
  fields, which ``distill.TeacherMetric`` evaluates.
* The data preprocessor is the student's; the adapter converts the batch to the teacher's
  normalisation, so the teacher sees the same augmented images.
"""
from __future__ import annotations

import copy
import os.path as osp
from collections import OrderedDict

import torch
from torch import nn
from mmengine.logging import MessageHub, print_log
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope

from distill import build_distiller
from distill.adapters import build_adapter
from distill.engines.core.guards import check_finite_terms
from distill.config_checks import brings_weights, check_teacher_weights
from distill.engines.mmengine.build import build_mm_model, load_model_cfg
from distill.engines.mmengine.data_files import LabelMapCheck
from distill.engines.mmengine.teacher_metric import TEACHER_FIELD_PREFIX
from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals
from distill.engines.core.optimizers import DEFAULT_ARCH_OPTIMIZER
from distill.registry import MODELS
from distill.taps import describe_auto_taps

DEFAULT_ADAPTERS = dict(mmseg='MMSegAdapter', mmdet='MMDetAdapter')


def adapter_class(adapter_cfg: dict, scope: str):
    """The class an adapter config builds (``build_adapter`` imports its module, so nothing
    has to be imported beforehand); None for an unknown type."""
    from distill.adapters import OPTIONAL_ADAPTERS
    from distill.registry import ADAPTERS
    name = str(adapter_cfg.get('type', DEFAULT_ADAPTERS[scope])).replace('distill.', '')
    if name in OPTIONAL_ADAPTERS:
        __import__(OPTIONAL_ADAPTERS[name])
    return ADAPTERS.get(name)


def loss_log_name(term: str) -> str:
    """The logged name of a distiller term: ``student.task`` -> ``student.loss_task``,
    ``dam.anchor`` -> ``dam.loss_anchor`` (OpenMMLab's ``decode.loss_ce`` style); names that
    already contain 'loss' are kept."""
    if 'loss' in term:
        return term
    owner, dot, name = term.rpartition('.')
    return f'{owner}{dot}loss_{name}'


TASK_FOLDERS = dict(mmseg='segmentation', mmdet='detection')


def check_teacher_ckpt(path: str, trained_by: str | None = None, scope: str = 'mmseg') -> None:
    """Raise a FileNotFoundError that says how to get a missing local teacher checkpoint."""
    if '://' in str(path) or osp.isfile(path):
        return
    if osp.isdir(path):
        raise IsADirectoryError(f'teacher checkpoint {path!r} is a directory, not a checkpoint '
                                f'file: point model.teacher_ckpt at the .pth inside it')
    how = (f'train the teacher first (python tasks/{TASK_FOLDERS.get(scope, scope)}/train.py '
           f'{trained_by} writes it)' if trained_by else 'train the teacher first')
    raise FileNotFoundError(
        f'teacher checkpoint {path!r} not found (looked at {osp.abspath(path)}): {how}, or '
        f'point the config at yours with --cfg-options model.teacher_ckpt=PATH')


def _check_no_detection_kd(distiller) -> None:
    base = getattr(distiller, 'base', distiller)
    if base.loss_weights.get('kd', 0):
        raise ValueError(f'{type(base).__name__} has kd={base.loss_weights["kd"]}, but '
                         f'detectors have no single logits to distil: set '
                         f'distiller loss_weights=dict(kd=0.0) in detection configs')


@MODELS.register_module()
class DistillationModel(BaseModel):
    """Args:
        student, teacher: model config dicts, local config file paths or ``pkg::`` configs.
        distiller: distiller config, e.g. ``dict(type='ADM', taps=[...], online=True)``;
            its ``student``/``teacher``/``adapter`` are filled in here.
        scope: the task package the networks come from: ``'mmseg'`` or ``'mmdet'``.
        adapter: adapter config (type defaults to the task's: MMSegAdapter / MMDetAdapter).
        teacher_ckpt: weights of the teacher (an mmengine checkpoint or a plain state dict; a
            local path or a URL). Loaded by ``init_weights``, which the Runner calls when
            training starts: building the model reads no file and touches no network, and a
            test run takes the teacher from the checkpoint it evaluates.
        random_teacher: True when an offline distiller's frozen teacher is meant to keep its
            random initialisation (no ``teacher_ckpt``); otherwise that is refused at build.
        teacher_map_location: ``map_location`` used to read ``teacher_ckpt``.
        teacher_trained_by: the config that trains the teacher, named in the error raised
            when a local ``teacher_ckpt`` is missing.
        validate_teacher: also predict with the teacher in validation (default: online).
        search_iters: SoKD only: iterations per search "epoch" of its bi-level search (the
            search runs during ``search_epochs * search_iters`` iterations). Default: the
            Runner's epoch (epoch-based loops); iteration-based loops should set it.
        arch_optimizer: SoKD only: the optimiser of its architecture parameters (default
            ``distill.distillers.sokd.ARCH_OPTIMIZER``, as the classification engine's).
    """

    def __init__(self, student, teacher, distiller: dict, scope: str = 'mmseg',
                 adapter: dict | None = None, teacher_ckpt: str | None = None,
                 teacher_map_location: str = 'cpu', teacher_trained_by: str | None = None,
                 validate_teacher: bool | None = None, random_teacher: bool = False,
                 search_iters: int | None = None, arch_optimizer: dict | None = None,
                 data_preprocessor=None, init_cfg=None):
        student_model = build_mm_model(student, scope)
        # a teacher that gets its weights from teacher_ckpt needs no pretrained backbone
        teacher_model = build_mm_model(teacher, scope, drop_pretrained=bool(teacher_ckpt))
        if data_preprocessor is None:
            data_preprocessor = student_model.data_preprocessor
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.scope = scope
        self.teacher_ckpt = teacher_ckpt
        self.teacher_map_location = teacher_map_location
        self.teacher_trained_by = teacher_trained_by

        adapter_cfg = dict(type=DEFAULT_ADAPTERS[scope], **(adapter or {}))
        if scope == 'mmseg' and 'ignore_index' not in adapter_cfg:
            adapter_cfg['ignore_index'] = student_model.decode_head.ignore_index
        with DefaultScope.overwrite_default_scope('distill'):  # not the Runner's mmseg/mmdet
            task_adapter = build_adapter(adapter_cfg)
        task_adapter.convert_inputs.set_reference(self.data_preprocessor)
        task_adapter.convert_inputs.add_model(teacher_model)

        distiller = copy.deepcopy(dict(distiller))
        # a plug-in (SoKD) wraps a base distiller: the networks and adapter go to the base
        target = distiller
        if 'base' in distiller:
            target = distiller['base'] = dict(distiller['base'])
        for key in ('teacher_ckpt', 'random_teacher'):
            if key in target:
                raise ValueError(f'give {key} to the DistillationModel (model.{key}), not to '
                                 f'its distiller')
        target.update(student=student_model, teacher=teacher_model, adapter=task_adapter)
        with DefaultScope.overwrite_default_scope('distill'):
            self.distiller = build_distiller(distiller)
        auto_pairs = getattr(self.distiller, 'auto_tap_pairs', None)
        if auto_pairs:  # in the run's log, not only in a Python logger
            print_log(describe_auto_taps(auto_pairs), logger='current')
        # the distiller saw a built teacher: the rule of an offline teacher's weights is here
        base = getattr(self.distiller, 'base', self.distiller)
        own_weights = isinstance(teacher, nn.Module) or brings_weights(load_model_cfg(teacher),
                                                                       pretrained_key=False)
        check_teacher_weights(f'model ({type(base).__name__})', self.distiller.online,
                              teacher_ckpt, random_teacher, own_weights, prefix='model.')
        if scope == 'mmdet':
            _check_no_detection_kd(self.distiller)
        self.validate_teacher = (self.distiller.online if validate_teacher is None
                                 else validate_teacher)
        # segmentation: label values the student cannot predict, named (data_files.py)
        self.label_maps = LabelMapCheck() if scope == 'mmseg' else None
        self._setup_arch_search(search_iters, arch_optimizer or DEFAULT_ARCH_OPTIMIZER)

    # the networks live in the distiller (state-dict keys ``distiller.student.*``)
    @property
    def student(self):
        return self.distiller.student

    @property
    def teacher(self):
        return self.distiller.teacher

    def init_weights(self):
        """Initialise the student (and its pretrained backbone); the teacher from
        ``teacher_ckpt`` if given, else by its own ``init_weights``. The Runner calls this when
        training starts, before a resumed checkpoint (if any) overwrites both."""
        self.student.init_weights()
        if self.teacher_ckpt:
            self.load_teacher()
        else:
            self.teacher.init_weights()

    def load_teacher(self) -> None:
        """Load ``teacher_ckpt`` (a local file or a URL) into the teacher, after checking it
        key for key and shape for shape (one line naming the file and the keys, not a
        traceback of mmengine's strict load). A checkpoint of a distillation run (student and
        teacher, ``distiller.teacher.*``) gives its teacher's weights when they fit the
        teacher exactly, which the log says; otherwise it is refused, saying so."""
        import re
        from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model
        from distill.checkpoint import (describe_differences, fitting_network,
                                        network_prefixes, state_dict_differences)
        check_teacher_ckpt(self.teacher_ckpt, self.teacher_trained_by, self.scope)
        allow_mmengine_checkpoint_globals()
        checkpoint = _load_checkpoint(self.teacher_ckpt, map_location=self.teacher_map_location)
        state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) \
            else checkpoint
        if not isinstance(state, dict):
            raise ValueError(f'model.teacher_ckpt {self.teacher_ckpt} holds no state dict')
        state = {re.sub(r'^module\.', '', str(k)): v for k, v in state.items()}
        teacher_state = self.teacher.state_dict()
        differences = state_dict_differences(teacher_state, state)
        if any(differences.values()):
            fits = fitting_network(state, teacher_state)
            if fits is not None and fits[0] == 'teacher':
                print_log(f'model.teacher_ckpt {self.teacher_ckpt} is a checkpoint of a '
                          f'distillation run: the teacher is loaded from its {fits[1]}* '
                          f'weights', logger='current')
                state = {k[len(fits[1]):]: v for k, v in state.items() if k.startswith(fits[1])}
            elif network_prefixes(state):
                prefix = network_prefixes(state)['teacher']
                part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                raise ValueError(
                    f'model.teacher_ckpt {self.teacher_ckpt} is a checkpoint of a distillation '
                    f'run (student and teacher), and its teacher ({prefix}*) does not fit '
                    f'model.teacher: ' + describe_differences(
                        'it', state_dict_differences(teacher_state, part), 'model.teacher'))
            else:
                raise ValueError('model.teacher_ckpt ' + describe_differences(
                    self.teacher_ckpt, differences, 'model.teacher'))
        _load_checkpoint_to_model(self.teacher, dict(state_dict=state), strict=True,
                                  logger='current')

    # ------------------------------------------------------------------ SoKD's search
    def _setup_arch_search(self, search_iters, arch_optimizer: dict) -> None:
        """A distiller with architecture parameters (SoKD's DAFA) gets ``self.arch_search``
        (``distill/engines/mmengine/sokd_search.py``): its own optimiser, which the Runner's
        never touches,
        stepped before the training forward, in single- and multi-process runs, its state
        saved in checkpoints and restored by ``--resume``."""
        self.search_iters = search_iters
        self.arch_search = None
        if list(getattr(self.distiller, 'arch_parameters', lambda: [])()):
            from distill.engines.mmengine.sokd_search import ArchSearch
            self.arch_search = ArchSearch(self.distiller, arch_optimizer, search_iters)

    @property
    def arch_optimizer(self):
        return None if self.arch_search is None else self.arch_search.optimizer

    # ------------------------------------------------------------------ forward
    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        if self.label_maps is not None:
            self.label_maps(self.student.decode_head, data_samples, mode)
        if mode == 'loss':
            self._update_progress()
            batch = dict(inputs=inputs, data_samples=data_samples)
            if self.arch_search is not None and self.training:  # SoKD: the policy step first
                self.arch_search.maybe_step(batch)
            return self.distiller(batch)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.student._forward(inputs, data_samples)
        raise RuntimeError(f"invalid mode {mode!r}; expected 'loss', 'predict' or 'tensor'")

    def predict(self, inputs, data_samples):
        teacher_samples = None
        if self.validate_teacher:
            teacher_inputs = self.distiller.adapter.convert_inputs(self.teacher, inputs)
            teacher_samples = self.teacher.predict(teacher_inputs, copy.deepcopy(data_samples))
        results = self.student.predict(inputs, data_samples)
        if teacher_samples is not None:
            for result, teacher_result in zip(results, teacher_samples):
                for name in teacher_result.keys():
                    if name.startswith('pred_'):
                        result.set_field(getattr(teacher_result, name),
                                         TEACHER_FIELD_PREFIX + name)
        return results

    def _update_progress(self) -> None:
        """Fraction of training done, for schedules (ADM's tau), from the Runner's hub."""
        hub = MessageHub.get_current_instance()
        max_iters = hub.get_info('max_iters')
        if max_iters:
            self.distiller.set_progress(hub.get_info('iter', 0) / max_iters)

    def parse_losses(self, losses: dict):
        """Sum every distiller term (all are losses, whatever their name) and log each under
        ``loss_log_name(name)``: mmengine's LogProcessor smooths (averages over its window)
        only keys containing 'loss', so the printed terms then add up to the printed total."""
        hub = MessageHub.get_current_instance()
        # the hub's iter is 0-based; the log line and checkpoint of this iteration say iter + 1
        check_finite_terms(losses, step=hub.get_info('iter', 0) + 1,
                           epoch=hub.get_info('epoch'))
        log_vars = OrderedDict((loss_log_name(name), value.detach().mean())
                               for name, value in losses.items())
        total = sum(value.mean() for value in losses.values())
        log_vars = OrderedDict([('loss', total.detach()), *log_vars.items()])
        if getattr(self, 'arch_search', None) is not None:  # SoKD's arch step, when it ran
            log_vars.update((name, torch.as_tensor(float(value)))
                            for name, value in self.arch_search.pop_stats().items())
        return total, log_vars
