"""DAFA's operations and the one-step unrolled hypergradient (README, "SoKD")."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.sokd.dafa import AUGMENTATIONS, DAFA
from distill.sokd.hypergrad import (exact_hypergradient, finite_difference_hypergradient,
                                    unrolled_hypergradient)

OPS = sorted(AUGMENTATIONS)


def _feature():
    return torch.randn(2, 5, 7, 6, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)


def _apply(name, x, magnitude, seed=3):
    return AUGMENTATIONS[name](x, magnitude, torch.Generator().manual_seed(seed))


def test_at_least_eight_operations():
    assert len([name for name in OPS if name != 'identity']) >= 8


@pytest.mark.parametrize('name', OPS)
def test_op_is_identity_at_zero_magnitude(name):
    x = _feature()
    out = _apply(name, x, torch.tensor(0.0, dtype=torch.float64))
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, atol=1e-9, rtol=0)


def _expected_matrix(name, s):
    """The (2,3) matrix of an affine op at signed amount ``s``, written out."""
    c, n = math.cos(s), math.sin(s)
    return dict(translate_x=[[1, 0, s], [0, 1, 0]], translate_y=[[1, 0, 0], [0, 1, s]],
                shear_x=[[1, s, 0], [0, 1, 0]], shear_y=[[1, 0, 0], [s, 1, 0]],
                rotate=[[c, -n, 0], [n, c, 0]])[name]


def test_affine_matrices_match_the_written_out_ones():
    """The one formula behind every affine op (``AFFINE_TERMS``) gives the textbook matrices,
    with the sign of each sample's draw; ``sample`` and the mixture both build them so."""
    from distill.sokd.dafa import AFFINE_TERMS, _affine_thetas
    names = list(AFFINE_TERMS)
    magnitudes = torch.linspace(0.2, 0.9, len(names), dtype=torch.float64)
    draws = torch.tensor([[0.2, 0.7]] * len(names), dtype=torch.float64)  # sign -1, +1
    thetas = _affine_thetas(names, magnitudes, draws, draws).view(len(names), 2, 2, 3)
    for k, name in enumerate(names):
        for b, sign in enumerate((-1.0, 1.0)):
            s = sign * float(magnitudes[k]) * AFFINE_TERMS[name][0]
            expected = torch.tensor(_expected_matrix(name, s), dtype=torch.float64)
            torch.testing.assert_close(thetas[k, b], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize('name', [n for n in OPS if n != 'identity'])
def test_op_is_differentiable_in_its_magnitude(name):
    """Autograd d/dm of a fixed projection matches a central finite difference (same draws),
    and the op really depends on m there."""
    x = _feature()
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)
    m = torch.tensor(0.37, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad((weights * _apply(name, x, m)).sum(), m)
    h = 1e-6
    with torch.no_grad():
        plus = (weights * _apply(name, x, m + h)).sum()
        minus = (weights * _apply(name, x, m - h)).sum()
    numeric = (plus - minus) / (2 * h)
    assert abs(float(grad)) > 1e-6
    assert abs(float(grad) - float(numeric)) <= 1e-4 * max(1.0, abs(float(numeric)))


def test_mixture_policy_and_state_dict():
    dafa = DAFA(ops=['identity', 'rotate', 'cutout'], init_magnitude=0.3)
    policy = dafa.policy()
    assert set(policy['weights']) == {'identity', 'rotate', 'cutout'}
    assert sum(policy['weights'].values()) == pytest.approx(1.0)
    assert policy['magnitudes']['rotate'] == pytest.approx(0.3)
    assert set(dafa.state_dict()) == {'alpha', 'magnitude_logits'}
    # all weight on identity: the refined feature is the feature
    with torch.no_grad():
        dafa.alpha.copy_(torch.tensor([50.0, -50.0, -50.0]))
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(dafa(x), x)
    with pytest.raises(KeyError, match='unknown DAFA op'):
        DAFA(ops=['identity', 'solarize'])


# ------------------------------------------------------------------ hypergradient


class TinyStudent(nn.Module):
    """conv -> tanh (the distilled feature) -> mean pool -> linear; smooth, float64."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        feature = torch.tanh(self.conv(x))
        return self.fc(feature.mean(dim=(2, 3))), feature


def _problem():
    torch.manual_seed(0)
    student = TinyStudent().double()
    dafa = DAFA(ops=['identity', 'translate_x', 'rotate', 'cutout', 'gaussian_noise',
                     'channel_gain']).double()
    with torch.no_grad():  # a policy away from the symmetric start
        dafa.alpha.copy_(torch.randn(6, dtype=torch.float64))
        dafa.magnitude_logits.copy_(torch.randn(6, dtype=torch.float64))
    gen = torch.Generator().manual_seed(1)
    x_train = torch.randn(4, 2, 5, 5, generator=gen, dtype=torch.float64)
    y_train = torch.randint(0, 4, (4,), generator=gen)
    x_val = torch.randn(4, 2, 5, 5, generator=gen, dtype=torch.float64)
    y_val = torch.randint(0, 4, (4,), generator=gen)
    teacher_feat = torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64)
    lam = 2.0

    def train_loss(model):
        logits, feature = model(x_train)
        refined = dafa(teacher_feat, torch.Generator().manual_seed(7))
        return F.cross_entropy(logits, y_train) + lam * (feature - refined).pow(2).mean()

    def val_loss(model):
        return F.cross_entropy(model(x_val)[0], y_val)

    return student, dafa, train_loss, val_loss, (x_train, y_train, x_val, y_val,
                                                 teacher_feat, lam)


def _reference_hypergradient(student, dafa, data, xi):
    """The unrolled step written out by hand on explicit tensors (no functional_call)."""
    x_train, y_train, x_val, y_val, teacher_feat, lam = data
    w, b, fw, fb = [p.detach().clone().requires_grad_(True) for p in
                    (student.conv.weight, student.conv.bias, student.fc.weight, student.fc.bias)]

    def run(params, x):
        feature = torch.tanh(F.conv2d(x, params[0], params[1], padding=1))
        return feature.mean(dim=(2, 3)) @ params[2].T + params[3], feature

    logits, feature = run((w, b, fw, fb), x_train)
    refined = dafa(teacher_feat, torch.Generator().manual_seed(7))
    loss = F.cross_entropy(logits, y_train) + lam * (feature - refined).pow(2).mean()
    grads = torch.autograd.grad(loss, (w, b, fw, fb), create_graph=True)
    virtual = [p - xi * g for p, g in zip((w, b, fw, fb), grads)]
    val = F.cross_entropy(run(virtual, x_val)[0], y_val)
    return torch.autograd.grad(val, list(dafa.parameters()))


def _relative_error(got, want):
    got, want = torch.cat([g.flatten() for g in got]), torch.cat([g.flatten() for g in want])
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize('method', [exact_hypergradient, finite_difference_hypergradient])
def test_hypergradient_matches_unrolled_reference(method):
    student, dafa, train_loss, val_loss, data = _problem()
    xi = 0.5
    reference = _reference_hypergradient(student, dafa, data, xi)
    assert float(torch.cat([r.flatten() for r in reference]).norm()) > 1e-6
    before = [p.detach().clone() for p in student.parameters()]
    hyper, _, _ = method(student, train_loss, val_loss, list(dafa.parameters()), xi)
    assert _relative_error(hyper, reference) < 1e-2
    for p, p0 in zip(student.parameters(), before):  # the virtual step left no trace
        assert torch.equal(p, p0)


def test_zero_virtual_step_gives_no_hypergradient():
    student, dafa, train_loss, val_loss, _ = _problem()
    hyper, _, _ = unrolled_hypergradient(student, train_loss, val_loss,
                                         list(dafa.parameters()), xi=0.0, method='exact')
    assert all(float(h.abs().max()) == 0 for h in hyper)
    with pytest.raises(ValueError, match='hypergrad'):
        unrolled_hypergradient(student, train_loss, val_loss, [], 0.1, method='second')


def _factored(difference, eps_scale=1e-3):
    """The factored hypergradient of ``_problem`` and the float64 unrolled reference."""
    from distill.sokd.hypergrad import factored_hypergradient
    student, dafa, _, val_loss, data = _problem()
    x_train, y_train, _, _, teacher_feat, lam = data
    xi = 0.5
    reference = _reference_hypergradient(student, dafa, data, xi)

    def features(model):
        logits, feature = model(x_train)
        return F.cross_entropy(logits, y_train), [feature]

    def coupling(feats):
        refined = dafa(teacher_feat, torch.Generator().manual_seed(7))
        return lam * (feats[0] - refined).pow(2).mean()

    before = [p.detach().clone() for p in student.parameters()]
    hyper, train_value, _ = factored_hypergradient(
        student, features, coupling, val_loss, list(dafa.parameters()), xi,
        eps_scale=eps_scale, difference=difference)
    for p, p0 in zip(student.parameters(), before):  # the virtual step left no trace
        assert torch.equal(p, p0)
    with torch.no_grad():  # the merged coupling still reports L_train(theta)
        logits, feature = student(x_train)
        refined = dafa(teacher_feat, torch.Generator().manual_seed(7))
        want = F.cross_entropy(logits, y_train) + lam * (feature - refined).pow(2).mean()
    assert abs(train_value - float(want)) < 1e-12
    return _relative_error(hyper, reference)


@pytest.mark.parametrize('difference, tolerance', [('central', 1e-5), ('forward', 1e-3)])
def test_factored_hypergradient_matches_unrolled_reference(difference, tolerance):
    """The cheap method: alpha reaches L_train only through the feature term (the coupling).
    At eps 1e-3 on this smooth (tanh) student the central difference is off by ~4e-7, the
    forward one (one student forward fewer) by ~4e-4."""
    assert _factored(difference) < tolerance
    from distill.sokd.hypergrad import factored_hypergradient, unrolled_hypergradient
    with pytest.raises(ValueError, match='factored'):
        unrolled_hypergradient(None, None, None, [], 0.5, method='factored')
    with pytest.raises(ValueError, match='difference'):
        factored_hypergradient(None, None, None, None, [], 0.5, difference='backward')


def test_factored_differences_have_their_order():
    """The error to the reference shrinks like eps (forward) and eps^2 (central): the
    difference is the only approximation, and each is the difference it says it is."""
    for difference, low, high in (('forward', 7, 14), ('central', 70, 140)):
        ratio = _factored(difference, 1e-2) / _factored(difference, 1e-3)
        assert low < ratio < high, (difference, ratio)


def test_mixture_equals_the_ops_run_in_turn_and_sample_picks_one():
    x = _feature()
    dafa = DAFA().double()
    with torch.no_grad():
        dafa.alpha.copy_(torch.randn(len(OPS), generator=torch.Generator().manual_seed(2),
                                     dtype=torch.float64))
    gen = torch.Generator().manual_seed(4)
    want = sum(w * AUGMENTATIONS[name](x, m, gen) for name, w, m in
               zip(dafa.op_names, dafa.weights(), dafa.magnitudes()))
    torch.testing.assert_close(dafa(x, torch.Generator().manual_seed(4)), want)
    # sample(): one op per call, drawn with the policy's frequencies
    with torch.no_grad():
        dafa.alpha.copy_(torch.tensor([3.0, 1.0] + [-30.0] * (len(OPS) - 2)))
    torch.manual_seed(0)
    picks = []
    for _ in range(400):
        out = dafa.sample(x, torch.Generator().manual_seed(4))
        picks.append(dafa.last_sampled)
        m = dafa.magnitudes()[dafa.op_names.index(picks[-1])]
        torch.testing.assert_close(out, AUGMENTATIONS[picks[-1]](
            x, m, torch.Generator().manual_seed(4)))
    share = picks.count(dafa.op_names[0]) / len(picks)
    assert set(picks) == set(dafa.op_names[:2]) and abs(share - 0.881) < 0.06


def test_sample_names_a_diverged_alpha():
    dafa = DAFA(ops=['identity', 'rotate'])
    with torch.no_grad():
        dafa.alpha.fill_(float('nan'))
    with pytest.raises(FloatingPointError, match='alpha is not finite'):
        dafa.sample(torch.randn(1, 2, 3, 3))


def test_preserved_buffers_leaves_statistics_and_outputs_alone():
    """Batch norms stop tracking inside (same outputs: batch statistics in training mode, and
    nothing written); other buffers are copied back; eval-mode modules are left as they are."""
    from distill.sokd.hypergrad import preserved_buffers

    class Counter(nn.Module):  # a training-mode module that writes a buffer in forward
        def __init__(self):
            super().__init__()
            self.register_buffer('calls', torch.zeros(()))

        def forward(self, x):
            self.calls += 1
            return x

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), Counter()).train()
    x = torch.randn(5, 3, 6, 6)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with preserved_buffers(net):
        inside = net(x)
        assert not net[1].track_running_stats
    assert net[1].track_running_stats
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    torch.testing.assert_close(inside, net(x))  # the tracked forward normalises alike
    assert not torch.equal(net[1].running_mean, state['1.running_mean'])  # ... and writes
