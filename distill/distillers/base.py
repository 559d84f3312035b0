"""The shared skeleton of every distiller: two networks, an adapter, taps and connectors.

``forward(batch)`` runs the student (and the teacher) through the adapter with taps active and
returns a ``dict[str, Tensor]`` of weighted loss terms named ``student.<term>`` and
``teacher.<term>``; the engine sums them and steps. One backward over the sum is enough: each
term's detaches decide which network it updates.

Online (the default of DML and ADM) the teacher trains too and gets its own terms. Offline the
teacher is frozen, kept in eval mode and run under ``no_grad``; only student terms remain.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import NamedTuple

import torch
from torch import nn

from distill.checkpoint import load_model_weights
from distill.config_checks import brings_weights, check_teacher_weights
from distill.connectors import build_connector, check_alignable
from distill.adapters import build_adapter
from distill.losses.logits import kd_loss
from distill.taps import (NOT_CALLED, FeatureTaps, TapSpec, describe_auto_taps,
                          find_auto_taps, probe_strides, tapped)

logger = logging.getLogger('distill.distillers')


def build_network(cfg) -> nn.Module:
    """An ``nn.Module`` as given, or one built from a model config dict."""
    if isinstance(cfg, nn.Module):
        return cfg
    from distill.models import build_model  # the zoo registers itself on import
    return build_model(cfg)


def check_setting(name: str, value, positive: bool = False) -> None:
    """A loss weight, temperature or share: a finite number, >= 0 (> 0 if ``positive``). A
    negative weight would train a network *away* from its target, NaN would poison every step."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        raise ValueError(f'{name} must be a finite number {"> 0" if positive else ">= 0"}, got '
                         f'{value!r}')


def _tap_side(pair: dict, side: str) -> TapSpec:
    spec = pair[side]
    if isinstance(spec, str):
        return TapSpec(spec, pair.get('index'))
    return TapSpec.parse(spec)


class NetworkRun(NamedTuple):
    """One run of both networks: the prepared batch, each network's ``ModelOutput`` and its
    tapped features (``{tap key: tensor}``, empty without taps)."""
    batch: object
    student_out: object
    teacher_out: object
    student_feats: dict
    teacher_feats: dict


class Distiller(nn.Module):
    """Base class. Subclasses add ``feature_terms``; this class does task and logits terms.

    Its public methods are also the protocol a wrapper such as SoKD composes (README, "SoKD"):
    ``run_student``/``run_teacher``/``run_networks`` (the outputs and tapped features of one
    run), ``aligned_features``, ``student_features``, ``teacher_features`` and
    ``tap_channels`` (the tap pairs; ``auto_tap_pairs``: what ``taps='auto'`` chose),
    ``location_distance`` (the per-location feature distance, where ``feature_term`` says the
    base has one), ``teacher_feature_terms``, ``logits_loss``, ``output_terms``, ``ramp`` and
    ``scale_terms``, ``probe_forward``, ``set_progress``.
    """

    default_online = True
    default_loss_weights = dict(task=1.0, kd=1.0)
    uses_taps = False
    #: the student feature term whose per-location form ``location_distance`` gives (its mean
    #: over the locations is one tap's term); None: the base has no per-location feature loss
    feature_term: str | None = None
    #: with taps='auto', the pairs it chose, deepest last: dict(student=PATH, teacher=PATH,
    #: stride=..., teacher_stride=...) each; None when the taps were given (or there are none)
    auto_tap_pairs: list[dict] | None = None

    def __init__(self, student, teacher, adapter=dict(type='ClassifierAdapter'),
                 online: bool | None = None, loss_weights: dict | None = None,
                 temperature: float = 4.0, taps=None, connector='auto',
                 teacher_ckpt: str | None = None, warmup: float = 0.0,
                 teacher_kd: float | None = None, total_steps: int | None = None,
                 task_shares: dict | None = None, random_teacher: bool = False):
        super().__init__()
        # any order: the model builders (UNets too) are the zoo's, not the adapters'
        self.adapter = build_adapter(adapter)
        self.student = build_network(student)
        self.teacher = build_network(teacher)
        if self.student is self.teacher:  # it would be distilled into itself, frozen or not
            raise ValueError(f'student and teacher are the same {type(self.student).__name__} '
                             f'object: give the teacher as a network of its own (another '
                             f'module, e.g. a trained copy, or a model config)')
        self.online = self.default_online if online is None else online
        # an offline teacher without weights would teach at chance level (config_checks)
        check_teacher_weights(type(self).__name__, self.online, teacher_ckpt, random_teacher,
                              brings_weights(teacher))
        unknown = set(loss_weights or {}) - set(self.default_loss_weights)
        if unknown:
            raise KeyError(f'{type(self).__name__} has no loss term(s) {sorted(unknown)}; '
                           f'its terms are {sorted(self.default_loss_weights)}')
        self.loss_weights = {**self.default_loss_weights, **(loss_weights or {})}
        for name, weight in self.loss_weights.items():
            check_setting(f'loss_weights.{name}', weight)
        check_setting('temperature', temperature, positive=True)
        self.task_shares = self._check_task_shares(task_shares)
        self.temperature = temperature
        if not isinstance(warmup, (int, float)) or not 0.0 <= warmup < 1.0:
            raise ValueError(f'warmup is the fraction of training over which the distillation '
                             f'terms ramp up from 0, a number in [0, 1); got {warmup!r}')
        self.warmup = float(warmup)
        if teacher_kd is not None and (isinstance(teacher_kd, bool)
                                       or not isinstance(teacher_kd, (int, float))):
            raise TypeError(f'teacher_kd is a number (the weight of teacher.kd), got '
                            f'{teacher_kd!r}')
        if teacher_kd is not None:
            check_setting('teacher_kd', teacher_kd)
        # online only: the weight of the teacher's KD from the student (None: loss_weights.kd)
        self.teacher_kd = teacher_kd
        if total_steps is not None and (isinstance(total_steps, bool)
                                        or not isinstance(total_steps, int) or total_steps < 1):
            raise ValueError(f'total_steps is the number of training steps (a positive int), '
                             f'got {total_steps!r}')
        # the fraction of training done: set by an engine (set_progress) or, in a loop of the
        # user's own, counted here from the training forwards over total_steps
        self.total_steps = total_steps
        self.progress = 0.0
        self._steps_counted = 0
        self._progress_driven = False
        if teacher_ckpt:
            load_model_weights(self.teacher, teacher_ckpt)
        if not self.online:
            self.teacher.requires_grad_(False)
            self.teacher.eval()

        self.tap_pairs: list[dict] = []
        self.connectors = nn.ModuleList()
        if self.uses_taps:
            self._build_taps(taps, connector)

    # ---------------------------------------------------------------- construction
    def _check_task_shares(self, task_shares) -> dict:
        if task_shares is None:
            return {}
        if not isinstance(task_shares, dict):
            raise TypeError(f'task_shares is a dict of term -> share of its network\'s task '
                            f'loss (e.g. dict(co=0.1, di=0.01)), got {task_shares!r}')
        terms = set(self.default_loss_weights) - {'task'}
        unknown = set(task_shares) - terms
        if unknown:
            raise KeyError(f'task_shares: {type(self).__name__} has no distillation term(s) '
                           f'{sorted(unknown)}; its terms are {sorted(terms)}')
        for name, share in task_shares.items():
            check_setting(f'task_shares.{name}', share)
        return {name: float(share) for name, share in task_shares.items()}

    def probe_forward(self, model: nn.Module, run) -> None:
        """``run(model)`` in eval mode without gradient (shape probes), mode restored."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                run(model)
        finally:
            model.train(was_training)

    def _build_taps(self, taps, connector_cfg) -> None:
        if taps is None:
            raise ValueError(f"{type(self).__name__} needs taps: a list of "
                             f"dict(student=PATH, teacher=PATH) or 'auto'")
        if taps == 'auto':
            size = self.adapter.probe_input_size
            strides = [self._strides(model, size) for model in (self.student, self.teacher)]
            taps = find_auto_taps(*strides)
            # public, and printed by every engine in its run log (README, "taps='auto'")
            self.auto_tap_pairs = [dict(pair) for pair in taps]
            logger.info(describe_auto_taps(self.auto_tap_pairs))
        self.student_taps = FeatureTaps(self.student, [_tap_side(p, 'student') for p in taps],
                                        owner='student')
        self.teacher_taps = FeatureTaps(self.teacher, [_tap_side(p, 'teacher') for p in taps],
                                        owner='teacher')
        # one probe forward of each network gives the tapped shapes, hence the connectors
        shapes = []
        for model, model_taps in ((self.student, self.student_taps),
                                  (self.teacher, self.teacher_taps)):
            with model_taps.recording() as feats:
                self.probe_forward(model, self.adapter.probe)
            shapes.append({key: tuple(feat.shape) for key, feat in feats.items()})
        for pair, s_spec, t_spec in zip(taps, self.student_taps.specs, self.teacher_taps.specs):
            s_shape, t_shape = shapes[0].get(s_spec.key), shapes[1].get(t_spec.key)
            if s_shape is None or t_shape is None:
                missing = s_spec.key if s_shape is None else t_spec.key
                side = 'student' if s_shape is None else 'teacher'
                raise RuntimeError(f'{side} tap {missing!r} recorded nothing in a probe forward '
                                   f'(the forward a training step runs): {NOT_CALLED}')
            if len(s_shape) != 4 or len(t_shape) != 4:
                raise ValueError(f'tap pair {s_spec.key} -> {t_spec.key}: feature distillation '
                                 f'needs (B,C,H,W) maps, got {s_shape} and {t_shape}')
            self.tap_pairs.append(dict(student=s_spec.key, teacher=t_spec.key,
                                       weight=float(pair.get('weight', 1.0)),
                                       student_shape=s_shape[1:], teacher_shape=t_shape[1:]))
            self.connectors.append(build_connector(connector_cfg, s_shape[1], t_shape[1]))

    def _strides(self, model, size):
        was_training = model.training
        model.eval()
        try:
            return probe_strides(model, self.adapter.probe_stages, size)
        finally:
            model.train(was_training)

    # ---------------------------------------------------------------- running
    def train(self, mode: bool = True):
        super().train(mode)
        if not self.online:  # a frozen teacher stays in eval mode (BN statistics, dropout)
            self.teacher.eval()
        return self

    def run_student(self, batch, model=None):
        """``(output, tapped features)`` of the student on a prepared batch; ``model``: a
        stand-in for the student with other parameters (its taps still fire)."""
        model = self.student if model is None else model
        with (self.student_taps.recording() if self.uses_taps
              else contextlib.nullcontext({})) as feats:
            out = self.adapter.run(model, batch)
        return out, feats

    def run_teacher(self, batch):
        """``(output, tapped features)`` of the teacher on a prepared batch (offline: frozen,
        under ``no_grad``, no task loss)."""
        teacher_grad = contextlib.nullcontext() if self.online else torch.no_grad()
        with teacher_grad, (self.teacher_taps.recording() if self.uses_taps
                            else contextlib.nullcontext({})) as feats:
            out = self.adapter.run(self.teacher, batch, compute_loss=self.online)
        return out, feats

    def run_networks(self, batch) -> NetworkRun:
        """Both networks once on ``batch`` (prepared here by the adapter)."""
        batch = self.adapter.prepare(batch)
        student_out, student_feats = self.run_student(batch)
        teacher_out, teacher_feats = self.run_teacher(batch)
        return NetworkRun(batch, student_out, teacher_out, student_feats, teacher_feats)

    def aligned_features(self, student_feats: dict, teacher_feats: dict):
        """Yield ``(tap pair, aligned student feature, teacher feature)`` for every tap."""
        for pair, connector in zip(self.tap_pairs, self.connectors):
            fs = tapped(student_feats, pair['student'], 'student')
            ft = tapped(teacher_feats, pair['teacher'], 'teacher')
            check_alignable(fs, ft, f"{pair['student']} -> {pair['teacher']}")
            yield pair, connector(fs, ft.shape[-2:]), ft

    def student_features(self, student_feats: dict) -> list[torch.Tensor]:
        """The student's raw tapped features, in tap-pair order."""
        return [tapped(student_feats, pair['student'], 'student') for pair in self.tap_pairs]

    def teacher_features(self, teacher_feats: dict) -> list[torch.Tensor]:
        """The teacher's tapped features, in tap-pair order."""
        return [tapped(teacher_feats, pair['teacher'], 'teacher') for pair in self.tap_pairs]

    def tap_channels(self, index: int = -1) -> tuple[int, int]:
        """``(student channels, teacher channels)`` of one tap pair (the last by default)."""
        pair = self.tap_pairs[index]
        return pair['student_shape'][0], pair['teacher_shape'][0]

    def forward(self, batch) -> dict[str, torch.Tensor]:
        batch, student_out, teacher_out, s_feats, t_feats = self.run_networks(batch)
        weights = self.loss_weights
        terms = {'student.task': weights['task'] * student_out.task_loss}
        if self.online:
            terms['teacher.task'] = weights['task'] * teacher_out.task_loss
        if weights.get('kd', 0):
            terms.update(self.output_terms(student_out, teacher_out, batch))
        terms.update(self.feature_terms(s_feats, t_feats, batch))
        return self.scale_terms(terms)

    def scale_terms(self, terms: dict, exempt=()) -> dict[str, torch.Tensor]:
        """The last call of a training forward: ``task_shares`` (``share_of_task``), then
        the warm-up (``apply_warmup``), then the step count."""
        return self.apply_warmup(self.share_of_task(terms), exempt)

    #: the largest factor ``task_shares`` multiplies a term by (its weight at most x100): a
    #: term that nearly vanishes (two networks that agree) is not blown up without bound
    MAX_SHARE_GAIN = 100.0

    def share_of_task(self, terms: dict) -> dict[str, torch.Tensor]:
        """``task_shares=dict(co=0.1)``: ``student.co`` is rescaled to ``0.1 * student.task``
        every step, ``term * share * sg(task) / sg(term)``; the factor carries no gradient, so
        the term's gradient keeps its direction and its size follows the task loss's. The
        factor is capped at ``MAX_SHARE_GAIN``. Terms not named keep their ``loss_weights``;
        a term whose network has no task term (an offline teacher) is left as it is."""
        if not self.task_shares:
            return terms
        out = dict(terms)
        for name, value in terms.items():
            network, _, term = name.partition('.')
            share, task = self.task_shares.get(term), terms.get(f'{network}.task')
            if share is None or task is None or term == 'task':
                continue
            target = share * task.detach()
            floor = (target / self.MAX_SHARE_GAIN).clamp_min(torch.finfo(value.dtype).tiny)
            out[name] = value * (target / torch.maximum(value.detach(), floor))
        return out

    def apply_warmup(self, terms: dict, exempt=()) -> dict[str, torch.Tensor]:
        """During warm-up every term but the task losses (and the names in ``exempt``) is
        scaled by ``ramp()``; it also counts the step (``count_step``)."""
        ramp = self.ramp()
        self.count_step()
        if ramp >= 1.0:
            return terms
        return {name: value if name.endswith('.task') or name in exempt else value * ramp
                for name, value in terms.items()}

    def ramp(self) -> float:
        """The factor of the distillation terms: linear from 0 to 1 over the first ``warmup``
        fraction of training (1 without warm-up). Online, both networks start random: what
        each would learn from the other in the first steps is noise."""
        return 1.0 if self.progress >= self.warmup else self.progress / self.warmup

    def output_terms(self, student_out, teacher_out, batch) -> dict[str, torch.Tensor]:
        """Logits KD to the student; online, the mirror term to the teacher (DML), weighted by
        ``teacher_kd`` (default: ``kd``). Each term is ``output_loss``."""
        w = self.loss_weights['kd']
        terms = {'student.kd': w * self.output_loss(student_out, teacher_out, batch)}
        w_teacher = w if self.teacher_kd is None else self.teacher_kd
        if self.online and w_teacher:
            terms['teacher.kd'] = w_teacher * self.output_loss(teacher_out, student_out, batch)
        return terms

    def output_loss(self, learner_out, target_out, batch) -> torch.Tensor:
        """The (unweighted) output distillation loss of ``learner_out`` toward the detached
        ``target_out``: the task adapter's (KD per sample or per pixel, MSE of predictions)."""
        return self.adapter.output_loss(learner_out, target_out, batch, self.temperature)

    def logits_loss(self, student_logits, target_logits, batch,
                    detach_target: bool = True) -> torch.Tensor:
        """The (unweighted) logits distillation loss of classifier logits: KD at this
        distiller's temperature. ``detach_target=False`` keeps the target's graph."""
        return kd_loss(student_logits, target_logits, self.temperature,
                       detach_target=detach_target)

    def feature_terms(self, student_feats, teacher_feats, batch) -> dict[str, torch.Tensor]:
        return {}

    def location_distance(self, gs, ft, detach_target: bool = True) -> torch.Tensor:
        """Per-location distance (B,H,W) of an aligned student feature ``gs`` to a teacher
        feature ``ft``, whose mean is one tap's ``feature_term`` (before its weights)."""
        raise NotImplementedError(f'{type(self).__name__} has no per-location feature loss '
                                  f'(feature_term is None)')

    def teacher_feature_terms(self, aligned) -> dict[str, torch.Tensor]:
        """The feature terms that train the teacher (ADM's ``teacher.di``) from
        ``(tap pair, gs, ft)`` triples; none by default."""
        return {}

    def progress_uses(self) -> list[str]:
        """What in this distiller depends on how far training is (empty: nothing)."""
        return ([f'warmup={self.warmup:g} ramps its distillation terms up over the first '
                 f'{self.warmup:.0%} of training'] if self.warmup > 0 else [])

    def set_progress(self, progress: float) -> None:
        """The fraction of training done, for the warm-up and schedules. The engines call it
        before every step; from then on the distiller stops counting its own steps. A value
        outside [0, 1] (NaN and inf included) is a caller's bug, refused naming it: it would
        make every ramped term NaN, or be clamped without a word."""
        if not 0.0 <= float(progress) <= 1.0:
            raise ValueError(f'set_progress({progress!r}): the fraction of training done must '
                             f'be a number in [0, 1]')
        self._progress_driven = True
        self.progress = float(progress)

    def count_step(self) -> None:
        """After a training forward that no engine drives: ``progress = forwards counted /
        total_steps``. Without ``total_steps`` a distiller whose terms depend on progress
        fails here, on its first training step, rather than keep its warm-up at 0 for ever."""
        if self._progress_driven or not self.training:
            return
        uses = self.progress_uses()
        if not uses:
            return
        if self.total_steps is None:
            raise RuntimeError(
                f'{type(self).__name__}: {"; ".join(uses)}, so it must know how far training '
                f'is: pass total_steps=N (your number of training steps; the distiller then '
                f'counts its own training forwards), or call distiller.set_progress(step / '
                f'total_steps) before each step (as the engines of tasks/ do)')
        self._steps_counted += 1
        self.progress = min(self._steps_counted / self.total_steps, 1.0)
