"""The fused ADM terms (``adm_terms``, ``_ADMTerms``) against a float64 autograd of the formula.

``_ADMTerms`` computes both sides stacked and writes its gradient out by hand; here the same
losses are written the obvious way in float64 (``cos_e`` per location, softmax weights as
constants, ``sg`` as ``detach``) and autograd gives the reference gradient. Distinct term
weights make a gradient routed to the wrong side, or with the wrong sign, show.
"""
import pytest
import torch

from distill.losses.adm import NORM_FLOOR, adm_terms


def _cos_e(a, b):
    """<a_l, b_l> / (sqrt(|a_l|^2 + e m(a)) sqrt(|b_l|^2 + e m(b))), the floors constant."""
    floor_a = NORM_FLOOR * a.detach().square().sum(1).mean((1, 2), keepdim=True)
    floor_b = NORM_FLOOR * b.detach().square().sum(1).mean((1, 2), keepdim=True)
    return (a * b).sum(1) / ((a.square().sum(1) + floor_a).sqrt()
                             * (b.square().sum(1) + floor_b).sqrt())


def reference(fs, ft, tau, co_weight, di_weight, standardise=False, divergence='repel'):
    """(co * L_co, di * L_di) in float64; L_co's graph reaches fs only, L_di's ft only.
    ``'repel'``: L_di weighs 1 + cos by w_di; ``'mutual'``: 1 - cos by w_co."""
    fs, ft = fs.double(), ft.double()
    sim = _cos_e(fs.detach(), ft.detach()).flatten(1)
    if standardise:
        sim = (sim - sim.mean(1, keepdim=True)) / (sim.std(1, unbiased=False, keepdim=True)
                                                   + 1e-6)
    w_co = torch.softmax(sim / tau, dim=1)
    w_di = torch.softmax(-sim / tau, dim=1)
    co = (w_co * (1 - _cos_e(fs, ft.detach()).flatten(1))).sum(1).mean()
    if divergence == 'mutual':
        di = (w_co * (1 - _cos_e(ft, fs.detach()).flatten(1))).sum(1).mean()
    else:
        di = (w_di * (1 + _cos_e(ft, fs.detach()).flatten(1))).sum(1).mean()
    return co_weight * co, di_weight * di


def _run(fn, fs, ft, seed):
    """Values and input gradients of ``fn(s, t) -> (co, di)`` under a random mix of the two."""
    s, t = fs.clone().requires_grad_(True), ft.clone().requires_grad_(True)
    co, di = fn(s, t)
    mix = torch.rand(2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    (mix[0] * (co if co is not None else 0) + mix[1] * (di if di is not None else 0)).backward()
    return co, di, s.grad, t.grad


def _fused(tau, co_weight, di_weight, standardise=False, divergence='repel'):
    def fn(s, t):
        terms = adm_terms(s, t, tau, co_weight, di_weight, standardise, divergence)
        assert terms.keys() == {name for name, w in (('co', co_weight), ('di', di_weight)) if w}
        return terms.get('co'), terms.get('di')
    return fn


def _close(actual, expected, scale_of, rtol):
    """Within ``rtol`` of the largest reference entry (float32 arithmetic inside)."""
    assert actual is not None and expected is not None
    atol = rtol * float(scale_of.abs().max())
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize('shape', [(2, 5, 3, 4), (3, 6, 1, 1), (2, 16, 8, 8)])
@pytest.mark.parametrize('tau,weights,standardise,divergence', [
    (0.2, (1.0, 10.0), False, 'repel'), (1.0, (3.0, 0.5), True, 'repel'),
    (0.5, (2.0, 0.0), False, 'repel'), (1.0, (0.0, 4.0), True, 'repel'),
    (0.2, (1.0, 10.0), False, 'mutual'), (1.0, (3.0, 0.5), True, 'mutual'),
    (1.0, (0.0, 4.0), False, 'mutual')])
def test_fused_terms_match_float64_autograd(shape, tau, weights, standardise, divergence):
    g = torch.Generator().manual_seed(sum(shape))
    fs = torch.randn(shape, generator=g, dtype=torch.float64)
    ft = torch.randn(shape, generator=g, dtype=torch.float64)
    co_w, di_w = weights
    got = _run(_fused(tau, co_w, di_w, standardise, divergence), fs, ft, seed=1)
    ref = _run(lambda s, t: reference(s, t, tau, co_w, di_w, standardise, divergence), fs, ft,
               seed=1)
    # each term's value; a term of weight 0 is absent, and its side gets no gradient
    for term, weight in enumerate(weights):
        if weight:
            assert got[term].dtype == torch.float32
            assert got[term].item() == pytest.approx(ref[term].item(), rel=1e-5, abs=1e-6)
        else:
            assert got[term] is None
            assert got[2 + term] is None  # co off: no student gradient; di off: no teacher
    for side, weight in enumerate(weights):
        if weight:
            assert got[2 + side].dtype == torch.float64
            _close(got[2 + side], ref[2 + side], ref[2 + side], rtol=1e-5)


def test_fused_terms_reference_can_fail():
    """The comparison above sees a gradient sent to the wrong side or with the wrong sign."""
    fs, ft = torch.randn(2, 5, 3, 4, dtype=torch.float64), torch.randn(2, 5, 3, 4,
                                                                       dtype=torch.float64)
    got = _run(_fused(0.5, 1.0, 10.0), fs, ft, seed=2)
    swapped = _run(lambda s, t: reference(s, t, 0.5, 10.0, 1.0), fs, ft, seed=2)
    flipped = _run(lambda s, t: tuple(-v for v in reference(s, t, 0.5, 1.0, 10.0)), fs, ft,
                   seed=2)
    other_reading = _run(lambda s, t: reference(s, t, 0.5, 1.0, 10.0, divergence='mutual'),
                         fs, ft, seed=2)
    for wrong in (swapped, flipped, other_reading):
        with pytest.raises(AssertionError):
            for side in (0, 1):
                _close(got[2 + side], wrong[2 + side], wrong[2 + side], rtol=1e-5)


def test_mutual_reading_pulls_the_teacher_where_repel_pushes_it():
    """Where the two agree most, 'mutual' moves the teacher toward the student (its gradient
    step raises the cosine) and 'repel' moves it away; neither reading touches the student."""
    g = torch.Generator().manual_seed(8)
    fs = torch.randn(1, 6, 2, 2, generator=g, dtype=torch.float64)
    ft = fs + 0.3 * torch.randn(1, 6, 2, 2, generator=g, dtype=torch.float64)
    for divergence, rises in (('mutual', True), ('repel', False)):
        t = ft.clone().requires_grad_(True)
        s = fs.clone().requires_grad_(True)
        adm_terms(s, t, 1.0, 0.0, 1.0, divergence=divergence)['di'].backward()
        assert s.grad is None
        before = _cos_e(fs, ft).sum()
        after = _cos_e(fs, ft - 1e-3 * t.grad).sum()
        assert (after > before) == rises, divergence


def test_unknown_divergence_reading_is_refused():
    with pytest.raises(ValueError, match="divergence is one of"):
        adm_terms(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2), 1.0, divergence='push')


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    g = torch.Generator().manual_seed(5)
    fs = torch.randn(2, 8, 3, 3, generator=g).to(dtype)
    ft = torch.randn(2, 8, 3, 3, generator=g).to(dtype)
    got = _run(_fused(0.5, 1.0, 2.0), fs, ft, seed=3)
    ref = _run(lambda s, t: reference(s, t, 0.5, 1.0, 2.0), fs, ft, seed=3)
    for term in (0, 1):  # float32 values of the rounded inputs: float32 accuracy
        assert got[term].dtype == torch.float32
        assert got[term].item() == pytest.approx(ref[term].item(), rel=1e-5)
    for side in (0, 1):  # gradients come back in the input dtype
        assert got[2 + side].dtype == dtype
        _close(got[2 + side], ref[2 + side].to(dtype).double(), ref[2 + side], rtol=1e-2)


def test_autocast_and_channels_last_give_the_float32_result():
    g = torch.Generator().manual_seed(6)
    fs, ft = torch.randn(2, 8, 4, 4, generator=g), torch.randn(2, 8, 4, 4, generator=g)
    plain = _run(_fused(1.0, 1.0, 1.0), fs, ft, seed=4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        autocast = _run(_fused(1.0, 1.0, 1.0), fs, ft, seed=4)
    last = _run(_fused(1.0, 1.0, 1.0), fs.to(memory_format=torch.channels_last),
                ft.to(memory_format=torch.channels_last), seed=4)
    for other in (autocast, last):
        for a, b in zip(plain, other):
            assert b.dtype == torch.float32
            torch.testing.assert_close(a, b)


def test_all_zero_map_gives_finite_values_and_gradients():
    """A sample whose whole map is zero on one side (a dead network) has cos_e = 0 at every
    location: L_co = L_di = 1 for it, and nothing is NaN."""
    g = torch.Generator().manual_seed(7)
    fs, ft = torch.randn(3, 4, 3, 3, generator=g), torch.randn(3, 4, 3, 3, generator=g)
    fs[0] = 0.0  # dead student map in sample 0, dead teacher map in sample 2
    ft[2] = 0.0
    co, di, g_s, g_t = _run(_fused(1.0, 1.0, 1.0), fs, ft, seed=5)
    assert torch.isfinite(g_s).all() and torch.isfinite(g_t).all()
    live_co, live_di = (v.item() for v in reference(fs[1:2], ft[1:2], 1.0, 1.0, 1.0))
    assert co.item() == pytest.approx((1.0 + live_co + 1.0) / 3, rel=1e-5)
    assert di.item() == pytest.approx((1.0 + live_di + 1.0) / 3, rel=1e-5)
    # a live map facing a dead one gets no gradient: (u_dead - c u_live) = 0
    assert g_t[0].abs().max() == 0 and g_s[2].abs().max() == 0
