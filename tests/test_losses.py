"""Every loss against a slow, obvious float64 reference, and where its gradient goes."""
import math

import pytest
import torch

from distill.losses import (consensus_loss, divergence_loss, dkd_loss, fitnet_loss, kd_loss,
                            similarity_map)


def _features(seed=0, shape=(2, 5, 3, 4)):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64),
            torch.randn(shape, generator=g, dtype=torch.float64))


# ------------------------------------------------------------------ slow references (loops)
def ref_cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a))
                                               * math.sqrt(sum(y * y for y in b)))


def ref_adm(fs, ft, tau, which):
    """DESIGN 1.1 steps 2-5 written out with Python loops."""
    b_n, c_n, h_n, w_n = fs.shape
    total = 0.0
    for b in range(b_n):
        sims, cells = [], []
        for h in range(h_n):
            for w in range(w_n):
                vs = [fs[b, c, h, w].item() for c in range(c_n)]
                vt = [ft[b, c, h, w].item() for c in range(c_n)]
                sims.append(ref_cos(vs, vt))
        sign = 1.0 if which == 'co' else -1.0
        exps = [math.exp(sign * s / tau) for s in sims]
        weights = [e / sum(exps) for e in exps]
        for weight, s in zip(weights, sims):
            total += weight * ((1 - s) if which == 'co' else (1 + s))
    return total / b_n


def ref_kd(zs, zt, temp):
    total = 0.0
    for s_row, t_row in zip(zs.tolist(), zt.tolist()):
        ps = [math.exp(v / temp) for v in s_row]
        pt = [math.exp(v / temp) for v in t_row]
        ps = [p / sum(ps) for p in ps]
        pt = [p / sum(pt) for p in pt]
        total += sum(q * math.log(q / p) for p, q in zip(ps, pt))
    return temp * temp * total / len(zs)


def ref_dkd(zs, zt, labels, alpha, beta, temp):
    tckd = nckd = 0.0
    for s_row, t_row, y in zip(zs.tolist(), zt.tolist(), labels.tolist()):
        ps = [math.exp(v / temp) for v in s_row]
        pt = [math.exp(v / temp) for v in t_row]
        ps = [p / sum(ps) for p in ps]
        pt = [p / sum(pt) for p in pt]
        bs, bt = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
        tckd += sum(q * math.log(q / p) for p, q in zip(bs, bt))
        others = [k for k in range(len(s_row)) if k != y]
        qs = [ps[k] / (1 - ps[y]) for k in others]
        qt = [pt[k] / (1 - pt[y]) for k in others]
        nckd += sum(q * math.log(q / p) for p, q in zip(qs, qt))
    n = len(zs)
    return temp * temp * (alpha * tckd / n + beta * nckd / n)


# ------------------------------------------------------------------ values
def test_similarity_map_matches_loops():
    fs, ft = _features()
    sim = similarity_map(fs, ft)
    assert sim.shape == (2, 3, 4) and sim.dtype == torch.float32
    for b, h, w in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
        assert sim[b, h, w].item() == pytest.approx(
            ref_cos(fs[b, :, h, w].tolist(), ft[b, :, h, w].tolist()), abs=1e-6)


@pytest.mark.parametrize('tau', [0.1, 1.0, 5.0])
def test_consensus_and_divergence_match_reference(tau):
    fs, ft = _features(seed=1)
    assert consensus_loss(fs, ft, tau).item() == pytest.approx(ref_adm(fs, ft, tau, 'co'),
                                                               rel=1e-5)
    assert divergence_loss(ft, fs, tau).item() == pytest.approx(ref_adm(fs, ft, tau, 'di'),
                                                                rel=1e-5)


def test_adm_losses_bounds_and_extremes():
    fs, ft = _features(seed=2)
    assert consensus_loss(fs, fs.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert divergence_loss(-fs, fs).item() == pytest.approx(0.0, abs=1e-6)
    for tau in (0.05, 1.0, 100.0):
        for value in (consensus_loss(fs, ft, tau), divergence_loss(ft, fs, tau)):
            assert 0.0 <= value.item() <= 2.0


def test_small_tau_focuses_on_agreement():
    # one location agrees perfectly, the others are opposed: a small tau puts the consensus
    # weight on the agreeing location (loss -> 0), a large tau spreads it (loss -> mean).
    fs = torch.randn(1, 4, 1, 3, dtype=torch.float64)
    ft = -fs.clone()
    ft[..., 0] = fs[..., 0]
    assert consensus_loss(fs, ft, tau=0.01).item() < 1e-3
    assert consensus_loss(fs, ft, tau=1e4).item() == pytest.approx(4 / 3, rel=1e-3)


def test_adm_rejects_unaligned_features():
    with pytest.raises(ValueError, match=r'\(2, 5, 3, 4\).*\(2, 5, 2, 4\)'):
        consensus_loss(torch.randn(2, 5, 3, 4), torch.randn(2, 5, 2, 4))
    with pytest.raises(ValueError, match='tau'):
        consensus_loss(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2), tau=0.0)


@pytest.mark.parametrize('temp', [1.0, 4.0])
def test_kd_matches_reference(temp):
    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g,
                                                                                 dtype=torch.float64)
    assert kd_loss(zs, zt, temp).item() == pytest.approx(ref_kd(zs, zt, temp), rel=1e-5)


def test_kd_per_pixel_ignores_masked_locations():
    g = torch.Generator().manual_seed(4)
    zs, zt = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    valid = torch.rand(2, 4, 4, generator=g) > 0.5
    expected = ref_kd(zs.permute(0, 2, 3, 1)[valid].double(),
                      zt.permute(0, 2, 3, 1)[valid].double(), 2.0)
    assert kd_loss(zs, zt, 2.0, valid).item() == pytest.approx(expected, rel=1e-4)
    # changing the logits at ignored pixels changes nothing
    zs2 = zs.clone()
    zs2.permute(0, 2, 3, 1)[~valid] = 100.0
    assert kd_loss(zs2, zt, 2.0, valid).item() == pytest.approx(expected, rel=1e-4)


def test_dkd_matches_reference():
    g = torch.Generator().manual_seed(5)
    zs, zt = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g,
                                                                                 dtype=torch.float64)
    labels = torch.randint(0, 5, (6,), generator=g)
    assert dkd_loss(zs, zt, labels, 1.0, 8.0, 4.0).item() == pytest.approx(
        ref_dkd(zs, zt, labels, 1.0, 8.0, 4.0), rel=1e-4)


def test_fitnet_is_mse():
    fs, ft = _features(seed=6)
    assert fitnet_loss(fs, ft).item() == pytest.approx(((fs - ft) ** 2).mean().item(), rel=1e-6)


# ------------------------------------------------------------------ where gradients go
def _grads(loss_fn, *tensors):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    loss_fn(*leaves).backward()
    return [leaf.grad for leaf in leaves]


def _has_grad(grad):
    return grad is not None and grad.abs().sum().item() > 0


def test_consensus_gradient_reaches_student_only():
    fs, ft = _features(seed=7)
    g_student, g_teacher = _grads(lambda s, t: consensus_loss(s, t, 0.5), fs, ft)
    assert _has_grad(g_student) and not _has_grad(g_teacher)


def test_divergence_gradient_reaches_teacher_only():
    fs, ft = _features(seed=8)
    g_teacher, g_student = _grads(lambda t, s: divergence_loss(t, s, 0.5), ft, fs)
    assert _has_grad(g_teacher) and not _has_grad(g_student)


def test_weights_carry_no_gradient():
    """The softmax weights are constants: the gradient equals that of sum(w.detach() * d)."""
    fs, ft = _features(seed=9)
    fs = fs.requires_grad_(True)
    consensus_loss(fs, ft, 0.3).backward()
    manual = fs.detach().clone().requires_grad_(True)
    sim = torch.nn.functional.cosine_similarity(manual.detach(), ft, dim=1)
    weights = torch.softmax(sim.flatten(1) / 0.3, dim=1).view_as(sim)
    dist = 1 - torch.nn.functional.cosine_similarity(manual, ft, dim=1)
    ((weights * dist).sum((1, 2)).mean()).backward()
    torch.testing.assert_close(fs.grad, manual.grad)


@pytest.mark.parametrize('loss', ['kd', 'dkd', 'fitnet'])
def test_distillation_gradient_reaches_learner_only(loss):
    g = torch.Generator().manual_seed(10)
    if loss == 'fitnet':
        learner, target = _features(seed=10)
        fn = fitnet_loss
    else:
        learner, target = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
        labels = torch.randint(0, 6, (4,), generator=g)
        fn = (lambda a, b: kd_loss(a, b, 4.0)) if loss == 'kd' else (
            lambda a, b: dkd_loss(a, b, labels))
    g_learner, g_target = _grads(fn, learner, target)
    assert _has_grad(g_learner) and not _has_grad(g_target)
