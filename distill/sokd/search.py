"""SoKD's bi-level search of the DAFA policy (README, "SoKD"): ``BiLevelSearch``, an object
the ``SoKD`` distiller owns (``SoKD.search``), with the hypergradient settings, ``arch_backward``
and the two ways it builds the hypergradient's pieces from the distiller (the generic
``train_loss``/``val_loss`` closures of the exact and finite-difference methods, and the
features/coupling of the default ``'factored'`` one). It reaches the distiller through SoKD's
public passes (``run``, ``run_teacher``, ``keep_teacher``, ``refine``, ``feature_loss``,
``logits_loss``) and its ``base``, ``adapter``, ``dam_pass`` and ``teacher_cache``; see
``distill/sokd/hypergrad.py`` for the maths.
"""
from __future__ import annotations

import torch

from distill.sokd.hypergrad import (HYPERGRAD_METHODS, factored_hypergradient,
                                    preserved_buffers, unrolled_hypergradient)


class BiLevelSearch:
    """The outer step of SoKD's search (see ``SoKD`` for the arguments ``hypergrad``, ``xi``,
    ``hypergrad_eps``, ``hypergrad_difference``); checks them when built."""

    def __init__(self, hypergrad: str = 'factored', xi: float = 0.05,
                 hypergrad_eps: float = 1e-3, hypergrad_difference: str = 'forward'):
        if hypergrad not in HYPERGRAD_METHODS:
            raise ValueError(f'hypergrad must be one of {HYPERGRAD_METHODS}, got {hypergrad!r}')
        if hypergrad_difference not in ('forward', 'central'):
            raise ValueError(f"hypergrad_difference must be 'forward' or 'central', got "
                             f"{hypergrad_difference!r}")
        self.hypergrad, self.xi, self.hypergrad_eps = hypergrad, xi, float(hypergrad_eps)
        self.hypergrad_difference = hypergrad_difference

    def arch_backward(self, sokd, train_batch, val_batch) -> dict[str, float]:
        """Hypergradient of the student's task loss on ``val_batch`` after one virtual step
        on ``L_train = task + l_kd * masked base loss(refined teacher)`` of ``train_batch``,
        stored in the ``.grad`` of ``sokd.arch_parameters()``. No optimiser step; every buffer
        (BN statistics) and parameter is left as it was."""
        arch = sokd.arch_parameters()
        if not arch:
            return {}
        with preserved_buffers(sokd):  # a module in eval mode (a frozen teacher) is skipped
            if self.hypergrad == 'factored':
                hyper, train_value, val_value = factored_hypergradient(
                    sokd.student, *self._factored_parts(sokd, train_batch, val_batch), arch,
                    self.xi, eps_scale=self.hypergrad_eps, difference=self.hypergrad_difference)
            else:
                train_loss, val_loss = self._search_losses(sokd, train_batch, val_batch)
                hyper, train_value, val_value = unrolled_hypergradient(
                    sokd.student, train_loss, val_loss, arch, self.xi, self.hypergrad)
        for param, grad in zip(arch, hyper):
            param.grad = grad.detach().to(param.dtype)
        flat = torch.cat([g.reshape(-1) for g in hyper]).double()
        norm = float(torch.linalg.vector_norm(flat))
        return {'arch.train_loss': train_value, 'arch.val_loss': val_value,
                'arch.grad_norm': norm}

    def _search_losses(self, sokd, train_batch, val_batch):
        """``(train_loss(student), val_loss(student))`` closures for the hypergradient; the
        teacher's features and DAM's mask are computed once, without gradient."""
        base, adapter = sokd.base, sokd.adapter
        with torch.no_grad():
            batch, student, teacher = sokd.run(train_batch)
            sokd.keep_teacher(batch, teacher)
            seed = int(torch.randint(0, 2 ** 62, ()))
            mask = None
            if sokd.feature_base:
                teacher_feats = [ft.detach() for ft in base.teacher_features(teacher.feats)]
                if sokd.dam is not None:  # the mask of the refined feature L_train sees
                    generator = torch.Generator(device=teacher_feats[0].device)
                    refined = [sokd.refine(ft, generator.manual_seed(seed)) if i == 0 else
                               sokd.refine(ft, generator) for i, ft in enumerate(teacher_feats)]
                    _, mask = sokd.dam_pass.run(batch, base.student_features(student.feats)[-1],
                                             refined[-1], teacher.head, terms=False)
            else:
                teacher_feats = [teacher.head.detach()]
        device = teacher_feats[0].device

        def train_loss(student):
            # the same augmentation draws at every call (finite differences need them)
            generator = torch.Generator(device=device).manual_seed(seed)
            refined = [sokd.refine(ft, generator) for ft in teacher_feats]
            out, feats = base.run_student(batch, student)
            loss = base.loss_weights['task'] * out.task_loss
            if sokd.feature_base:
                aligned = list(base.aligned_features(feats, teacher.feats))
                return loss + sokd.feature_loss(aligned, refined, mask, detach_target=False)
            if base.loss_weights.get('kd', 0):
                loss = loss + sokd.logits_loss(out.outputs, refined[0], batch,
                                                detach_target=False)
            return loss

        def val_loss(student):
            return adapter.run(student, adapter.prepare(val_batch)).task_loss

        return train_loss, val_loss

    def _factored_parts(self, sokd, train_batch, val_batch):
        """``(features, coupling, val_loss)`` for ``factored_hypergradient``: the student's
        distilled outputs (aligned tap features, or logits for a logits base), and the base
        loss against DAFA's mixture of the teacher (computed once, its graph kept), masked by
        DAM's mask of the first call's features. The teacher runs once, without gradient, and
        its outputs serve the training step that follows on the same batch."""
        base, adapter = sokd.base, sokd.adapter
        batch = adapter.prepare(train_batch)
        with torch.no_grad():
            teacher = (None if sokd.online else sokd.teacher_cache.take(batch)) \
                or sokd.run_teacher(batch)
        sokd.keep_teacher(batch, teacher)
        if sokd.feature_base:
            teacher_feats = [ft.detach() for ft in base.teacher_features(teacher.feats)]
        else:
            teacher_feats = [teacher.head.detach()]
        generator = torch.Generator(device=teacher_feats[0].device).manual_seed(
            int(torch.randint(0, 2 ** 62, ())))
        refined = [sokd.refine(ft, generator) for ft in teacher_feats]  # graph to alpha
        state = {}
        weight_task = base.loss_weights['task']

        def features(student):
            # the DAM mask needs the raw last student tap: only the first (with grad) call
            out, s_feats = base.run_student(batch, student)
            if sokd.feature_base:
                aligned = list(base.aligned_features(s_feats, teacher.feats))
                gs = [g for _, g, _ in aligned]
                state.setdefault('pairs', [pair for pair, _, _ in aligned])
                state.setdefault('last_tap', base.student_features(s_feats)[-1].detach())
            else:
                gs = [out.outputs]
            return weight_task * out.task_loss, gs

        def coupling(feats):  # once, after the first features call
            if not sokd.feature_base:
                if not base.loss_weights.get('kd', 0):
                    return 0.0
                return sokd.logits_loss(feats[0], refined[0], batch, detach_target=False)
            mask = None
            if sokd.dam is not None:
                with torch.no_grad():
                    _, mask = sokd.dam_pass.run(batch, state['last_tap'], refined[-1].detach(),
                                             teacher.head, terms=False)
            aligned = [(pair, g, None) for pair, g in zip(state['pairs'], feats)]
            return sokd.feature_loss(aligned, refined, mask, detach_target=False)

        def val_loss(student):
            return adapter.run(student, adapter.prepare(val_batch)).task_loss

        return features, coupling, val_loss
