"""Every loss against a slow, obvious float64 reference, and where its gradient goes."""
import math

import pytest
import torch

from distill.losses import (consensus_loss, divergence_loss, dkd_loss, fitnet_loss, kd_loss,
                            similarity_map)
from distill.losses.adm import NORM_FLOOR, adm_terms


def _features(seed=0, shape=(2, 5, 3, 4)):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64),
            torch.randn(shape, generator=g, dtype=torch.float64))


# ------------------------------------------------------------------ slow references (loops)
def ref_cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a))
                                               * math.sqrt(sum(y * y for y in b)))


def ref_cos_e(a, b, mean_sq_a, mean_sq_b, eps=NORM_FLOOR):
    """The floored cosine of losses/adm.py: <a,b> / (sqrt(|a|^2 + e*m_a) sqrt(|b|^2 + e*m_b))."""
    return sum(x * y for x, y in zip(a, b)) / (
        math.sqrt(sum(x * x for x in a) + eps * mean_sq_a)
        * math.sqrt(sum(y * y for y in b) + eps * mean_sq_b))


def ref_similarity(fs, ft, b):
    """cos_e at every location of sample b, row-major, with Python loops."""
    _, c_n, h_n, w_n = fs.shape
    cells = [(h, w) for h in range(h_n) for w in range(w_n)]
    vectors = [([fs[b, c, h, w].item() for c in range(c_n)],
                [ft[b, c, h, w].item() for c in range(c_n)]) for h, w in cells]
    mean_s = sum(sum(x * x for x in vs) for vs, _ in vectors) / len(cells)
    mean_t = sum(sum(y * y for y in vt) for _, vt in vectors) / len(cells)
    return [ref_cos_e(vs, vt, mean_s, mean_t) for vs, vt in vectors]


def ref_adm(fs, ft, tau, which):
    """ADM's steps (README, "ADM as implemented"; with the floored cosine) written out with Python
    loops."""
    b_n = fs.shape[0]
    total = 0.0
    for b in range(b_n):
        sims = ref_similarity(fs, ft, b)
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
    for b in range(2):
        torch.testing.assert_close(sim[b].flatten().double(),
                                   torch.tensor(ref_similarity(fs, ft, b), dtype=torch.float64),
                                   atol=1e-6, rtol=0)
    # at locations of typical norm the floored cosine is the cosine to within about 1 %
    for b, h, w in [(0, 0, 0), (1, 2, 3)]:
        plain = ref_cos(fs[b, :, h, w].tolist(), ft[b, :, h, w].tolist())
        assert abs(sim[b, h, w].item() - plain) < 0.02 * max(1.0, abs(plain))


@pytest.mark.parametrize('tau', [0.1, 1.0, 5.0])
def test_consensus_and_divergence_match_reference(tau):
    fs, ft = _features(seed=1)
    assert consensus_loss(fs, ft, tau).item() == pytest.approx(ref_adm(fs, ft, tau, 'co'),
                                                               rel=1e-5)
    assert divergence_loss(ft, fs, tau).item() == pytest.approx(ref_adm(fs, ft, tau, 'di'),
                                                                rel=1e-5)


def test_adm_losses_bounds_and_extremes():
    fs, ft = _features(seed=2)
    # identical / opposed maps of equal norm everywhere: cos_e = 1/(1+e) / -1/(1+e)
    flat = fs / fs.norm(dim=1, keepdim=True)
    assert consensus_loss(flat, flat.clone()).item() == pytest.approx(
        1 - 1 / (1 + NORM_FLOOR), abs=1e-6)
    assert divergence_loss(-flat, flat).item() == pytest.approx(1 - 1 / (1 + NORM_FLOOR),
                                                                abs=1e-6)
    for tau in (0.05, 1.0, 100.0):
        for value in (consensus_loss(fs, ft, tau), divergence_loss(ft, fs, tau)):
            assert 0.0 <= value.item() <= 2.0


def test_norm_floor_is_one_hundredth_of_the_mean_squared_norm():
    """The floor ``e`` of ``cos_e`` written out (1e-2, README "ADM as implemented"), not read
    from the module: identical maps of unit norm at every location have ``cos_e = 1/1.01``, in
    the reference losses and in the fused ``adm_terms``; at a location of a tenth of the
    others' norm (``|x|^2 = 0.01``) of two identical maps, ``cos_e = 0.01 / (0.01 + 0.01 m)``
    with ``m`` the sample's mean squared norm."""
    g = torch.Generator().manual_seed(4)
    flat = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    flat = flat / flat.norm(dim=1, keepdim=True)
    same = 1 - 1 / 1.01
    assert consensus_loss(flat, flat.clone()).item() == pytest.approx(same, abs=1e-6)
    assert divergence_loss(-flat, flat).item() == pytest.approx(same, abs=1e-6)
    terms = adm_terms(flat.float(), flat.float().clone(), tau=1.0)
    assert terms['co'].item() == pytest.approx(same, abs=1e-6)
    # one location of a tenth of the norm, both maps alike: m = (11 + 0.01) / 12 per sample
    small = flat.clone()
    small[:, :, 0, 0] *= 0.1
    m = (11 + 0.01) / 12
    expected = 0.01 / (0.01 + 0.01 * m)
    assert similarity_map(small, small.clone())[:, 0, 0].tolist() == pytest.approx(
        [expected] * 2, abs=1e-6)


def test_small_tau_focuses_on_agreement():
    # one location agrees perfectly, the others are opposed (equal norms everywhere, so
    # cos_e = +-1/(1+e)): a small tau puts the consensus weight on the agreeing location
    # (loss -> 1 - 1/(1+e)), a large tau spreads it (loss -> the mean over the locations).
    g = torch.Generator().manual_seed(3)
    fs = torch.randn(1, 4, 1, 3, generator=g, dtype=torch.float64)
    fs = fs / fs.norm(dim=1, keepdim=True)
    ft = -fs.clone()
    ft[..., 0] = fs[..., 0]
    c = 1 / (1 + NORM_FLOOR)
    assert consensus_loss(fs, ft, tau=0.01).item() == pytest.approx(1 - c, abs=1e-6)
    assert consensus_loss(fs, ft, tau=1e4).item() == pytest.approx(
        ((1 - c) + 2 * (1 + c)) / 3, rel=1e-3)


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
    sim = similarity_map(manual.detach(), ft)
    weights = torch.softmax(sim.flatten(1) / 0.3, dim=1).view_as(sim)
    eps = NORM_FLOOR * manual.detach().square().sum(1).mean((1, 2)).view(-1, 1, 1)
    eps_t = NORM_FLOOR * ft.square().sum(1).mean((1, 2)).view(-1, 1, 1)
    dist = 1 - (manual * ft).sum(1) / ((manual.square().sum(1) + eps).sqrt()
                                        * (ft.square().sum(1) + eps_t).sqrt())
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


@pytest.mark.parametrize('tau,standardise,divergence', [
    (0.2, False, 'repel'), (1.0, False, 'repel'), (1.0, True, 'repel'), (0.2, False, 'mutual')])
def test_fused_adm_terms_equal_the_single_losses_in_value_and_gradient(tau, standardise,
                                                                       divergence):
    fs, ft = _features(seed=11)
    values, grads = {}, {}
    for how in ('single', 'fused'):
        s, t = fs.clone().requires_grad_(True), ft.clone().requires_grad_(True)
        if how == 'single':
            co = consensus_loss(s, t, tau, standardise=standardise)
            di = divergence_loss(t, s, tau, standardise=standardise, divergence=divergence)
        else:
            terms = adm_terms(s, t, tau, co_weight=1.0, di_weight=10.0, standardise=standardise,
                              divergence=divergence)
            co, di = terms['co'], terms['di'] / 10
        (co + 10 * di).backward()  # distinct weights: a term routed to the wrong side shows
        values[how], grads[how] = (co.item(), di.item()), (s.grad, t.grad)
    assert values['fused'] == pytest.approx(values['single'], rel=1e-6)
    # both paths compute in float32 (the inputs are float64): float32 tolerances; the float64
    # truth of value and gradient is tests/test_adm_terms.py
    for side in (0, 1):
        torch.testing.assert_close(grads['fused'][side], grads['single'][side],
                                   rtol=1e-5, atol=1e-7)
    assert adm_terms(fs, ft, tau, di_weight=0).keys() == {'co'}
    assert adm_terms(fs, ft, tau, co_weight=0).keys() == {'di'}
    assert adm_terms(fs, ft, tau, co_weight=0, di_weight=0) == {}


def test_gradient_stays_bounded_at_an_all_zero_location():
    """Regression: post-ReLU maps have all-zero locations (black background). The plain cosine
    gave them a gradient of ~1e8 (1/eps) and one SGD step wrecked the student."""
    g = torch.Generator().manual_seed(12)
    fs = torch.rand(2, 16, 4, 4, generator=g, dtype=torch.float64)
    ft = torch.rand(2, 16, 4, 4, generator=g, dtype=torch.float64)
    fs[:, :, 0, 0] = 0.0  # a dead location of the student, a dead one of the teacher
    ft[:, :, 3, 3] = 0.0
    s, t = fs.clone().requires_grad_(True), ft.clone().requires_grad_(True)
    terms = adm_terms(s, t, 1.0)
    (terms['co'] + terms['di']).backward()
    # at a zero location x_l the gradient is w_l/B * (unit other side) / sqrt(e * m(x)):
    # at most 1/sqrt(e * m(x)), the size of the gradient at a location of norm sqrt(e * m)
    bound_s = 1 / (NORM_FLOOR * fs.square().sum(1).mean((1, 2))).sqrt()
    bound_t = 1 / (NORM_FLOOR * ft.square().sum(1).mean((1, 2))).sqrt()
    assert (s.grad[:, :, 0, 0].norm(dim=1) <= bound_s).all()
    assert (t.grad[:, :, 3, 3].norm(dim=1) <= bound_t).all()
    # the plain cosine (the first formulation) gave such a location a gradient ~1e6 larger
    plain = fs.clone().requires_grad_(True)
    (1 - torch.nn.functional.cosine_similarity(plain, ft, dim=1)).mean().backward()
    assert plain.grad[:, :, 0, 0].norm(dim=1).min() > 1e5 * bound_s.max()
    assert torch.isfinite(s.grad).all() and torch.isfinite(t.grad).all()


def test_standardised_weights_split_the_map_between_the_terms():
    """With standardise=True the weights depend on S only through its per-sample z-score: the
    same contrast whatever the spread of S, so w_co and w_di concentrate on opposite ends."""
    fs, ft = _features(seed=13)
    sim = similarity_map(fs, ft)
    from distill.losses.adm import location_weights
    for scale in (0.05, 1.0):
        shifted = 0.5 + scale * (sim - sim.mean())
        w = location_weights(shifted, 1.0, 'agreement', standardise=True)
        z = (shifted - shifted.flatten(1).mean(1).view(-1, 1, 1)) / (
            shifted.flatten(1).std(1, unbiased=False).view(-1, 1, 1) + 1e-6)
        reference = torch.softmax(z.flatten(1), dim=1).view_as(z)
        torch.testing.assert_close(w, reference.float())
