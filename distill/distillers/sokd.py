"""SoKD: Student-Oriented Knowledge Distillation as a plug-in around a base distiller
(DESIGN 1.2).

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

Engine protocol (duck-typed): ``arch_parameters()`` (keep them out of the main optimiser; step
them with their own), ``wants_arch_step(epoch, step_in_epoch)`` (epochs counted from 1, as the
classification engine does), ``arch_backward(train_batch, val_batch)`` (fills their ``.grad``;
a frozen teacher's outputs on ``train_batch`` are kept for the step that follows on the same
batch, so the teacher runs once), ``policy()`` and ``policy_scalars()`` (for the logs).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from distill.adapters.base import ModelOutput
from distill.connectors import resize_to
from distill.distillers.logits import DKD
from distill.losses.logits import dkd_loss, kd_loss
from distill.registry import DISTILLERS
from distill.sokd.dafa import DAFA
from distill.sokd.dam import (DAM, activation_map, anchoring_loss, boxes_to_mask,
                              centernet_targets, consistency_loss, decode_boxes,
                              largest_component_boxes, masked_mean, scale_boxes)
from distill.sokd.hypergrad import HYPERGRAD_METHODS
from distill.sokd.search import BiLevelSearch
from distill.taps import FeatureTaps

#: the recommended optimiser of ``arch_parameters()``: Adam, no weight decay (see ``SoKD``);
#: Adam moves each logit by about ``lr`` per arch step: lower it for searches of thousands
ARCH_OPTIMIZER = dict(type='Adam', lr=0.05, betas=(0.5, 0.999), weight_decay=0.0)
DAM_DEFAULTS = dict(channels=64, num_classes=1, top_k=8, score_threshold=0.3, beta=0.1,
                    mask='mutual', cam_threshold=0.5, interval=1, anchor_interval=1)


@DISTILLERS.register_module()
class SoKD(BiLevelSearch, nn.Module):
    """Args:
        base: config (or module) of the base distiller.
        dafa: ``dict(ops=..., init_magnitude=0.2, sample=True)`` or None (off); ``sample``:
            a training step applies one op drawn from the policy (False: the whole mixture).
        dam: ``dict(channels=64, num_classes=1, top_k=8, score_threshold=0.3, beta=0.1,
            mask='mutual'|'teacher'|'student', cam_threshold=0.5, interval=1,
            anchor_interval=1)`` or None (off). Cost knobs, counted in training steps:
            ``interval`` k, DAM runs (heads, mask, both terms) in one step of k, the others
            distil with the plain (unmasked) base loss and zero DAM terms;
            ``anchor_interval`` k, the anchoring term (pseudo-boxes, CenterNet targets, focal
            loss: most of DAM's operator calls) in one step of k, ``dam.anchor`` 0 otherwise.
            Outside training (eval mode) DAM always runs in full.
        loss_weights: ``dict(dam=1.0, anchor=1.0)`` for ``student.dam`` and ``dam.anchor``.
        arch_interval, search_epochs: an outer step every ``arch_interval`` steps during the
            first ``search_epochs`` epochs (1-based); the policy is frozen afterwards.
        hypergrad: ``'factored'`` (default: the finite difference taken through the distilled
            features only, a few student passes), ``'exact'`` (torch.func, double backward
            through the student) or ``'finite_difference'`` (DARTS); ``xi``: the virtual step
            size (DARTS uses the student's learning rate). ``hypergrad_eps``: the
            ``'factored'`` difference step, relative to the parameters' gradient norm (ReLU
            kinks make its error O(eps): ~1% of the exact hypergradient at 1e-3 on tiny_cnn).

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
                 hypergrad_eps: float = 1e-3):
        super().__init__()
        self.base = base if isinstance(base, nn.Module) else DISTILLERS.build(dict(base))
        if hypergrad not in HYPERGRAD_METHODS:
            raise ValueError(f'hypergrad must be one of {HYPERGRAD_METHODS}, got {hypergrad!r}')
        if arch_interval < 1:
            raise ValueError(f'arch_interval must be >= 1, got {arch_interval}')
        unknown = set(loss_weights or {}) - {'dam', 'anchor'}
        if unknown:
            raise KeyError(f'SoKD has no loss term(s) {sorted(unknown)}; its own are dam, anchor')
        self.loss_weights = {'dam': 1.0, 'anchor': 1.0, **(loss_weights or {})}
        self.arch_interval, self.search_epochs = arch_interval, search_epochs
        self.hypergrad, self.xi, self.hypergrad_eps = hypergrad, xi, float(hypergrad_eps)
        self.feature_base = bool(self.base.uses_taps)
        if self.feature_base and not hasattr(self.base, 'location_distance'):
            raise TypeError(f'{type(self.base).__name__} has taps but no location_distance(); '
                            f'SoKD wraps FitNet, ADM, KD and DKD')
        dafa = None if dafa is None else dict(dafa)
        self.sample_ops = bool(dafa.pop('sample', True)) if dafa is not None else False
        self.dafa = None if dafa is None else DAFA(**dafa)
        self.dam_cfg = None if dam is None else {**DAM_DEFAULTS, **dam}
        for key in ('interval', 'anchor_interval'):
            if self.dam_cfg and (not isinstance(self.dam_cfg[key], int)
                                 or self.dam_cfg[key] < 1):
                raise ValueError(f"dam {key} must be an int >= 1, got {self.dam_cfg[key]!r}")
        self._dam_step = 0  # training forwards so far, for the DAM intervals
        if self.dam_cfg and self.dam_cfg['mask'] not in ('mutual', 'teacher', 'student'):
            raise ValueError(f"dam mask is 'mutual', 'teacher' or 'student', got "
                             f"{self.dam_cfg['mask']!r}")
        self._build_head_taps()
        self.dam = None
        if self.dam_cfg is not None:
            s_channels, t_channels = self._dam_channels()
            self.dam = DAM(t_channels, s_channels, self.dam_cfg['channels'],
                           self.dam_cfg['num_classes'])

    # ---------------------------------------------------------------- construction
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

    def _build_head_taps(self) -> None:
        """Tap both networks where the classifier head takes over: the refined feature of a
        logits base, and the teacher feature whose CAM gives classification pseudo-boxes."""
        self.head_shapes = None
        needs_head = not self.feature_base or (self.dam_cfg is not None
                                               and hasattr(self.adapter, 'head'))
        if not needs_head:
            return
        if not hasattr(self.adapter, 'head'):
            raise TypeError(f'a logits base needs an adapter with head(model) (the classifier '
                            f'adapter); {type(self.adapter).__name__} has none')
        s_path, _ = self.adapter.head(self.student)
        t_path, self.teacher_head = self.adapter.head(self.teacher)
        self.student_head_taps = FeatureTaps(self.student, [s_path], owner='student')
        self.teacher_head_taps = FeatureTaps(self.teacher, [t_path], owner='teacher')
        self.head_paths = (s_path, t_path)
        shapes = []
        for model, taps in ((self.student, self.student_head_taps),
                            (self.teacher, self.teacher_head_taps)):
            with taps.recording() as feats:
                self.base._probe(model, self.adapter.probe)
            shapes.append(tuple(feats[taps.specs[0].key].shape[1:]))
        self.head_shapes = shapes

    def _dam_channels(self):
        if self.feature_base:
            pair = self.base.tap_pairs[-1]
            return pair['student_shape'][0], pair['teacher_shape'][0]
        return self.head_shapes[0][0], self.head_shapes[1][0]

    # ---------------------------------------------------------------- engine protocol
    def arch_parameters(self) -> list[nn.Parameter]:
        return [] if self.dafa is None else list(self.dafa.parameters())

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

    def _probe(self, model, run) -> None:  # config checks probe through the wrapper
        self.base._probe(model, run)

    def set_progress(self, progress: float) -> None:
        self.base.set_progress(progress)

    # ---------------------------------------------------------------- running
    def _run(self, batch):
        """Both networks with the base's taps and the head taps (as ``Distiller.
        _run_networks``); a frozen teacher's outputs are reused from the arch step on the same
        batch (the engine runs the arch step, then the step, on one batch)."""
        batch = self.adapter.prepare(batch)
        head = self.head_shapes is not None
        s_out, s_feats, s_head = self._run_student(self.student, batch)
        teacher = self._take_teacher_cache(batch)
        if teacher is None:
            teacher = self._run_teacher(batch)
        t_out, t_feats, t_head = teacher
        heads = (s_head.get(self.head_paths[0]), t_head.get(self.head_paths[1])) if head \
            else None
        return batch, s_out, t_out, s_feats, t_feats, heads, teacher

    def _run_student(self, student, batch, head: bool | None = None):
        """``(output, base-tap features, head-tap features)`` of ``student`` (the module or a
        stand-in with other parameters) on a prepared batch."""
        head = self.head_shapes is not None if head is None else head
        with (self.base.student_taps.recording() if self.base.uses_taps
              else contextlib.nullcontext({})) as s_feats, \
                (self.student_head_taps.recording() if head
                 else contextlib.nullcontext({})) as s_head:
            s_out = self.adapter.run(student, batch)
        return s_out, s_feats, s_head

    def _run_teacher(self, batch):
        head = self.head_shapes is not None
        with (contextlib.nullcontext() if self.online else torch.no_grad()), \
                (self.base.teacher_taps.recording() if self.base.uses_taps
                 else contextlib.nullcontext({})) as t_feats, \
                (self.teacher_head_taps.recording() if head
                 else contextlib.nullcontext({})) as t_head:
            t_out = self.adapter.run(self.teacher, batch, compute_loss=self.online)
        return t_out, t_feats, t_head

    @staticmethod
    def _batch_key(batch):
        """What identifies a batch for the teacher cache: the storage, shape, dtype and
        in-place version of its tensors, not the dict object (mmengine and DDP pass the same
        tensors in a rebuilt dict). The cache holds the tensors, so their storage cannot pass
        to another batch while it lives."""
        if not isinstance(batch, dict):
            return None
        key = tuple((name, v.data_ptr(), v.device, tuple(v.shape), v.dtype, v._version)
                    for name, v in batch.items() if torch.is_tensor(v))
        return key or None

    def _keep_teacher_cache(self, batch, teacher) -> None:
        """Remember a frozen teacher's outputs on ``batch`` for the step that follows."""
        self._teacher_cache = None
        key = self._batch_key(batch)
        if not self.online and key is not None and self.adapter.prepare(batch) is batch:
            self._teacher_cache = (key, batch, teacher)

    def _take_teacher_cache(self, batch):
        """The kept teacher outputs if ``batch`` holds the same, unchanged tensors (else
        None: another batch, or one changed in place); the cache serves one step."""
        cache, self._teacher_cache = getattr(self, '_teacher_cache', None), None
        if cache is None or self.online:
            return None
        return cache[2] if self._batch_key(batch) == cache[0] else None

    def _refine(self, feature, generator=None, sample: bool = False):
        """DAFA's mixture of ``feature`` (the search), or one op drawn from the policy."""
        if self.dafa is None:
            return feature
        return self.dafa.sample(feature, generator) if sample else self.dafa(feature, generator)

    def _anchor_boxes(self, batch, grid, teacher_head_feat):
        """``(boxes, labels)`` on the DAM grid: the adapter's boxes (class-agnostic: labels
        None), or the largest component of the teacher's CAM of the true class (one box per
        image, labelled with that class)."""
        boxes = self.adapter.anchor_boxes(batch)
        if boxes is not None:
            return scale_boxes(boxes, self.adapter.input_size(batch), grid), None
        if teacher_head_feat is None:
            raise ValueError(f'{type(self.adapter).__name__} gives no anchor boxes and has no '
                             f'classifier head for CAM pseudo-boxes; switch DAM off (dam=None)')
        fc = getattr(self.teacher, 'fc', None)
        cam = activation_map(teacher_head_feat, self.adapter.labels(batch),
                             fc.weight if isinstance(fc, nn.Linear) else None)
        cam_boxes = largest_component_boxes(cam, self.dam_cfg['cam_threshold'])
        labels = self.adapter.labels(batch)
        return (scale_boxes(cam_boxes[:, None], tuple(cam.shape[-2:]), grid),
                None if labels is None else labels[:, None])

    def _dam_schedule(self) -> tuple[bool, bool]:
        """``(run DAM, compute its anchoring term)`` in this forward (see ``interval``)."""
        if not self.training:
            return True, True
        step, self._dam_step = self._dam_step, self._dam_step + 1
        run = step % self.dam_cfg['interval'] == 0
        return run, run and step % self.dam_cfg['anchor_interval'] == 0

    def _dam_off_terms(self) -> dict[str, torch.Tensor]:
        """Zero DAM terms that still touch every DAM parameter (DDP expects them used)."""
        zero = 0.0 * sum(p.sum() for p in self.dam.parameters())
        return {'student.dam': zero, 'dam.anchor': zero}

    def _dam_pass(self, batch, student_feat, refined_teacher_feat, teacher_head_feat,
                  terms: bool = True, anchor: bool = True):
        """DAM's terms and the decoded mask (B,1,H,W) on the teacher grid (DESIGN 1.2);
        ``terms=False``: the mask alone; ``anchor=False``: ``dam.anchor`` is 0."""
        cfg = self.dam_cfg
        grid = tuple(refined_teacher_feat.shape[-2:])
        teacher_side, student_side = self.dam.both(refined_teacher_feat.detach(),
                                                   resize_to(student_feat, grid))
        if not terms:
            return {}, self.decode_mask(teacher_side, student_side)
        terms = {'student.dam': self.loss_weights['dam'] * consistency_loss(student_side,
                                                                            teacher_side)}
        if anchor:
            boxes, labels = self._anchor_boxes(batch, grid, teacher_head_feat)
            targets = centernet_targets(boxes, labels, cfg['num_classes'], *grid)
            terms['dam.anchor'] = self.loss_weights['anchor'] * anchoring_loss(teacher_side,
                                                                               targets)
        else:  # 0, in the graph of the heads: the term set and DDP's used parameters stay
            terms['dam.anchor'] = 0.0 * teacher_side['heatmap'].sum()
        return terms, self.decode_mask(teacher_side, student_side)

    @torch.no_grad()
    def decode_mask(self, teacher_side: dict, student_side: dict) -> torch.Tensor:
        """Union of the boxes decoded from the chosen side(s); an image where no box passes
        the score threshold keeps its whole map (the plain base loss)."""
        cfg = self.dam_cfg
        sides = dict(mutual=(teacher_side, student_side), teacher=(teacher_side,),
                     student=(student_side,))[cfg['mask']]
        h, w = teacher_side['heatmap'].shape[-2:]
        stacked = {key: torch.cat([side[key] for side in sides]) for key in sides[0]}
        boxes, _, keep = decode_boxes(torch.sigmoid(stacked['heatmap'].float()), stacked['size'],
                                      stacked['offset'], cfg['top_k'], cfg['score_threshold'])
        mask = boxes_to_mask(boxes, keep, h, w)  # the sides stacked along the batch: union
        mask = mask.reshape(len(sides), -1, *mask.shape[1:]).amax(dim=0)
        empty = mask.flatten(1).sum(dim=1).eq(0).reshape(-1, 1, 1, 1)
        return torch.where(empty, torch.ones_like(mask), mask)

    def _feature_loss(self, aligned, refined, mask, detach_target=True):
        """Sum over taps of the (masked) per-location base loss against refined features."""
        total = 0.0
        for (pair, gs, _), ft_ref in zip(aligned, refined):
            distance = self.base.location_distance(gs, ft_ref, detach_target)
            loss = distance.mean() if mask is None else masked_mean(distance, mask,
                                                                    self.dam_cfg['beta'])
            total = total + pair['weight'] * loss
        return self.base.loss_weights[self.base.feature_term] * total

    def _logits_loss(self, student_logits, refined_logits, batch):
        """The base's KD (or DKD) of the refined logits, target kept in the graph."""
        base, temp = self.base, self.base.temperature
        if isinstance(base, DKD):
            loss = dkd_loss(student_logits, refined_logits, self.adapter.labels(batch),
                            base.alpha, base.beta, temp, detach_target=False)
        else:
            loss = kd_loss(student_logits, refined_logits, temp, detach_target=False)
        return base.loss_weights['kd'] * loss

    def forward(self, batch) -> dict[str, torch.Tensor]:
        batch, s_out, t_out, s_feats, t_feats, heads, _ = self._run(batch)
        base = self.base
        terms = {'student.task': base.loss_weights['task'] * s_out.task_loss}
        if self.online:
            terms['teacher.task'] = base.loss_weights['task'] * t_out.task_loss
        if self.feature_base:
            aligned = list(base.aligned_features(s_feats, t_feats))
            refined = [self._refine(ft, sample=self.sample_ops) for _, _, ft in aligned]
            mask = None
            if self.dam is not None:
                run, anchor = self._dam_schedule()
                dam_terms, mask = self._dam_pass(
                    batch, s_feats[base.tap_pairs[-1]['student']], refined[-1],
                    heads and heads[1], anchor=anchor) if run else (self._dam_off_terms(), None)
                terms.update(dam_terms)
            terms[f'student.{base.feature_term}'] = self._feature_loss(aligned, refined, mask)
            if hasattr(base, 'divergence_term'):  # ADM online: raw teacher feature
                terms.update(base.divergence_term(aligned))
            if base.loss_weights.get('kd', 0):
                terms.update(base.output_terms(s_out, t_out, batch))
        else:
            refined_feat = self._refine(heads[1], sample=self.sample_ops)
            if self.dam is not None:
                run, anchor = self._dam_schedule()
                terms.update(self._dam_pass(batch, heads[0], refined_feat, heads[1],
                                            anchor=anchor)[0] if run else self._dam_off_terms())
            if base.loss_weights.get('kd', 0):
                refined_out = ModelOutput(outputs=self.teacher_head(refined_feat))
                student_terms = base.output_terms(s_out, refined_out, batch)
                terms.update({k: v for k, v in student_terms.items() if k.startswith('student.')})
                if self.online:  # the teacher's own mirror term sees the student, not DAFA
                    teacher_terms = base.output_terms(s_out, t_out, batch)
                    terms.update({k: v for k, v in teacher_terms.items()
                                  if k.startswith('teacher.')})
        ramp = base.ramp() if hasattr(base, 'ramp') else 1.0
        if ramp < 1.0:  # the base's warm-up, as Distiller.forward applies it; DAM's anchoring
            # trains DAM alone and is not scaled
            terms = {name: value if name.endswith('.task') or name == 'dam.anchor'
                     else value * ramp for name, value in terms.items()}
        return terms

    # ---------------------------------------------------------------- inspection
    @torch.no_grad()
    def dam_predictions(self, batch) -> dict:
        """DAM's decoded boxes (grid cells) and masks of both sides, for ``sokd.viz``."""
        if self.dam is None:
            raise ValueError('DAM is switched off (dam=None)')
        _, _, _, s_feats, t_feats, heads, _ = self._run(batch)
        if self.feature_base:
            pair = self.base.tap_pairs[-1]
            fs, ft = s_feats[pair['student']], t_feats[pair['teacher']]
        else:
            fs, ft = heads
        ft_ref = self._refine(ft)
        grid = tuple(ft_ref.shape[-2:])
        result = dict(grid=grid)
        for name, side in (('teacher', self.dam(ft_ref, 'teacher')),
                           ('student', self.dam(resize_to(fs, grid), 'student'))):
            boxes, scores, keep = decode_boxes(torch.sigmoid(side['heatmap'].float()),
                                               side['size'], side['offset'],
                                               self.dam_cfg['top_k'],
                                               self.dam_cfg['score_threshold'])
            result[name] = dict(boxes=boxes, scores=scores, keep=keep,
                                mask=boxes_to_mask(boxes, keep, *grid))
        return result
