"""``dam.compile``: DAM's pass through ``torch.compile`` gives the eager pass's targets, losses,
masks and gradients, and falls back to eager code where compiling fails (README, "SoKD")."""
import warnings

import pytest
import torch

from distill import build_distiller
from distill.data.shapes import ShapesClassification
from distill.sokd import dam_compile
from distill.sokd.dam_pass import check_dam_cfg
from distill.sokd.dam_targets import cam_targets

pytestmark = pytest.mark.end_to_end  # inductor compiles for ~30-50 s: collected first (conftest.py)

STUDENT = dict(type='tiny_cnn', num_classes=6, width=4)
TEACHER = dict(type='tiny_cnn', num_classes=6, width=8)


def _sokd(compile_dam):
    torch.manual_seed(0)
    return build_distiller(dict(
        type='SoKD', dafa=dict(sample=True), dam=dict(channels=8, compile=compile_dam),
        base=dict(type='FitNet', student=STUDENT, teacher=TEACHER,
                  adapter=dict(type='ClassifierAdapter', probe_input_size=16),
                  taps=[dict(student='stage3', teacher='stage3')], random_teacher=True)))


def _batch(seed):
    data = ShapesClassification(num_samples=8, seed=seed, image_size=16, num_classes=6)
    items = [data[i] for i in range(8)]
    return dict(inputs=torch.stack([item['inputs'] for item in items]),
                labels=torch.tensor([int(item['labels']) for item in items]))


def test_the_compiled_pass_equals_the_eager_pass():
    """Two steps and an arch step of SoKD+FitNet with DAM every step: the compiled pass's
    terms, masks and every gradient equal the eager pass's up to float32 rounding (the fused
    kernels sum in another order); the CAM targets' centres, sizes and offsets exactly."""
    runs = {}
    for compile_dam in (False, True):
        distiller = _sokd(compile_dam)
        record = []
        for step in range(2):
            batch = _batch(step)
            torch.manual_seed(10 + step)  # DAFA's draws alike in both runs
            terms = distiller(batch)
            distiller.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            grads = {name: p.grad.clone() for name, p in distiller.named_parameters()
                     if p.grad is not None}
            record.append(({k: v.detach() for k, v in terms.items()}, grads))
        prepared, student, teacher = distiller.run(batch)
        with torch.no_grad():  # the arch step's mask-only pass
            _, mask = distiller.dam_pass.run(
                prepared, distiller.base.student_features(student.feats)[-1],
                distiller.base.teacher_features(teacher.feats)[-1], teacher.head, terms=False)
        targets = distiller.dam_pass.anchor_targets(prepared, (4, 4), teacher.head)
        runs[compile_dam] = record, mask, targets
    (eager, eager_mask, eager_targets), (fused, fused_mask, fused_targets) = runs[False], runs[True]
    for (terms0, grads0), (terms1, grads1) in zip(eager, fused):
        assert terms0.keys() == terms1.keys() and grads0.keys() == grads1.keys()
        for name in terms0:
            torch.testing.assert_close(terms1[name], terms0[name], rtol=1e-5, atol=1e-6)
        for name in grads0:
            torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-4, atol=1e-6)
    assert torch.equal(fused_mask, eager_mask)
    for key in ('centres', 'size', 'offset'):
        assert torch.equal(fused_targets[key], eager_targets[key]), key
    torch.testing.assert_close(fused_targets['heatmap'], eager_targets['heatmap'])
    assert dam_compile.compiled(cam_targets).compiled is not None  # it did compile
    assert not any(wrapper.failed for wrapper in dam_compile._COMPILED.values())


def test_a_failed_compile_runs_the_function_eagerly_with_one_warning(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError('no C++ compiler\nmore lines')
        return run
    monkeypatch.setattr(dam_compile.torch, 'compile', broken_compile)
    wrapper = dam_compile.CompiledOrEager(lambda x: x + 1)
    with pytest.warns(RuntimeWarning, match='no C.. compiler.*runs it eagerly'):
        assert wrapper(torch.tensor(1.0)) == 2.0
    assert wrapper.failed
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once: later calls go straight to the eager function
        assert wrapper(torch.tensor(2.0)) == 3.0


def test_the_functions_own_errors_are_raised(monkeypatch):
    def fails(x):
        raise ValueError('bad boxes')
    monkeypatch.setattr(dam_compile.torch, 'compile', lambda fn, **kwargs: fn)
    wrapper = dam_compile.CompiledOrEager(fails)
    with pytest.raises(ValueError, match='bad boxes'):
        wrapper(torch.zeros(1))
    assert not wrapper.failed  # not taken for a compile failure


def test_compile_must_be_a_bool():
    assert check_dam_cfg({})['compile'] is False
    with pytest.raises(ValueError, match='dam compile must be True or False'):
        check_dam_cfg(dict(compile='yes'))
