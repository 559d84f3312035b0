"""The one-step unrolled hypergradient of DAFA's bi-level search (README, "SoKD").

    theta'   = theta - xi * grad_theta L_train(theta; alpha)
    h(alpha) = d/d alpha  L_val(theta'(alpha))

``L_val`` does not depend on alpha directly, so with ``xi = 0`` the hypergradient is zero.

* ``exact``: ``torch.func.functional_call`` with the virtual parameters, differentiating through
  the inner gradient (``create_graph=True``).
* ``finite_difference`` (DARTS): ``h ~ grad_alpha L_val(theta') - xi * (grad_alpha
  L_train(theta+) - grad_alpha L_train(theta-)) / (2 eps)``, with
  ``theta+- = theta +- eps * grad_theta' L_val(theta')`` and ``eps = 0.01 / ||grad_theta'
  L_val||``. It perturbs the parameters in place and restores them.

* ``factored``: for ``L_train(theta, alpha) = task(theta) + C(f(theta), alpha)``, where alpha
  reaches the loss only through a coupling ``C`` of some student outputs ``f`` (SoKD: the
  distilled features or logits against the refined teacher), ``h = -xi * d/d alpha <dC/df,
  J_f v>`` with ``v = grad_theta' L_val(theta')``. ``J_f v`` is a finite difference of ``f``
  along ``v``, the rest is exact autograd through ``C`` only: one student forward and
  backward at theta, one at theta', one forward without gradient at ``theta + eps v``, and
  ``C`` (DAFA's mixture) evaluated once with its graph. ``difference='forward'`` (the
  default) takes ``(f(theta + eps v) - f(theta)) / eps`` with ``f(theta)`` of the first
  forward (same batch; batch norms in training mode use the batch statistics either way);
  ``'central'`` runs ``f(theta - eps v)`` too, one student forward more, for an error
  O(eps^2) instead of O(eps) on smooth networks;
  across ReLU kinks both are O(eps) and measured alike (~1% of the exact hypergradient at
  eps 1e-3 on tiny_cnn). The cheap method, which SoKD uses by default.

``exact`` and ``finite_difference`` take ``train_loss(model)`` and ``val_loss(model)``:
callables that run a module (the student, or a stand-in with other parameters) and return a
scalar. ``train_loss`` must be deterministic (fix its random draws) for the finite difference
to make sense. Buffers: the exact method runs on copies of the student's buffers; callers keep
everything else intact with ``preserved_buffers``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

HYPERGRAD_METHODS = ('exact', 'finite_difference', 'factored')


class WithTensors:
    """A callable standing in for ``module`` with other parameters and buffers (taps and
    other forward hooks of ``module`` still fire). Exposes the module's attributes."""

    def __init__(self, module: nn.Module, tensors: dict):
        self.module, self.tensors = module, tensors

    def __call__(self, *args, **kwargs):
        return functional_call(self.module, self.tensors, args, kwargs, strict=False)

    def __getattr__(self, name):
        return getattr(self.module, name)


@contextlib.contextmanager
def preserved_buffers(*modules: nn.Module):
    """Leave every buffer of ``modules`` (BN running statistics) as it was on exit.

    Batch norms in training mode stop tracking their running statistics meanwhile: in
    training mode they normalise by the batch statistics whether they track or not, so their
    outputs are the same, and they write nothing, so nothing needs a copy (the copies were
    ~150 operator calls per arch step for resnet8x4). Other buffers of modules in training mode
    are copied and restored; modules in eval mode (a frozen teacher) do not write their
    buffers and are skipped."""
    norms = {id(sub): sub for module in modules for sub in module.modules()
             if sub.training and isinstance(sub, _BatchNorm) and sub.track_running_stats}
    buffers = {id(buf): buf for module in modules for sub in module.modules()
               if sub.training and id(sub) not in norms for buf in sub.buffers(recurse=False)}
    saved = list(buffers.values())
    values = [buf.detach().clone() for buf in saved]
    for norm in norms.values():
        norm.track_running_stats = False
    try:
        yield
    finally:
        for norm in norms.values():
            norm.track_running_stats = True
        if saved:
            with torch.no_grad():
                torch._foreach_copy_(saved, values)


def _zeros_for_none(grads, like):
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like)]


def trainable_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in module.named_parameters() if p.requires_grad]


def exact_hypergradient(student: nn.Module, train_loss: Callable, val_loss: Callable,
                        arch_params: Sequence[torch.Tensor], xi: float):
    """Returns ``(hypergradients, train loss value, val loss value)``."""
    named = trainable_parameters(student)
    names, params = [n for n, _ in named], [p for _, p in named]

    def with_params(values):
        buffers = {n: b.detach().clone() for n, b in student.named_buffers()}
        return WithTensors(student, {**dict(zip(names, values)), **buffers})

    loss_train = train_loss(with_params(params))
    grads = torch.autograd.grad(loss_train, params, create_graph=True, allow_unused=True)
    virtual = [p - xi * g for p, g in zip(params, _zeros_for_none(grads, params))]
    loss_val = val_loss(with_params(virtual))
    hyper = torch.autograd.grad(loss_val, list(arch_params), allow_unused=True)
    return _zeros_for_none(hyper, arch_params), float(loss_train.detach()), float(loss_val.detach())


def finite_difference_hypergradient(student: nn.Module, train_loss: Callable,
                                    val_loss: Callable, arch_params: Sequence[torch.Tensor],
                                    xi: float):
    """DARTS' second-order approximation; the student's parameters are restored on exit."""
    params = [p for _, p in trainable_parameters(student)]
    arch_params = list(arch_params)
    originals = [p.detach().clone() for p in params]
    try:
        loss_train = train_loss(student)
        grads = _zeros_for_none(torch.autograd.grad(loss_train, params, allow_unused=True),
                                params)
        with torch.no_grad():
            for p, p0, g in zip(params, originals, grads):
                p.copy_(p0 - xi * g)
        loss_val = val_loss(student)
        val_grads = _zeros_for_none(
            torch.autograd.grad(loss_val, params + arch_params, allow_unused=True),
            params + arch_params)
        d_theta, direct = val_grads[:len(params)], val_grads[len(params):]
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in d_theta))
        eps = 0.01 / max(float(norm), 1e-12)

        def arch_grad_at(sign):
            with torch.no_grad():
                for p, p0, d in zip(params, originals, d_theta):
                    p.copy_(p0 + sign * eps * d)
            return _zeros_for_none(torch.autograd.grad(train_loss(student), arch_params,
                                                       allow_unused=True), arch_params)

        plus, minus = arch_grad_at(1.0), arch_grad_at(-1.0)
        hyper = [d - xi * (gp - gm) / (2 * eps) for d, gp, gm in zip(direct, plus, minus)]
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, originals):
                p.copy_(p0)
    return hyper, float(loss_train.detach()), float(loss_val.detach())


def factored_hypergradient(student: nn.Module, features: Callable, coupling: Callable,
                           val_loss: Callable, arch_params: Sequence[torch.Tensor], xi: float,
                           eps_scale: float = 1e-3, difference: str = 'forward'):
    """The one-step hypergradient when ``alpha`` enters ``L_train`` only through a coupling.

    ``features(model) -> (task loss, [f_i])`` runs the student (the outputs ``f_i`` with their
    graph when gradients are on); ``coupling([f_i]) -> scalar`` is ``C(f, alpha)`` with its
    graph to alpha (or a plain 0 where nothing couples). ``L_val`` must not depend on alpha.
    Returns ``(hypergradients, train loss value, val loss value)``; the student's parameters
    are restored on exit (buffers: see ``preserved_buffers``).

    ``C`` runs once, on detached copies of ``f``: ``dC/df`` (its graph kept) is both the
    cotangent that takes ``L_train``'s gradient into the student (taken as a value: alpha is
    fixed in the inner step) and the first factor of the hypergradient.
    """
    if difference not in ('forward', 'central'):
        raise ValueError(f"difference must be 'forward' or 'central', got {difference!r}")
    params = [p for _, p in trainable_parameters(student)]
    arch_params = list(arch_params)
    task, feats = features(student)
    at = [f.detach().requires_grad_(True) for f in feats]
    value = coupling(at)
    pairs = []  # (i, dC/df_i) for the f_i that reach C
    if torch.is_tensor(value) and value.requires_grad:
        d_coupling = torch.autograd.grad(value, at, create_graph=True, allow_unused=True)
        pairs = [(i, d) for i, d in enumerate(d_coupling) if d is not None]
    grads = _zeros_for_none(torch.autograd.grad(
        [task] + [feats[i] for i, _ in pairs], params,
        grad_outputs=[None] + [d.detach() for _, d in pairs], allow_unused=True), params)
    loss_train = task.detach() + (value.detach() if torch.is_tensor(value) else value)
    with torch.no_grad():  # one fused copy (not a clone per tensor), restored in finally
        originals = [torch.empty_like(p) for p in params]
        torch._foreach_copy_(originals, params)
    try:
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-xi)
        loss_val = val_loss(student)
        v = _zeros_for_none(torch.autograd.grad(loss_val, params, allow_unused=True), params)
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(v)).double())
        eps = eps_scale / max(float(norm), 1e-12)
        with torch.no_grad():  # J_f v ~ (f(theta + eps v) - f(theta or theta - eps v)) / step
            torch._foreach_copy_(params, originals)
            torch._foreach_add_(params, v, alpha=eps)
            _, plus = features(student)
            if difference == 'central':
                torch._foreach_add_(params, v, alpha=-2 * eps)
                _, base = features(student)
            else:  # f(theta) of the first call: same batch, batch statistics in training mode
                base = [f.detach() for f in feats]
        hyper = None
        if pairs:
            # <dC/df, f(theta + eps v) - base>, scaled once: -xi / step times the difference
            dots = [torch.dot(d.reshape(-1), (plus[i] - base[i]).reshape(-1))
                    for i, d in pairs]
            step = 2 * eps if difference == 'central' else eps
            inner = sum(dots[1:], dots[0]) * (-xi / step)
            if inner.requires_grad:
                hyper = _zeros_for_none(torch.autograd.grad(inner, arch_params,
                                                            allow_unused=True), arch_params)
        if hyper is None:  # no coupling (or none through alpha): no gradient
            hyper = [torch.zeros_like(p) for p in arch_params]
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, originals)
    return hyper, float(loss_train), float(loss_val.detach())


def unrolled_hypergradient(student, train_loss, val_loss, arch_params, xi: float,
                           method: str = 'exact'):
    if method == 'exact':
        return exact_hypergradient(student, train_loss, val_loss, arch_params, xi)
    if method == 'finite_difference':
        return finite_difference_hypergradient(student, train_loss, val_loss, arch_params, xi)
    if method == 'factored':
        raise ValueError("hypergrad='factored' needs features and a coupling: call "
                         "factored_hypergradient")
    raise ValueError(f'hypergrad must be one of {HYPERGRAD_METHODS}, got {method!r}')
