"""ADM's consensus and divergence losses (DESIGN 1.1, steps 2-5, as revised on real data).

The paper states the ideas; these are this library's exact formulation of them. Per sample,
with ``l`` running over the H*W locations and ``m(x) = mean_l |x_l|^2`` (no gradient):

    cos_e(a, b)_l = <a_l, b_l> / ( sqrt(|a_l|^2 + e*m(a)) * sqrt(|b_l|^2 + e*m(b)) )
    S     = cos_e(gs, ft), no gradient, float32                            (B, H, W)
    w_co  = softmax_l( S / tau)         w_di = softmax_l(-S / tau)
    L_co  = mean_b sum_l w_co * (1 - cos_e(gs, sg(ft)))   -> gradient to the student only
    L_di  = mean_b sum_l w_di * (1 + cos_e(ft, sg(gs)))   -> gradient to the teacher only

``e`` (``NORM_FLOOR``, 1e-2) is the one change from the first formulation, which used the plain
cosine. The gradient of a cosine is ``1/|x|`` in size: at a location where a ReLU map is all
zero (Fashion-MNIST's black background, early in training) ``F.cosine_similarity`` gives a
gradient of 1e7-1e8 and one step wrecks the network (the student stayed at chance). With the
floor a location whose norm is small next to the map's typical norm has a cosine near 0 and a
gradient at most ``1/sqrt(e) = 10`` times that of a typical location; locations of typical norm
are unchanged to within 1 %. Both losses stay in [0, 2].

Inputs are already aligned (same shape); the connector lives in the distiller.
``adm_terms`` computes both losses of one tap pair with one normalisation of each side, which is
what the distiller calls; the single-loss functions are the public reference forms.
"""
from __future__ import annotations

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
                    standardise: bool = False) -> torch.Tensor:
    """L_di: push the teacher away from the student where they disagree."""
    similarity = similarity_map(fs, ft) if similarity is None else similarity
    weights = location_weights(similarity, tau, 'disagreement', standardise)
    return (weights * divergence_affinity(ft, fs)).sum(dim=(1, 2)).mean()


class _ADMTerms(torch.autograd.Function):
    """Both losses of one pair in one pass, with their gradients written out.

    Autograd through the reference forms costs about 280 operator calls per tap and step (every
    Python scalar in a backward formula is its own small copy); the gradient written out costs
    about a fifth of that. With ``u = x * r_x``, ``r_x = (|x_l|^2 + e*m(x))^(-1/2)`` (the floor
    ``m`` is a constant) and ``c = <u_s, u_t>``:

        dc/dx_s = r_s * (u_t - c * u_s)        dc/dx_t = r_t * (u_s - c * u_t)

    L_co = mean_b sum_l w_co (1 - c) sends ``-w_co/B * dc/dx_s`` to the student only and
    L_di = mean_b sum_l w_di (1 + c) sends ``+w_di/B * dc/dx_t`` to the teacher only (the
    weights are constants). ``tests/test_losses.py`` checks both against the reference forms.
    """

    # Each Python scalar in an expression is an operator of its own (a wrapped-number copy), so
    # constants ride on ``alpha=`` arguments and on the 0-dim incoming gradients instead.
    @staticmethod
    def forward(ctx, gs, ft, tau: float, co_weight: float, di_weight: float, standardise: bool):
        # float32 throughout, outside autocast: under bf16/fp16 autocast every op below would
        # otherwise be dispatched through the cast policy
        with torch.autocast(gs.device.type, enabled=False):
            return _ADMTerms._forward(ctx, gs, ft, tau, co_weight, di_weight, standardise)

    @staticmethod
    def _forward(ctx, gs, ft, tau, co_weight, di_weight, standardise):
        xs, xt = gs.float(), ft.float()
        b = xs.shape[0]
        locations = xs.shape[2] * xs.shape[3]
        inv_norms = []
        for x in (xs, xt):
            squared = (x * x).sum(dim=1, keepdim=True)                          # (B,1,H,W)
            floored = torch.add(squared, squared.sum(dim=(2, 3), keepdim=True),
                                alpha=NORM_FLOOR / locations)                   # + e * m(x)
            inv_norms.append(floored.clamp_min_(1e-24).rsqrt_())
        rs, rt = inv_norms
        us, ut = xs * rs, xt * rt
        cos = (us * ut).sum(dim=1, keepdim=True)                               # (B,1,H,W)
        flat = cos.view(b, locations)
        logits = standardised(flat) if standardise else flat                   # no gradient
        outputs, saved = [], []
        for weight, sign in ((co_weight, 1.0), (di_weight, -1.0)):
            if not weight:
                outputs.append(cos.new_zeros(()))
                continue
            scaled = torch.add(logits, logits, alpha=sign / tau - 1)            # = sign*S/tau
            weights = torch.softmax(scaled, dim=1)
            weighted = torch.linalg.vecdot(weights, flat).sum()                 # sum_b sum_l w c
            # L_co = 1 - weighted / B,  L_di = 1 + weighted / B  (each w sums to 1 per sample),
            # times the term's weight
            outputs.append(torch.rsub(weighted, weight, alpha=weight * sign / b))
            saved.append(weights.view_as(cos))
        ctx.weights = co_weight / b, di_weight / b
        ctx.dtypes = gs.dtype, ft.dtype
        ctx.save_for_backward(us, ut, rs, rt, cos, *saved)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, grad_co, grad_di):
        us, ut, rs, rt, cos, *weights = ctx.saved_tensors
        grad_s = grad_t = None
        co_scale, di_scale = ctx.weights
        if co_scale:  # -weight * w_co/B * r_s * (u_t - c u_s)
            scale = rs * weights.pop(0) * grad_co.mul(-co_scale)
            grad_s = torch.addcmul(ut, cos, us, value=-1.0).mul_(scale).to(ctx.dtypes[0])
        if di_scale:  # +weight * w_di/B * r_t * (u_s - c u_t)
            scale = rt * weights.pop(0) * grad_di.mul(di_scale)
            grad_t = torch.addcmul(us, cos, ut, value=-1.0).mul_(scale).to(ctx.dtypes[1])
        return grad_s, grad_t, None, None, None, None


def adm_terms(gs: torch.Tensor, ft: torch.Tensor, tau: float, co_weight: float = 1.0,
              di_weight: float = 1.0, standardise: bool = False) -> dict[str, torch.Tensor]:
    """``{'co': co_weight * L_co, 'di': di_weight * L_di}`` of one aligned pair, equal in value
    and gradient routing to ``consensus_loss(gs, ft, tau)`` and ``divergence_loss(ft, gs, tau)``
    but computed in one pass: each side normalised once, the cosine shared, the gradient
    written out (``_ADMTerms``). A term of weight 0 is neither computed nor returned. What the
    ADM distiller calls every step."""
    _check_pair(gs, ft)
    if tau <= 0:
        raise ValueError(f'tau must be > 0, got {tau}')
    co_weight, di_weight = float(co_weight), float(di_weight)
    if not (co_weight or di_weight):
        return {}
    co, di = _ADMTerms.apply(gs if co_weight else gs.detach(),
                             ft if di_weight else ft.detach(), float(tau), co_weight, di_weight,
                             bool(standardise))
    return {name: value for name, value, weight in (('co', co, co_weight), ('di', di, di_weight))
            if weight}
