"""SoKD: Student-Oriented Knowledge Distillation as a plug-in around a base distiller
(README, "SoKD").

    build_distiller(dict(type='SoKD', base=dict(type='FitNet', ...), dafa=dict(...),
                         dam=dict(...)))

The base (FitNet, ADM, KD or DKD) keeps its networks, adapter, taps, connectors and losses.
SoKD changes what the student is taught:

* DAFA refines the teacher feature, ``ft_ref = sum_k softmax(alpha)_k A_k(ft; m_k)`` in the
  search; a training step applies one op drawn from ``softmax(alpha)`` (``dafa=dict(sample=
  True)``, the default: one op's cost instead of all eleven; ``sample=False`` mixes). Feature
  bases (FitNet, ADM's consensus) compare the student with ``ft_ref`` at every tap; logits bases
  (KD, DKD) tap the teacher where its head takes over (``adapter.head``) and distil the refined
  logits ``forward_head(ft_ref)``. ADM's divergence term keeps the raw teacher feature.
* DAM (on the last tap pair, or the head features of a logits base) adds ``student.dam``
  (consistency) and ``dam.anchor`` (anchoring, trains DAM only), and masks a feature base's loss
  per location. Logits losses have no locations, so with a logits base DAM acts through the
  consistency term alone.

``dafa=None`` or ``dam=None`` switches a part off (the ablations are config changes).

SoKD composes the base's public protocol (``Distiller``: ``run_student``/``run_teacher``, the
tap pairs, ``location_distance`` where the base declares a ``feature_term``, ``logits_loss``,
``teacher_feature_terms``, ``output_terms``, ``scale_terms``); it reads nothing private of the
base. DAM's pass is a ``DAMPass`` it owns (``distill/sokd/dam_pass.py``), the bi-level search a
``BiLevelSearch`` (``distill/sokd/search.py``), each reaching the distiller through its public
passes (``run``, ``run_teacher``, ``refine``, ``feature_loss``, ``logits_loss``).

Engine protocol (duck-typed): ``arch_parameters()`` (keep them out of the main optimiser; step
them with their own), ``wants_arch_step(epoch, step_in_epoch)`` (epochs counted from 1, as the
classification engine does), ``arch_backward(train_batch, val_batch)`` (fills their ``.grad``;
a frozen teacher's outputs on ``train_batch`` are kept for the training forward that follows on
the same batch, matched by value: ``distill/sokd/teacher_cache.py``), ``set_progress(p)``,
``policy()`` and ``policy_scalars()`` (for the logs).
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import nn

from distill.adapters.base import NoHeadError
from distill.registry import DISTILLERS
from distill.sokd.dafa import DAFA
from distill.sokd.dam import DAM, masked_mean
from distill.sokd.dam_pass import DAM_DEFAULTS, DAMPass, check_dam_cfg
from distill.sokd.search import BiLevelSearch
from distill.sokd.teacher_cache import TeacherCache
from distill.taps import FeatureTaps

__all__ = ['SoKD', 'ARCH_OPTIMIZER', 'DAM_DEFAULTS']

#: the recommended optimiser of ``arch_parameters()``: Adam, no weight decay (see ``SoKD``);
#: Adam moves each logit by about ``lr`` per arch step: lower it for searches of thousands
ARCH_OPTIMIZER = dict(type='Adam', lr=0.05, betas=(0.5, 0.999), weight_decay=0.0)


class NetworkPass(NamedTuple):
    """One network's run: its ``ModelOutput``, the base's tapped features and the feature
    where its classifier head takes over (None without head taps)."""
    out: object
    feats: dict
    head: torch.Tensor | None


@DISTILLERS.register_module()
class SoKD(nn.Module):
    """Args:
        base: config (or module) of the base distiller.
        total_steps: the training steps of a loop of your own, handed to the base (set there
            already, it must agree), whose warm-up and schedules count them; SoKD has no
            schedule of its own. The engines call ``set_progress`` instead.
        dafa: ``dict(ops=..., init_magnitude=0.2, sample=True)`` or None (off); ``sample``:
            a training step applies one op drawn from the policy (False: the whole mixture).
        dam: ``dict(channels=64, num_classes=1, top_k=8, score_threshold=0.3, beta=0.1,
            mask='mutual'|'teacher'|'student', cam_threshold=0.5, interval=1,
            anchor_interval=1, compile=False)`` or None (off). Cost knobs, counted in training
            steps: ``interval`` k, DAM runs (heads, mask, both terms) in one step of k, the others
            distil with the plain (unmasked) base loss and zero DAM terms;
            ``anchor_interval`` k, the anchoring term (pseudo-boxes, CenterNet targets, focal
            loss: most of DAM's operator calls) in one step of k, ``dam.anchor`` 0 otherwise.
            Outside training (eval mode) DAM always runs in full. DAM's pass costs about half
            the operator calls of a whole FitNet step (resnet8x4 <- resnet32x4, batch 32: 574
            vs 1308, ``benchmarks/sokd_overhead.py``); the classification configs leave it off,
            where it did not help. ``compile=True``: its pass functions through
            ``torch.compile`` (``distill/sokd/dam_compile.py``): 190 calls instead of 574, the
            same values up to float32 rounding, for 20-50 s of compiling per process; off by
            default (README, "SoKD").
        loss_weights: ``dict(dam=1.0, anchor=1.0)`` for ``student.dam`` and ``dam.anchor``.
        arch_interval, search_epochs: an outer step every ``arch_interval`` steps during the
            first ``search_epochs`` epochs (1-based); the policy is frozen afterwards.
        hypergrad: ``'factored'`` (default: the finite difference taken through the distilled
            features only, a few student passes), ``'exact'`` (torch.func, double backward
            through the student) or ``'finite_difference'`` (DARTS); ``xi``: the virtual step
            size (DARTS uses the student's learning rate). ``hypergrad_eps``: the
            ``'factored'`` difference step, relative to the parameters' gradient norm (ReLU
            kinks make its error O(eps): ~1% of the exact hypergradient at 1e-3 on tiny_cnn);
            ``hypergrad_difference``: ``'forward'`` (default, reuses ``f(theta)``) or
            ``'central'`` (one student forward more; the same error across ReLU kinks).

    The optimiser of ``arch_parameters()`` is the engine's (the config's top-level
    ``arch_optimizer``). The hypergradient is small (``xi * l_kd`` times a feature-space inner
    product: 1e-5..1e-4 on the shapes demo), so use Adam, whose step does not depend on that
    scale, with **no weight decay**: an L2 term of 1e-3 on logits ~1 outweighs such a
    gradient and the whole search becomes a drift toward alpha = 0, p = 0 (measured: every
    magnitude moved alike, 0.20 -> 0.21, alpha stayed at uniform). ``ARCH_OPTIMIZER`` is the
    recommended setting.
    """

    def __init__(self, base, dafa: dict | None = dict(), dam: dict | None = dict(),
                 loss_weights: dict | None = None, arch_interval: int = 10,
                 search_epochs: int = 1, hypergrad: str = 'factored', xi: float = 0.05,
                 hypergrad_eps: float = 1e-3, hypergrad_difference: str = 'forward',
                 total_steps: int | None = None):
        super().__init__()
        self.base = self._build_base(base, total_steps)
        if arch_interval < 1:
            raise ValueError(f'arch_interval must be >= 1, got {arch_interval}')
        unknown = set(loss_weights or {}) - {'dam', 'anchor'}
        if unknown:
            raise KeyError(f'SoKD has no loss term(s) {sorted(unknown)}; its own are dam, anchor')
        self.loss_weights = {'dam': 1.0, 'anchor': 1.0, **(loss_weights or {})}
        self.arch_interval, self.search_epochs = arch_interval, search_epochs
        # the bi-level search of DAFA's policy: an object SoKD owns (distill/sokd/search.py)
        self.search = BiLevelSearch(hypergrad, xi, hypergrad_eps, hypergrad_difference)
        # the capability the base declares: a per-location feature loss (FitNet, ADM) or none
        # (KD, DKD: SoKD then refines the teacher's head feature and distils its logits)
        self.feature_base = self.base.feature_term is not None
        if self.base.uses_taps and not self.feature_base:
            raise TypeError(f'{type(self.base).__name__} has taps but no per-location feature '
                            f'loss (feature_term is None); SoKD wraps FitNet, ADM, KD and DKD')
        dafa = None if dafa is None else dict(dafa)
        self.sample_ops = bool(dafa.pop('sample', True)) if dafa is not None else False
        self.dafa = None if dafa is None else DAFA(**dafa)
        self.dam_cfg = check_dam_cfg(dam)
        self.teacher_cache = TeacherCache()
        self._build_head_taps()
        self.dam = None
        if self.dam_cfg is not None:
            s_channels, t_channels = self._dam_channels()
            self.dam = DAM(t_channels, s_channels, self.dam_cfg['channels'],
                           self.dam_cfg['num_classes'])
        # DAM's pass (terms, anchor boxes, mask, schedule): an object SoKD owns; the DAM
        # module itself is registered here, so its parameters are the distiller's
        self.dam_pass = None if self.dam is None else DAMPass(
            self.dam, self.dam_cfg, self.loss_weights, self.adapter, self.teacher,
            cam_linear=getattr(self.teacher_head_spec, 'linear', None))

    # ---------------------------------------------------------------- construction
    @staticmethod
    def _build_base(base, total_steps):
        """The base distiller, given ``total_steps`` when SoKD was: a user's loop gives the
        length of training where it gives SoKD's other settings, and the base is what counts
        the steps (its warm-up, ADM's tau schedule)."""
        if isinstance(base, nn.Module):
            if total_steps is not None:
                raise TypeError(f'SoKD(total_steps={total_steps!r}) goes into the base\'s '
                                f'config, but the base {type(base).__name__} is built already: '
                                f'build it with total_steps={total_steps!r}')
            return base
        cfg = dict(base)
        if total_steps is not None:
            if cfg.get('total_steps', total_steps) != total_steps:
                raise ValueError(f"total_steps is given twice, {total_steps!r} to SoKD and "
                                 f"{cfg['total_steps']!r} in its base: give it once")
            cfg['total_steps'] = total_steps
        return DISTILLERS.build(cfg)

    @property
    def student(self):
        return self.base.student

    @property
    def teacher(self):
        return self.base.teacher

    @property
    def adapter(self):
        return self.base.adapter

    @property
    def online(self):
        return self.base.online

    @property
    def auto_tap_pairs(self):
        return self.base.auto_tap_pairs

    def _build_head_taps(self) -> None:
        """Tap both networks where the classifier head takes over: the refined feature of a
        logits base, and the teacher feature whose CAM gives classification pseudo-boxes."""
        self.head_taps = None
        self.teacher_head_spec = None  # the adapter's account of the teacher's head
        needs_head = not self.feature_base or (self.dam_cfg is not None
                                               and hasattr(self.adapter, 'head'))
        if not needs_head:
            return
        if not hasattr(self.adapter, 'head'):
            raise TypeError(f'a logits base needs an adapter with head(model) (the classifier '
                            f'adapter); {type(self.adapter).__name__} has none')
        student_head, teacher_head = self._head(self.student), self._head(self.teacher)
        self.teacher_head, self.teacher_head_spec = teacher_head.forward, teacher_head
        self.head_taps = (FeatureTaps(self.student, [student_head.path], owner='student'),
                          FeatureTaps(self.teacher, [teacher_head.path], owner='teacher'))
        self.head_shapes = []
        for model, taps in zip((self.student, self.teacher), self.head_taps):
            with taps.recording() as feats:
                self.base.probe_forward(model, self.adapter.probe)
            self.head_shapes.append(tuple(feats[taps.specs[0].key].shape[1:]))

    def _head(self, model):
        """``adapter.head(model)``, checked when SoKD is built; a network that does not say
        where its head takes over is refused saying why SoKD needs it and what to add."""
        try:
            return self.adapter.head(model)
        except NoHeadError as err:
            if self.feature_base:
                why = ("SoKD's DAM takes its classification pseudo-boxes from the feature where "
                       'the classifier head takes over')
                instead = 'or set dam=None'
            else:
                why = (f'SoKD around {type(self.base).__name__} refines the feature where the '
                       f'classifier head takes over and distils the logits of it')
                instead = 'or wrap FitNet or ADM, which need no head'
            raise NoHeadError(f'{why}: {err}; {instead}') from None

    def _dam_channels(self):
        if self.feature_base:
            return self.base.tap_channels(-1)
        return self.head_shapes[0][0], self.head_shapes[1][0]

    # ---------------------------------------------------------------- engine protocol
    def arch_parameters(self) -> list[nn.Parameter]:
        return [] if self.dafa is None else list(self.dafa.parameters())

    def arch_backward(self, train_batch, val_batch) -> dict[str, float]:
        """The search's outer gradient into ``arch_parameters()`` (``BiLevelSearch``)."""
        return self.search.arch_backward(self, train_batch, val_batch)

    def wants_arch_step(self, epoch: int, step_in_epoch: int) -> bool:
        return (self.dafa is not None and epoch <= self.search_epochs
                and step_in_epoch % self.arch_interval == 0)

    def policy(self) -> dict:
        """``{weights, magnitudes, entropy, top}`` of DAFA (see ``DAFA.policy``)."""
        return {} if self.dafa is None else self.dafa.policy()

    def policy_scalars(self) -> dict[str, float]:
        """The policy as flat scalars for TensorBoard: ``policy/entropy``,
        ``policy/weight/<op>``, ``policy/magnitude/<op>``."""
        policy = self.policy()
        if not policy:
            return {}
        scalars = {'policy/entropy': policy['entropy']}
        for key, prefix in (('weights', 'policy/weight/'), ('magnitudes', 'policy/magnitude/')):
            scalars.update({prefix + name: value for name, value in policy[key].items()})
        return scalars

    def probe_forward(self, model, run) -> None:  # config checks probe through the wrapper
        self.base.probe_forward(model, run)

    def set_progress(self, progress: float) -> None:
        self.base.set_progress(progress)

    # ---------------------------------------------------------------- running
    def run(self, batch):
        """``(prepared batch, student pass, teacher pass)``: both networks with the base's
        taps and the head taps; a frozen teacher's outputs come from the arch step's cache
        when it ran on a batch of the same values."""
        batch = self.adapter.prepare(batch)
        student = self.run_student(batch)
        teacher = self.teacher_cache.take(batch) if not self.online else None
        return batch, student, teacher or self.run_teacher(batch)

    def run_student(self, batch, model=None, head: bool = True) -> NetworkPass:
        """The student (or a stand-in ``model`` with other parameters) on a prepared batch;
        ``head=False`` skips the head tap."""
        head_taps = self.head_taps[0] if head and self.head_taps else None
        with (head_taps.recording() if head_taps else contextlib.nullcontext({})) as heads:
            out, feats = self.base.run_student(batch, model)
        return NetworkPass(out, feats, heads.get(head_taps.specs[0].key) if head_taps else None)

    def run_teacher(self, batch) -> NetworkPass:
        head_taps = self.head_taps[1] if self.head_taps else None
        with (head_taps.recording() if head_taps else contextlib.nullcontext({})) as heads:
            out, feats = self.base.run_teacher(batch)
        return NetworkPass(out, feats, heads.get(head_taps.specs[0].key) if head_taps else None)

    def keep_teacher(self, batch, teacher: NetworkPass) -> None:
        """Keep a frozen teacher's pass on the prepared ``batch`` for the next forward."""
        if not self.online:
            self.teacher_cache.keep(batch, teacher)

    def refine(self, feature, generator=None, sample: bool = False):
        """DAFA's mixture of ``feature`` (the search), or one op drawn from the policy."""
        if self.dafa is None:
            return feature
        return self.dafa.sample(feature, generator) if sample else self.dafa(feature, generator)

    def feature_loss(self, aligned, refined, mask, detach_target=True):
        """Sum over taps of the (masked) per-location base loss against refined features."""
        total = 0.0
        for (pair, gs, _), ft_ref in zip(aligned, refined):
            distance = self.base.location_distance(gs, ft_ref, detach_target)
            loss = distance.mean() if mask is None else masked_mean(distance, mask,
                                                                    self.dam_cfg['beta'])
            total = total + pair['weight'] * loss
        return self.base.loss_weights[self.base.feature_term] * total

    def logits_loss(self, student_logits, refined_feat, batch, detach_target=True):
        """The base's weighted logits loss of the student to the refined teacher logits."""
        refined_logits = self.teacher_head(refined_feat)
        return self.base.loss_weights['kd'] * self.base.logits_loss(
            student_logits, refined_logits, batch, detach_target=detach_target)

    def forward(self, batch) -> dict[str, torch.Tensor]:
        batch, student, teacher = self.run(batch)
        base = self.base
        terms = {'student.task': base.loss_weights['task'] * student.out.task_loss}
        if self.online:
            terms['teacher.task'] = base.loss_weights['task'] * teacher.out.task_loss
        distils_logits = bool(base.loss_weights.get('kd', 0))
        if self.feature_base:
            aligned = list(base.aligned_features(student.feats, teacher.feats))
            refined = [self.refine(ft, sample=self.sample_ops) for _, _, ft in aligned]
            mask = None
            if self.dam is not None:
                dam_terms, mask = self.dam_pass.step_terms(
                    self.training, batch, base.student_features(student.feats)[-1], refined[-1],
                    teacher.head)
                terms.update(dam_terms)
            terms[f'student.{base.feature_term}'] = self.feature_loss(aligned, refined, mask)
            terms.update(base.teacher_feature_terms(aligned))  # on the raw teacher feature
            if distils_logits:
                terms.update(base.output_terms(student.out, teacher.out, batch))
        else:
            refined_feat = self.refine(teacher.head, sample=self.sample_ops)
            if self.dam is not None:
                terms.update(self.dam_pass.step_terms(self.training, batch, student.head,
                                                      refined_feat, teacher.head)[0])
            if distils_logits:
                terms['student.kd'] = self.logits_loss(student.out.outputs, refined_feat, batch)
                if self.online:  # the teacher's own mirror term sees the student, not DAFA
                    mirror = base.output_terms(student.out, teacher.out, batch)
                    terms.update({k: v for k, v in mirror.items() if k.startswith('teacher.')})
        # the base's warm-up, as Distiller.forward applies it; DAM's anchoring trains DAM alone
        return base.scale_terms(terms, exempt=('dam.anchor',))

    # ---------------------------------------------------------------- inspection
    @torch.no_grad()
    def dam_predictions(self, batch) -> dict:
        """DAM's decoded boxes (grid cells) and masks of both sides, for ``sokd.viz``."""
        if self.dam is None:
            raise ValueError('DAM is switched off (dam=None)')
        _, student, teacher = self.run(batch)
        if self.feature_base:
            fs = self.base.student_features(student.feats)[-1]
            ft = self.base.teacher_features(teacher.feats)[-1]
        else:
            fs, ft = student.head, teacher.head
        return self.dam_pass.boxes(fs, self.refine(ft))
