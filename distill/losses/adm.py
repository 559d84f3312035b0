"""ADM's consensus and divergence losses (README, "ADM as implemented").

The paper states the ideas; these are this library's exact formulation of them. Per sample,
with ``l`` running over the H*W locations and ``m(x) = mean_l |x_l|^2`` (no gradient):

    cos_e(a, b)_l = <a_l, b_l> / ( sqrt(|a_l|^2 + e*m(a)) * sqrt(|b_l|^2 + e*m(b)) )
    S     = cos_e(gs, ft), no gradient, float32                            (B, H, W)
    w_co  = softmax_l( S / tau)         w_di = softmax_l(-S / tau)
    L_co  = mean_b sum_l w_co * (1 - cos_e(gs, sg(ft)))   -> gradient to the student only
    L_di  = mean_b sum_l w_di * (1 + cos_e(ft, sg(gs)))   -> gradient to the teacher only
    ('repel', the default reading; ``divergence='mutual'`` reads divergence learning as the
    teacher freed of DML's pull where the two diverge: L_di = mean_b sum_l w_co *
    (1 - cos_e(ft, sg(gs))), the teacher pulled toward the student only where they agree)

``e`` (``NORM_FLOOR``, 1e-2) is the one change from the first formulation, which used the plain
cosine. The gradient of a cosine is ``1/|x|`` in size: at a location where a ReLU map is all
zero (Fashion-MNIST's black background, early in training) ``F.cosine_similarity`` gives a
gradient of 1e7-1e8 and one step wrecks the network (the student stayed at chance). With the
floor a location whose norm is small next to the map's typical norm has a cosine near 0 and a
gradient at most ``1/sqrt(e) = 10`` times that of a typical location; locations of typical norm
are unchanged to within 1 %. Both losses stay in [0, 2].

Inputs are already aligned (same shape); the connector lives in the distiller.
``adm_terms`` computes both losses of one tap pair in one pass (the two sides stacked), which is
what the distiller calls; the single-loss functions are the public reference forms.
"""
from __future__ import annotations

import functools
import math

import torch

#: norm floor of ``cos_e``, relative to the map's mean squared norm (per sample)
NORM_FLOOR = 1e-2


def _check_pair(fs: torch.Tensor, ft: torch.Tensor) -> None:
    if fs.shape != ft.shape or fs.dim() != 4:
        raise ValueError(f'ADM losses need aligned (B,C,H,W) features of equal shape, got '
                         f'{tuple(fs.shape)} and {tuple(ft.shape)}')


def unit_features(x: torch.Tensor, eps: float = NORM_FLOOR) -> torch.Tensor:
    """``x_l / sqrt(|x_l|^2 + eps * m(x))`` per location, float32; the floor ``m(x)`` (mean
    squared norm of the sample's locations) carries no gradient."""
    x = x.float()
    squared = x.square().sum(dim=1, keepdim=True)                      # (B, 1, H, W)
    floor = squared.detach().mean(dim=(2, 3), keepdim=True) * eps + 1e-12
    return x * torch.rsqrt(squared + floor)


def similarity_map(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """``S = cos_e(fs, ft)`` per location, (B, H, W), float32, no gradient."""
    _check_pair(fs, ft)
    with torch.no_grad():
        return (unit_features(fs) * unit_features(ft)).sum(dim=1)


def standardised(similarity: torch.Tensor) -> torch.Tensor:
    """``(S - mean_l S) / (std_l S + 1e-6)`` per sample over the last two dims (or the last)."""
    flat = similarity.flatten(-2) if similarity.dim() == 3 else similarity
    mean = flat.mean(dim=-1, keepdim=True)
    std = flat.std(dim=-1, keepdim=True, unbiased=False)
    return ((flat - mean) / (std + 1e-6)).view_as(similarity)


def location_weights(similarity: torch.Tensor, tau: float, emphasise: str,
                     standardise: bool = False) -> torch.Tensor:
    """Softmax over the H*W locations of each sample: ``'agreement'`` -> w_co, else w_di.
    ``standardise``: of ``(S - mean S) / std S`` instead of ``S``."""
    if tau <= 0:
        raise ValueError(f'tau must be > 0, got {tau}')
    sign = 1.0 if emphasise == 'agreement' else -1.0
    b, h, w = similarity.shape
    if standardise:
        similarity = standardised(similarity)
    return torch.softmax(similarity.reshape(b, h * w) * (sign / tau), dim=1).reshape(b, h, w)


def consensus_distance(fs: torch.Tensor, ft: torch.Tensor,
                       detach_target: bool = True) -> torch.Tensor:
    """``1 - cos_e(fs, sg(ft))`` per location (B, H, W); gradient to ``fs`` only
    (``detach_target=False`` keeps the target's graph, for SoKD's hypergradient)."""
    ft = ft.detach() if detach_target else ft
    return 1 - (unit_features(fs) * unit_features(ft)).sum(dim=1)


def divergence_affinity(ft: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
    """``1 + cos_e(ft, sg(fs))`` per location (B, H, W); gradient to ``ft`` only."""
    return 1 + (unit_features(ft) * unit_features(fs.detach())).sum(dim=1)


def consensus_loss(fs: torch.Tensor, ft: torch.Tensor, tau: float = 1.0,
                   similarity: torch.Tensor | None = None,
                   standardise: bool = False) -> torch.Tensor:
    """L_co: pull the student toward the teacher where they already agree."""
    similarity = similarity_map(fs, ft) if similarity is None else similarity
    weights = location_weights(similarity, tau, 'agreement', standardise)
    return (weights * consensus_distance(fs, ft)).sum(dim=(1, 2)).mean()


def divergence_loss(ft: torch.Tensor, fs: torch.Tensor, tau: float = 1.0,
                    similarity: torch.Tensor | None = None,
                    standardise: bool = False, divergence: str = 'repel') -> torch.Tensor:
    """L_di, the teacher's term, in one of two readings:

    ``'repel'``: push the teacher away from the student where they disagree,
    ``mean_b sum_l w_di * (1 + cos_e(ft, sg(gs)))``;
    ``'mutual'``: pull the teacher toward the student only where they agree (DML's pull kept
    there, none where they diverge), ``mean_b sum_l w_co * (1 - cos_e(ft, sg(gs)))``."""
    check_divergence(divergence)
    similarity = similarity_map(fs, ft) if similarity is None else similarity
    if divergence == 'mutual':
        weights = location_weights(similarity, tau, 'agreement', standardise)
        return (weights * consensus_distance(ft, fs)).sum(dim=(1, 2)).mean()
    weights = location_weights(similarity, tau, 'disagreement', standardise)
    return (weights * divergence_affinity(ft, fs)).sum(dim=(1, 2)).mean()


#: keeps ``sqrt(|x_l|^2 + e*m(x))`` above 0 where a whole map is zero (u = 0 there, not 0/0)
_TINY = 1e-12


#: the readings of divergence learning: (softmax sign of the teacher's weights, sign of the
#: cosine in its loss), i.e. L_di = mean_b sum_l softmax_l(sign * S / tau) * (1 + cos_sign * c)
DIVERGENCE_READINGS = {'repel': (-1.0, 1.0), 'mutual': (1.0, -1.0)}


def check_divergence(divergence: str) -> None:
    if divergence not in DIVERGENCE_READINGS:
        raise ValueError(f'divergence is one of {sorted(DIVERGENCE_READINGS)}, got '
                         f'{divergence!r}')


@functools.lru_cache(maxsize=64)
def _term_constants(device: torch.device, co_weight: float, di_weight: float,
                    divergence: str = 'repel'):
    """The constant tensors of ``_ADMTerms`` for its terms (those of nonzero weight, co first),
    made once per device and weights: a Python number in a tensor expression is an operator
    call of its own at every step (a wrapped-number copy), a tensor kept here is none.

    ``sign`` (k,1,1,1): w = softmax(sign * S / tau), +1 for L_co, -1 for L_di ('repel');
    ``slope`` (k,1,1,1) and ``offset`` (k,): term = offset + slope * sum_bl w c / B,
    i.e. co * (1 - ...) and di * (1 + ...) ('mutual': +1 and di * (1 - ...));
    ``zero`` and ``tiny``: 0-dim."""
    di_sign, di_cos_sign = DIVERGENCE_READINGS[divergence]
    terms = [(weight, sign, cos_sign) for weight, sign, cos_sign in
             ((co_weight, 1.0, -1.0), (di_weight, di_sign, di_cos_sign)) if weight]
    with torch.inference_mode(False), torch.no_grad():  # plain tensors even if first made there
        def tensor(values):
            return torch.tensor(values, dtype=torch.float32, device=device)
        return (tensor([sign for _, sign, _ in terms]).view(-1, 1, 1, 1),
                tensor([cos_sign * weight for weight, _, cos_sign in terms]).view(-1, 1, 1, 1),
                tensor([weight for weight, _, _ in terms]), tensor(0.0), tensor(_TINY))


class _ADMTerms(torch.autograd.Function):
    """Both losses of one pair in one pass, on the two sides stacked, with the gradient
    written out; or one of them (offline ADM: co only; SoKD's teacher step: di only).

    ADM's online step is launch bound at CIFAR sizes (each operator call ~ one GPU kernel and
    its Python/dispatch cost), so the student and teacher features are stacked as one
    (2, B, C, H*W) tensor: one normalisation, one cosine, both terms' softmax weights on one
    (k, B, 1, L) tensor, both gradients in one expression. With ``n_x = sqrt(|x_l|^2 + e*m(x))``
    (the floor ``m`` a constant), ``u = x / n_x`` and ``c = <u_s, u_t>``:

        dc/dx_s = (u_t - c * u_s) / n_s        dc/dx_t = (u_s - c * u_t) / n_t

    L_co = co * mean_b sum_l w_co (1 - c) sends ``-co * w_co/B * dc/dx_s`` to the student only,
    L_di = di * mean_b sum_l w_di (1 + c) sends ``+di * w_di/B * dc/dx_t`` to the teacher only
    (the weights are constants). ``tests/test_losses.py`` checks values and gradients against
    the reference forms, ``tests/test_adm_terms.py`` against a float64 autograd of the formula.
    """

    @staticmethod
    def forward(ctx, gs, ft, tau: float, co_weight: float, di_weight: float, standardise: bool,
                divergence: str = 'repel'):
        # float32 throughout, outside autocast: under bf16/fp16 autocast every op below would
        # otherwise be dispatched through the cast policy (checked only: entering the context
        # costs more Python than the check)
        if torch.is_autocast_enabled(gs.device.type):
            with torch.autocast(gs.device.type, enabled=False):
                return _ADMTerms._forward(ctx, gs, ft, tau, co_weight, di_weight, standardise,
                                          divergence)
        return _ADMTerms._forward(ctx, gs, ft, tau, co_weight, di_weight, standardise,
                                  divergence)

    @staticmethod
    def _forward(ctx, gs, ft, tau, co_weight, di_weight, standardise, divergence):
        b, channels, height, width = gs.shape
        locations = height * width
        sign, slope, offset, ctx.zero, tiny = _term_constants(gs.device, co_weight, di_weight,
                                                              divergence)
        if (gs.dtype == ft.dtype == torch.float32 and gs.is_contiguous()
                and ft.is_contiguous()):
            x = torch.cat((gs, ft))
        else:  # bf16/fp16 converted in the same copy; channels-last: a contiguous copy to view
            x = torch.cat((gs, ft), out=gs.new_empty((2 * b, channels, height, width),
                                                     dtype=torch.float32))
        x = x.view(2, b, channels, locations)                               # (side, B, C, L)
        norms = torch.linalg.vector_norm(x, dim=2, keepdim=True)            # |x_l|  (2,B,1,L)
        total = torch.linalg.vector_norm(norms, dim=3, keepdim=True)        # sqrt(L * m(x))
        # n_x = sqrt(|x_l|^2 + e*m(x)) = hypot(|x_l|, sqrt(e/L) * sqrt(L*m(x)))
        norms = torch.hypot(norms, torch.add(tiny, total, alpha=math.sqrt(NORM_FLOOR / locations)))
        u = x / norms                                                       # u_s, u_t
        cos = u.prod(0).sum(1, keepdim=True)                                # c  (B,1,L)
        logits = standardised(cos) if standardise else cos                  # no gradient
        # softmax_l(sign * S / tau) of every term at once: (k, B, 1, L)
        weights = torch.softmax(torch.addcmul(ctx.zero, logits, sign, value=1 / tau), dim=-1)
        weights = weights * slope                                           # B * dterm/dc
        terms = weights.shape[0]
        losses = torch.addmv(offset, weights.view(terms, -1), cos.view(-1), alpha=1 / b)
        ctx.sides = (0, 1) if terms == 2 else (0,) if co_weight else (1,)
        ctx.shape = gs.shape
        ctx.dtypes = gs.dtype, ft.dtype
        ctx.save_for_backward(u, norms, cos, weights)
        return (losses[0], losses[1]) if terms == 2 else (losses[0],)

    @staticmethod
    def backward(ctx, *grads):
        u, norms, cos, weights = ctx.saved_tensors
        b = ctx.shape[0]
        out = [None, None]
        if len(ctx.sides) == 2:  # (u_other - c u_own) * w * slope / (B n_own), both sides
            scale = torch.addcdiv(ctx.zero, weights, norms, value=1 / b)      # (2,B,1,L)
            both = torch.addcmul(u.flip(0), cos, u, value=-1).mul_(scale)
            both = both.view(2, *ctx.shape)
            out = [both[0].mul_(grads[0]), both[1].mul_(grads[1])]
        else:
            side = ctx.sides[0]
            scale = torch.addcdiv(ctx.zero, weights, norms[side], value=1 / b)  # (1,B,1,L)
            grad = torch.addcmul(u[1 - side], cos, u[side], value=-1).mul(scale)
            out[side] = grad.view(ctx.shape).mul_(grads[0])
        for side, dtype in enumerate(ctx.dtypes):
            if out[side] is not None and not ctx.needs_input_grad[side]:
                out[side] = None
            elif out[side] is not None and dtype != torch.float32:
                out[side] = out[side].to(dtype)
        return out[0], out[1], None, None, None, None, None


def adm_terms(gs: torch.Tensor, ft: torch.Tensor, tau: float, co_weight: float = 1.0,
              di_weight: float = 1.0, standardise: bool = False,
              divergence: str = 'repel') -> dict[str, torch.Tensor]:
    """``{'co': co_weight * L_co, 'di': di_weight * L_di}`` of one aligned pair, equal in value
    and gradient routing to ``consensus_loss(gs, ft, tau)`` and
    ``divergence_loss(ft, gs, tau, divergence=divergence)`` but computed in one pass: both sides
    normalised together, the cosine shared, the gradient written out (``_ADMTerms``). A term of
    weight 0 is neither computed nor returned. What the ADM distiller calls every step."""
    _check_pair(gs, ft)
    if tau <= 0:
        raise ValueError(f'tau must be > 0, got {tau}')
    check_divergence(divergence)
    co_weight, di_weight = float(co_weight), float(di_weight)
    args = float(tau), co_weight, di_weight, bool(standardise), divergence
    if co_weight and di_weight:
        co, di = _ADMTerms.apply(gs, ft, *args)
        return {'co': co, 'di': di}
    if co_weight:
        return {'co': _ADMTerms.apply(gs, ft.detach(), *args)[0]}
    if di_weight:
        return {'di': _ADMTerms.apply(gs.detach(), ft, *args)[0]}
    return {}
