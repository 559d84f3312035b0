"""DAM's pass inside SoKD (README, "SoKD"): ``DAMPass``, an object the ``SoKD`` distiller owns
(``SoKD.dam_pass``), with the two terms (``student.dam`` consistency, ``dam.anchor``
anchoring), the anchor boxes (the task's, or the teacher's CAM pseudo-box for classification),
the decoded mask that weights the base loss per location, the cost schedule (``dam.interval``,
``dam.anchor_interval``), the compiled pass (``dam.compile``, ``dam_compile.py``) and the boxes
for ``sokd.viz``. The heads and losses themselves are ``distill/sokd/dam.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from distill.connectors import resize_to
from distill.sokd.dam import (boxes_to_mask, centernet_targets, decode_boxes, decode_mask,
                              pass_losses, scale_boxes)
from distill.sokd.dam_compile import compiled
from distill.sokd.dam_targets import cam_boxes, cam_targets

DAM_DEFAULTS = dict(channels=64, num_classes=1, top_k=8, score_threshold=0.3, beta=0.1,
                    mask='mutual', cam_threshold=0.5, interval=1, anchor_interval=1,
                    compile=False)


def check_dam_cfg(dam: dict | None) -> dict | None:
    """DAM's settings with the defaults filled in (None: DAM off)."""
    if dam is None:
        return None
    cfg = {**DAM_DEFAULTS, **dam}
    for key in ('interval', 'anchor_interval'):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f'dam {key} must be an int >= 1, got {cfg[key]!r}')
    if cfg['mask'] not in ('mutual', 'teacher', 'student'):
        raise ValueError(f"dam mask is 'mutual', 'teacher' or 'student', got {cfg['mask']!r}")
    if not isinstance(cfg['compile'], bool):
        raise ValueError(f"dam compile must be True or False, got {cfg['compile']!r}")
    return cfg


def _distributed() -> bool:
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


class DAMPass:
    """DAM's pass: the ``DAM`` module (registered on the distiller, which owns its parameters),
    its settings (``check_dam_cfg``), the distiller's ``loss_weights`` for ``student.dam`` and
    ``dam.anchor``, and the base's ``adapter`` and ``teacher`` (anchor boxes, CAM head). Counts
    the training forwards it has seen, for ``interval`` and ``anchor_interval``.

    ``cam_linear``: the ``nn.Linear`` the teacher's head applies to its pooled feature (the
    adapter finds it, whatever the layer is called); None: the teacher's ``fc``, if it is one.
    """

    def __init__(self, dam, cfg: dict, loss_weights: dict, adapter, teacher,
                 cam_linear: nn.Linear | None = None):
        self.dam, self.cfg, self.loss_weights = dam, cfg, loss_weights
        self.adapter, self.teacher = adapter, teacher
        self.cam_linear = cam_linear
        self.step = 0  # training forwards so far

    def _fn(self, fn):
        """``fn``, or its compiled form under ``dam.compile``."""
        return compiled(fn) if self.cfg['compile'] else fn

    def _cam_inputs(self, batch, teacher_head_feat):
        """``(teacher head feature, labels, fc weight or None)`` for the CAM pseudo-boxes."""
        if teacher_head_feat is None:
            raise ValueError(f'{type(self.adapter).__name__} gives no anchor boxes and has no '
                             f'classifier head for CAM pseudo-boxes; switch DAM off (dam=None)')
        fc = self.cam_linear if self.cam_linear is not None else getattr(self.teacher, 'fc', None)
        return (teacher_head_feat, self.adapter.labels(batch),
                fc.weight if isinstance(fc, nn.Linear) else None)

    def _task_boxes(self, batch, grid):
        """The adapter's boxes (segmentation, detection) on the DAM grid, or None."""
        boxes = self.adapter.anchor_boxes(batch)
        return None if boxes is None else scale_boxes(boxes, self.adapter.input_size(batch), grid)

    def anchor_boxes(self, batch, grid, teacher_head_feat):
        """``(boxes, labels)`` on the DAM grid: the adapter's boxes (class-agnostic: labels
        None), or the largest component of the teacher's CAM of the true class (one box per
        image, labelled with that class)."""
        boxes = self._task_boxes(batch, grid)
        if boxes is not None:
            return boxes, None
        return cam_boxes(*self._cam_inputs(batch, teacher_head_feat), self.cfg['cam_threshold'],
                         grid)

    def anchor_targets(self, batch, grid, teacher_head_feat) -> dict[str, torch.Tensor]:
        """The CenterNet targets of ``anchor_boxes`` on the DAM grid; the CAM's are one
        function (``cam_targets``), compiled whole under ``dam.compile`` (the adapter's boxes,
        a list per image, are not: their number changes from batch to batch)."""
        boxes = self._task_boxes(batch, grid)
        if boxes is not None:
            return centernet_targets(boxes, None, self.cfg['num_classes'], *grid)
        return self._fn(cam_targets)(*self._cam_inputs(batch, teacher_head_feat),
                                     self.cfg['cam_threshold'], grid, self.cfg['num_classes'])

    def schedule(self, training: bool) -> tuple[bool, bool]:
        """``(run DAM, compute its anchoring term)`` in this forward (see ``interval``)."""
        if not training:
            return True, True
        step, self.step = self.step, self.step + 1
        run = step % self.cfg['interval'] == 0
        return run, run and step % self.cfg['anchor_interval'] == 0

    def off_terms(self) -> dict[str, torch.Tensor]:
        """Zero DAM terms for a step without DAM. Under DDP (several processes) they touch
        every DAM parameter, which DDP expects used in every step; in one process they are
        constants, so the step costs nothing for DAM (no graph, no optimiser update of its
        parameters: their gradients stay None)."""
        if _distributed():
            zero = 0.0 * sum(p.sum() for p in self.dam.parameters())
        else:
            zero = self.dam.out.bias.new_zeros(())
        return {'student.dam': zero, 'dam.anchor': zero}

    def step_terms(self, training: bool, batch, student_feat, refined_teacher_feat,
                   teacher_head_feat):
        """A forward's ``(DAM terms, mask or None)``, as the schedule says."""
        run, anchor = self.schedule(training)
        if not run:  # the base loss unmasked in this step
            return self.off_terms(), None
        return self.run(batch, student_feat, refined_teacher_feat, teacher_head_feat,
                        anchor=anchor)

    def run(self, batch, student_feat, refined_teacher_feat, teacher_head_feat,
            terms: bool = True, anchor: bool = True):
        """DAM's terms and the decoded mask (B,1,H,W) on the teacher grid (README, "SoKD");
        ``terms=False``: the mask alone; ``anchor=False``: ``dam.anchor`` is 0."""
        cfg = self.cfg
        grid = tuple(refined_teacher_feat.shape[-2:])
        out = self.dam.run(refined_teacher_feat.detach(), resize_to(student_feat, grid))
        if not terms:
            return {}, self.decode_mask(out)
        targets = self.anchor_targets(batch, grid, teacher_head_feat) if anchor else None
        # both losses and the mask from one sigmoid of the heatmaps (pass_losses)
        consistency, anchoring, prob = self._fn(pass_losses)(out, cfg['num_classes'], targets)
        terms = {'student.dam': self.loss_weights['dam'] * consistency}
        if anchor:
            terms['dam.anchor'] = self.loss_weights['anchor'] * anchoring
        else:  # 0, in the graph of the heads: the term set and DDP's used parameters stay
            terms['dam.anchor'] = 0.0 * out.sum()
        return terms, self.decode_mask(out, prob.detach())

    def decode_mask(self, out: torch.Tensor, prob: torch.Tensor | None = None) -> torch.Tensor:
        """The mask of DAM's fused output of both sides (``DAM.run``: teacher images first):
        the union of the boxes decoded from the chosen side(s) (``dam.mask``); an image where
        no box passes the score threshold keeps its whole map (the plain base loss). ``prob``:
        the heatmaps' sigmoid, when the caller has it."""
        cfg = self.cfg
        if cfg['mask'] != 'mutual':
            half = out.shape[0] // 2
            side = slice(None, half) if cfg['mask'] == 'teacher' else slice(half, None)
            out, prob = out[side], None if prob is None else prob[side]
        return self._fn(decode_mask)(out, cfg['num_classes'],
                                     2 if cfg['mask'] == 'mutual' else 1, cfg['top_k'],
                                     cfg['score_threshold'], heatmap_prob=prob)

    @torch.no_grad()
    def boxes(self, student_feat, refined_teacher_feat) -> dict:
        """DAM's decoded boxes (grid cells), scores and masks of both sides."""
        grid = tuple(refined_teacher_feat.shape[-2:])
        result = dict(grid=grid)
        for name, side in (('teacher', self.dam(refined_teacher_feat, 'teacher')),
                           ('student', self.dam(resize_to(student_feat, grid), 'student'))):
            boxes, scores, keep = decode_boxes(torch.sigmoid(side['heatmap'].float()),
                                               side['size'], side['offset'],
                                               self.cfg['top_k'], self.cfg['score_threshold'])
            result[name] = dict(boxes=boxes, scores=scores, keep=keep,
                                mask=boxes_to_mask(boxes, keep, *grid))
        return result
