"""DAFA: Differentiable Automatic Feature Augmentation of the teacher's feature (README, "SoKD").

    ft_ref = sum_k softmax(alpha)_k * A_k(ft; m_k),      m_k = sigmoid(p_k)

Every operation ``A_k(x, magnitude, generator)`` takes a (B,C,H,W) feature and a scalar
magnitude in [0, 1] and is differentiable in that magnitude; each is the identity at magnitude
zero (cutout and channel dropout up to float rounding in their relaxations). Discrete ops are
relaxed: cutout has soft (piecewise-linear) edges, channel dropout uses the concrete
(relaxed Bernoulli) distribution, channel shuffle mixes the feature with a permuted copy.

The random draws (signs, noise, cutout centres, permutations) come from ``generator`` when one
is given, so the bi-level search can evaluate the same augmentation several times (the
finite-difference hypergradient needs ``L_train`` at theta+ and theta- under equal draws).

``alpha`` and the magnitude logits ``p`` are architecture parameters: the engine steps them
with their own optimiser from ``SoKD.arch_backward`` and keeps them out of the main one.
"""
from __future__ import annotations

import bisect
import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_TRANSLATE = 0.3     # of the half-width (affine_grid coordinates are in [-1, 1])
MAX_SHEAR = 0.3
MAX_ROTATE = math.pi / 6
MAX_CUTOUT = 0.5        # side of the cut square, as a fraction of the map side
MAX_NOISE = 1.0         # noise std, in units of the feature's own std
MAX_CHANNEL_DROP = 0.5  # drop probability of one channel
MAX_GAIN = 0.5          # per-channel gain in [1 - 0.5, 1 + 0.5]
DROP_TEMPERATURE = 0.1  # of the concrete distribution


def _rand(shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


#: constant tensors made once per device and dtype (affine coefficients, base grids, cell centres):
#: made at every call they are several operator calls each, in every step
_CONSTANTS: dict = {}


def _cell_centres(size: int, like: torch.Tensor) -> torch.Tensor:
    """``0.5, 1.5, ..., size - 0.5`` as a (1, size) row."""
    key = ('centres', size, like.device, like.dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.arange(0.5, size, device=like.device, dtype=like.dtype)[None]
    return _CONSTANTS[key]


def _base_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(H*W, 3) rows ``(x, y, 1)`` of the cell centres in [-1, 1] (``align_corners=False``),
    made once per size, device and dtype."""
    key = ('grid', height, width, like.device, like.dtype)
    if key not in _CONSTANTS:
        xs = (torch.arange(width, device=like.device, dtype=torch.float64) * 2 + 1) / width - 1
        ys = (torch.arange(height, device=like.device, dtype=torch.float64) * 2 + 1) / height - 1
        grid = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                            torch.ones(height, width, device=like.device, dtype=torch.float64)],
                           dim=-1)
        _CONSTANTS[key] = grid.reshape(height * width, 3).to(like.dtype)
    return _CONSTANTS[key]


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` through the affine maps ``theta`` (B,2,3); zero padding outside.
    The sampling grid is ``F.affine_grid``'s (``base @ theta^T``) as one batched matmul with a
    cached base: affine_grid makes the base again at every call (~45 operators, and ~60 more
    in its backward, against 8 and ~20)."""
    b, _, h, w = x.shape
    cells = _base_grid(h, w, theta)
    grid = torch.bmm(cells.expand(b, -1, -1), theta.transpose(1, 2)).view(b, h, w, 2)
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # a (2,3) affine matrix, flattened
_ENTRY = dict(a=0, b=1, tx=2, c=3, d=4, ty=5)


#: the affine ops' (2,3) matrices, one formula for all: with ``s = sign * magnitude * scale``
#: (sign -1 or +1 per sample), ``theta = identity + s * lin + (cos s - 1) * cos_m1 + sin s *
#: sin``; ``(scale, {entry: (lin, cos_m1, sin)})`` with entries ``a, b, tx`` (first row) and
#: ``c, d, ty`` (second row). The mixture builds all five at once (one op by one op is ~40
#: tiny operator calls, ~45 more in the backward, against ~12 and ~14); ``sample`` one.
AFFINE_TERMS = dict(
    translate_x=(MAX_TRANSLATE, dict(tx=(1, 0, 0))),
    translate_y=(MAX_TRANSLATE, dict(ty=(1, 0, 0))),
    shear_x=(MAX_SHEAR, dict(b=(1, 0, 0))), shear_y=(MAX_SHEAR, dict(c=(1, 0, 0))),
    rotate=(MAX_ROTATE, dict(a=(0, 1, 0), b=(0, 0, -1), c=(0, 0, 1), d=(0, 1, 0))))


def _affine_constants(names, like):
    """``(scales (n,), coefficients (n,3,6), identity (6,))`` of the affine ops ``names``,
    made once per op list, device and dtype."""
    key = ('affine', tuple(names), like.device, like.dtype)
    if key not in _CONSTANTS:
        coefficients = torch.zeros(len(names), 3, 6, dtype=torch.float64)
        for k, name in enumerate(names):
            for entry, column in AFFINE_TERMS[name][1].items():
                coefficients[k, :, _ENTRY[entry]] = torch.tensor(column, dtype=torch.float64)
        scales = torch.tensor([AFFINE_TERMS[name][0] for name in names], dtype=torch.float64)
        _CONSTANTS[key] = tuple(t.to(device=like.device, dtype=like.dtype) for t in (
            scales, coefficients, torch.tensor(_IDENTITY, dtype=torch.float64)))
    return _CONSTANTS[key]


def _affine_thetas(names, magnitudes, draws, like):
    """(n*B,2,3) matrices of the affine ops ``names`` (magnitudes (n,), uniform draws (n,B):
    the sign is -1 where a draw is below 0.5)."""
    scales, coefficients, identity = _affine_constants(names, like)
    s = torch.sign(draws - 0.5) * (magnitudes * scales)[:, None]
    terms = torch.stack([s, torch.cos(s) - 1, torch.sin(s)], dim=-1)  # (n, B, 3)
    return (identity + torch.bmm(terms, coefficients)).reshape(-1, 2, 3)


def identity(x, magnitude, generator=None):
    return x


def _warp_affine(name, x, magnitude, generator=None):
    """One affine op: a sign draw per sample, its matrix, the warp."""
    magnitude = torch.as_tensor(magnitude, dtype=x.dtype, device=x.device).reshape(1)
    draws = _rand((1, x.shape[0]), x, generator)
    return _warp(x, _affine_thetas([name], magnitude, draws, x))


def translate_x(x, magnitude, generator=None):
    return _warp_affine('translate_x', x, magnitude, generator)


def translate_y(x, magnitude, generator=None):
    return _warp_affine('translate_y', x, magnitude, generator)


def shear_x(x, magnitude, generator=None):
    return _warp_affine('shear_x', x, magnitude, generator)


def shear_y(x, magnitude, generator=None):
    return _warp_affine('shear_y', x, magnitude, generator)


def rotate(x, magnitude, generator=None):
    return _warp_affine('rotate', x, magnitude, generator)


def _band(offsets: torch.Tensor, half_side) -> torch.Tensor:
    """1 inside ``|offsets| < half_side - 1``, 0 outside ``half_side``, linear in between.
    ``hardtanh`` is ``clamp(0, 1)`` with a one-operator backward (clamp's is five)."""
    return F.hardtanh(half_side - offsets.abs(), 0.0, 1.0)


def cutout(x, magnitude, generator=None):
    """Zero a square of side ``magnitude * MAX_CUTOUT * size`` at a random centre. Its edges
    ramp linearly over one cell, so the op is differentiable in the side (and exact identity
    at magnitude 0)."""
    b, _, h, w = x.shape
    draws = _rand((b, 2), x, generator)
    half = magnitude * (MAX_CUTOUT / 2)  # half side, as a fraction of the map side
    # cell centres in map-side units minus the random centre, per sample: (B, W) and (B, H)
    if h == w:  # both axes in one (B, 2, W) band
        inside_x, inside_y = _band(_cell_centres(w, x) - w * draws[:, :, None],
                                   w * half).unbind(1)
    else:
        inside_x = _band(_cell_centres(w, x) - w * draws[:, :1], w * half)
        inside_y = _band(_cell_centres(h, x) - h * draws[:, 1:], h * half)
    return x * (1 - inside_y[:, None, :, None] * inside_x[:, None, None, :])


def gaussian_noise(x, magnitude, generator=None):
    """``x + m * MAX_NOISE * std(x) * eps`` (reparameterised; std per sample, detached)."""
    std = x.detach().flatten(1).std(dim=1).reshape(-1, 1, 1, 1)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + magnitude * MAX_NOISE * std * eps


def channel_dropout(x, magnitude, generator=None):
    """Concrete (relaxed Bernoulli) dropout of whole channels with probability
    ``m * MAX_CHANNEL_DROP``, rescaled by the keep probability."""
    b, c = x.shape[:2]
    drop = F.hardtanh(magnitude * MAX_CHANNEL_DROP, 1e-12, 1 - 1e-6)  # clamp, cheaper backward
    u = _rand((b, c, 1, 1), x, generator).clamp(1e-6, 1 - 1e-6)
    # logit(u) is the logistic noise, -logit(drop) = log(keep) - log(drop)
    gate = torch.sigmoid((torch.logit(u) - torch.logit(drop)) / DROP_TEMPERATURE)
    return x * (gate / (1 - drop))


def channel_shuffle(x, magnitude, generator=None):
    """Relaxed shuffle: ``(1 - m) * x + m * x[:, perm]`` with one random channel permutation."""
    perm = torch.argsort(_rand((x.shape[1],), x, generator))
    return torch.lerp(x, x[:, perm], magnitude)


def channel_gain(x, magnitude, generator=None):
    """Per-channel gain ``1 + m * MAX_GAIN * u``, u uniform in [-1, 1] per sample and channel."""
    u = _rand(x.shape[:2] + (1, 1), x, generator) * 2 - 1
    return x * (1 + magnitude * MAX_GAIN * u)


#: every candidate operation by name
AUGMENTATIONS = dict(identity=identity, translate_x=translate_x, translate_y=translate_y,
                     shear_x=shear_x, shear_y=shear_y, rotate=rotate, cutout=cutout,
                     gaussian_noise=gaussian_noise, channel_dropout=channel_dropout,
                     channel_shuffle=channel_shuffle, channel_gain=channel_gain)
DEFAULT_OPS = tuple(AUGMENTATIONS)


class DAFA(nn.Module):
    """The mixture ``sum_k softmax(alpha)_k A_k(ft; sigmoid(p_k))`` (README, "SoKD").

    Args:
        ops: names from ``AUGMENTATIONS`` (default: all eleven).
        init_magnitude: starting value of every m_k.
        alpha, p start so that all ops have equal weight and magnitude ``init_magnitude``.

    ``forward`` is the mixture (what the bi-level search differentiates; the affine ops are
    warped in one batched ``grid_sample``); ``sample`` applies one op drawn from
    ``softmax(alpha)``, the policy as a training step uses it (DADA-style sampling: one op's
    cost instead of all of them).
    """

    def __init__(self, ops=DEFAULT_OPS, init_magnitude: float = 0.2):
        super().__init__()
        unknown = [name for name in ops if name not in AUGMENTATIONS]
        if unknown:
            raise KeyError(f'unknown DAFA op(s) {unknown}; known: {sorted(AUGMENTATIONS)}')
        if not 0 < init_magnitude < 1:
            raise ValueError(f'init_magnitude must be in (0, 1), got {init_magnitude}')
        if len(set(ops)) != len(ops) or not ops:
            raise ValueError(f'DAFA ops must be distinct and non-empty, got {list(ops)}')
        self.op_names = list(ops)
        self.alpha = nn.Parameter(torch.zeros(len(ops)))
        logit = math.log(init_magnitude / (1 - init_magnitude))
        self.magnitude_logits = nn.Parameter(torch.full((len(ops),), logit))
        self._sampling = (None, None)  # (parameter versions, sampling state) for sample()

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.alpha, dim=0)

    def magnitudes(self) -> torch.Tensor:
        return torch.sigmoid(self.magnitude_logits)

    def forward(self, feature: torch.Tensor, generator: torch.Generator | None = None):
        """The mixture. Random draws happen in op order, as if every op ran alone in turn.

        The candidates are stacked and weighted in one product (a weight times an output per
        op is ~5 operator calls with the backward), the affine ones warped in one batched
        ``grid_sample`` with their matrices built together (``_affine_thetas``)."""
        magnitudes = self.magnitudes().to(feature.dtype)
        each = magnitudes.unbind(0)  # one backward op for all, where indexing is one per op
        outputs, affine, draws = [], [], []
        for k, name in enumerate(self.op_names):
            if name in AFFINE_TERMS:  # the sign draw now, the matrix below
                affine.append(k)
                draws.append(_rand((feature.shape[0],), feature, generator))
                outputs.append(None)
            elif name == 'identity':
                outputs.append(feature)
            else:
                outputs.append(AUGMENTATIONS[name](feature, each[k], generator))
        if affine:
            names = [self.op_names[k] for k in affine]
            thetas = _affine_thetas(names, torch.stack([each[k] for k in affine]),
                                    torch.stack(draws), feature)
            count, (b, c, h, w) = len(affine), feature.shape
            stacked = feature.unsqueeze(0).expand(count, b, c, h, w).reshape(count * b, c, h, w)
            warped = _warp(stacked, thetas).reshape(count, b, c, h, w).unbind(0)
            for k, out in zip(affine, warped):
                outputs[k] = out
        weights = self.weights().to(feature.dtype)
        return torch.tensordot(weights, torch.stack(outputs), dims=1)

    def _sampling_state(self, like: torch.Tensor):
        """``(cumulative weights as host floats, magnitudes as a detached tensor like
        ``like``)``, made again only after alpha or the magnitudes changed (an optimiser step
        or a load bumps their version), so ``sample`` reads nothing from the device and
        builds no softmax in a step."""
        key = tuple((p._version, p.data_ptr(), p.device) for p in self.parameters()) + (
            like.device, like.dtype)
        if self._sampling[0] != key:
            weights = self.weights().detach().double().cpu()
            if not torch.isfinite(weights).all():
                raise FloatingPointError(f'DAFA alpha is not finite ({self.alpha.tolist()}): '
                                         f'the search diverged (check the arch step losses)')
            cumulative = torch.cumsum(weights / weights.sum(), 0).tolist()
            magnitudes = self.magnitudes().detach().to(device=like.device, dtype=like.dtype)
            self._sampling = (key, (cumulative, magnitudes))
        return self._sampling[1]

    def sample(self, feature: torch.Tensor, generator: torch.Generator | None = None):
        """``A_k(feature; m_k)`` for one ``k ~ softmax(alpha)`` (drawn from the global CPU
        RNG, which the engines seed). No gradient reaches ``alpha`` or the magnitudes."""
        cumulative, magnitudes = self._sampling_state(feature)
        # one uniform draw and a search of the cumulative weights on the host
        k = min(bisect.bisect_right(cumulative, float(torch.rand(()))), len(cumulative) - 1)
        self.last_sampled = self.op_names[k]
        # alpha and p are fixed in the inner problem: no graph (nor .grad) to them here
        return AUGMENTATIONS[self.op_names[k]](feature, magnitudes[k], generator)

    @torch.no_grad()
    def policy(self, top: int = 3) -> dict:
        """The current policy: softmax weight and magnitude of every op, its entropy (nats;
        ``log(len(ops))`` is uniform) and the ``top`` ops by weight, as plain floats."""
        weights, magnitudes = self.weights(), self.magnitudes()
        entropy = float(-(weights * torch.log(weights.clamp_min(1e-30))).sum())
        order = torch.argsort(weights, descending=True)[:top].tolist()
        return dict(weights=dict(zip(self.op_names, weights.tolist())),
                    magnitudes=dict(zip(self.op_names, magnitudes.tolist())),
                    entropy=entropy,
                    top=[[self.op_names[i], float(weights[i]), float(magnitudes[i])]
                         for i in order])
