"""The SoKD distiller around each base: terms, gradient routing, the search protocol, runs."""
import math

import pytest
import torch

from distill import build_distiller
from distill.data.shapes import ShapesClassification

STUDENT = dict(type='tiny_cnn', num_classes=6, width=4)
TEACHER = dict(type='tiny_cnn', num_classes=6, width=8)
ADAPTER = dict(type='ClassifierAdapter', probe_input_size=16)
TAPS = [dict(student='stage2', teacher='stage2'), dict(student='stage3', teacher='stage3')]
# the offline bases distil from a random frozen teacher (random_teacher: meant here)
BASES = dict(
    FitNet=dict(type='FitNet', taps=TAPS, random_teacher=True),
    KD=dict(type='KD', random_teacher=True),
    DKD=dict(type='DKD', random_teacher=True),
    ADM=dict(type='ADM', taps=TAPS, online=True, warmup=0.0),  # terms at full weight at once
    KD_online=dict(type='KD', online=True),
)
FEATURE_TERM = dict(FitNet='student.fitnet', ADM='student.co', KD='student.kd',
                    DKD='student.kd', KD_online='student.kd')


def base_cfg(name):
    return dict(BASES[name], student=STUDENT, teacher=TEACHER, adapter=ADAPTER)


def make(name, **kw):
    torch.manual_seed(0)
    kw.setdefault('dam', dict(channels=8))
    return build_distiller(dict(type='SoKD', base=base_cfg(name), **kw))


def batch(seed=0, size=8):
    dataset = ShapesClassification(num_samples=size, seed=seed, image_size=16, num_classes=6)
    items = [dataset[i] for i in range(size)]
    return dict(inputs=torch.stack([item['inputs'] for item in items]),
                labels=torch.tensor([int(item['labels']) for item in items]))


def _groups(distiller):
    dam = distiller.dam
    return dict(student=distiller.student, teacher=distiller.teacher,
                connectors=distiller.base.connectors, dam_teacher=dam.teacher_proj,
                dam_student=dam.student_proj,
                dam_heads=torch.nn.ModuleList([dam.hidden, dam.out]),
                dafa=distiller.dafa)


EXPECTED = {
    'student.task': {'student'},
    'student.fitnet': {'student', 'connectors'},
    'student.co': {'student', 'connectors'},
    'student.kd': {'student'},
    'student.dam': {'student', 'dam_student', 'dam_heads'},
    'dam.anchor': {'dam_teacher', 'dam_heads'},
    'teacher.task': {'teacher'},
    'teacher.kd': {'teacher'},
    'teacher.di': {'teacher'},
}


@pytest.mark.parametrize('name', list(BASES))
def test_each_term_reaches_only_its_parameters(name):
    distiller = make(name)
    terms = distiller(batch())
    expected_names = {'student.task', FEATURE_TERM[name], 'student.dam', 'dam.anchor'}
    if name == 'ADM':
        expected_names |= {'teacher.task', 'teacher.kd', 'teacher.di', 'student.kd'}
    if name == 'KD_online':
        expected_names |= {'teacher.task', 'teacher.kd'}
    assert set(terms) == expected_names
    for term in terms:
        distiller.zero_grad(set_to_none=True)
        distiller(batch())[term].backward()
        reached = {group for group, module in _groups(distiller).items()
                   if any(p.grad is not None and p.grad.abs().sum() > 0
                          for p in module.parameters())}
        assert reached == EXPECTED[term], term


@pytest.mark.parametrize('name', ['FitNet', 'KD', 'DKD', 'ADM'])
def test_without_dafa_and_dam_it_is_the_base(name):
    torch.manual_seed(0)
    base = build_distiller(base_cfg(name))
    torch.manual_seed(0)
    wrapped = build_distiller(dict(type='SoKD', base=base_cfg(name), dafa=None, dam=None))
    wrapped.load_state_dict(base.state_dict(), strict=False)
    assert wrapped.arch_parameters() == [] and not wrapped.wants_arch_step(1, 0)
    base_terms, wrapped_terms = base(batch()), wrapped(batch())
    assert set(base_terms) == set(wrapped_terms)
    for term, value in base_terms.items():
        torch.testing.assert_close(wrapped_terms[term], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', ['KD', 'KD_online'])
def test_logits_base_distils_the_refined_teacher_logits(name):
    """DAFA on, a logits base: ``student.kd`` is ``kd * T^2 KL`` of the student's logits to the
    teacher's head on the refined feature, ``forward_head(ft_ref)``, written out with
    ``kd_loss``; not the base's KD to the teacher's own logits. Online, ``teacher.kd`` is the
    base's mirror term (the teacher learns from the student, not from DAFA)."""
    from distill.losses import kd_loss
    distiller = make(name, dafa=dict(sample=False)).eval()  # the mixture: never the identity
    seen = {}
    run, refine = distiller.run, distiller.refine

    def spy_run(data):
        seen['run'] = run(data)
        return seen['run']

    def spy_refine(feature, generator=None, sample=False):
        seen['refined'] = refine(feature, generator, sample)
        return seen['refined']

    distiller.run, distiller.refine = spy_run, spy_refine
    terms = distiller(batch())
    _, student, teacher = seen['run']
    base = distiller.base
    assert not torch.allclose(seen['refined'], teacher.head)
    with torch.no_grad():
        refined_logits = distiller.teacher.forward_head(seen['refined'])
    logits = student.out.outputs
    expected = base.loss_weights['kd'] * kd_loss(logits, refined_logits, base.temperature)
    torch.testing.assert_close(terms['student.kd'], expected)
    unrefined = base.loss_weights['kd'] * kd_loss(logits, teacher.out.outputs, base.temperature)
    assert not torch.allclose(terms['student.kd'], unrefined)
    if base.online:
        torch.testing.assert_close(terms['teacher.kd'], base.loss_weights['kd'] * kd_loss(
            teacher.out.outputs, logits, base.temperature))


def test_a_training_step_applies_one_sampled_op_by_default():
    """``dafa=dict()`` (the default) samples: a forward applies one op drawn from the policy
    (``DAFA.sample``), not the mixture of all of them; ``sample=False`` mixes."""
    calls = []
    for dafa, expected in ((dict(), 'sample'), (dict(sample=False), 'mixture')):
        distiller = make('FitNet', dafa=dafa).train()
        sample, mixture = distiller.dafa.sample, distiller.dafa.forward
        distiller.dafa.sample = lambda *a, **k: calls.append('sample') or sample(*a, **k)
        distiller.dafa.forward = lambda *a, **k: calls.append('mixture') or mixture(*a, **k)
        distiller(batch())
        assert set(calls) == {expected}, dafa
        calls.clear()


def test_ablations_are_config_changes():
    dafa_only = make('FitNet', dam=None)
    assert 'student.dam' not in dafa_only(batch()) and dafa_only.arch_parameters()
    dam_only = make('FitNet', dafa=None)
    assert 'student.dam' in dam_only(batch()) and dam_only.arch_parameters() == []
    with pytest.raises(KeyError, match='no loss term'):
        make('FitNet', loss_weights=dict(fitnet=1.0))


@pytest.mark.parametrize('method', ['exact', 'finite_difference', 'factored'])
@pytest.mark.parametrize('name', ['FitNet', 'DKD', 'ADM'])
def test_arch_backward_fills_grads_and_leaves_the_networks_alone(name, method):
    distiller = make(name, hypergrad=method, xi=0.5)
    distiller.train()
    state = {k: v.clone() for k, v in distiller.state_dict().items()}
    logs = distiller.arch_backward(batch(0), batch(1))
    assert set(logs) == {'arch.train_loss', 'arch.val_loss', 'arch.grad_norm'}
    alpha, magnitudes = distiller.arch_parameters()
    assert alpha.grad is not None and float(alpha.grad.abs().sum()) > 0
    assert float(magnitudes.grad.abs().sum()) > 0
    for key, value in distiller.state_dict().items():  # BN statistics included
        assert torch.equal(value, state[key]), key
    for p in distiller.parameters():
        if all(p is not a for a in distiller.arch_parameters()):
            assert p.grad is None


@pytest.mark.parametrize('difference', ['forward', 'central'])
@pytest.mark.parametrize('name', ['FitNet', 'KD'])
def test_factored_hypergradient_agrees_with_the_exact_one(name, difference):
    """The default (cheap) method against torch.func's exact one on the whole distiller
    (DAM mask, taps, connectors or the teacher head), in float64, same augmentation draws.
    The difference step is small here: across ReLU kinks its error is O(eps) with either
    difference (at the default 1e-3, ~1.5% for FitNet, ~0.1-0.3% for KD, alike)."""
    hyper = {}
    for method in ('exact', 'factored'):
        distiller = make(name, hypergrad=method, xi=0.5, hypergrad_eps=1e-6,
                         hypergrad_difference=difference).double().train()
        with torch.no_grad():
            distiller.dafa.alpha.copy_(torch.linspace(-1, 1, len(distiller.dafa.op_names)))
        data = {k: v.double() if v.is_floating_point() else v for k, v in batch(0).items()}
        val = {k: v.double() if v.is_floating_point() else v for k, v in batch(1).items()}
        torch.manual_seed(3)
        distiller.arch_backward(data, val)
        hyper[method] = torch.cat([p.grad.flatten() for p in distiller.arch_parameters()])
    assert float(hyper['exact'].norm()) > 0
    error = (hyper['factored'] - hyper['exact']).norm() / hyper['exact'].norm()
    assert float(error) < 1e-5


def test_search_schedule_policy_and_checkpoint():
    distiller = make('KD', arch_interval=3, search_epochs=2)
    assert [distiller.wants_arch_step(1, s) for s in range(4)] == [True, False, False, True]
    assert distiller.wants_arch_step(2, 0) and not distiller.wants_arch_step(3, 0)
    policy = distiller.policy()
    assert len(policy['weights']) >= 9
    assert set(policy) == {'weights', 'magnitudes', 'entropy', 'top'}
    assert policy['entropy'] == pytest.approx(math.log(len(policy['weights'])))
    assert [len(entry) for entry in policy['top']] == [3, 3, 3]
    scalars = distiller.policy_scalars()
    assert scalars['policy/entropy'] == policy['entropy']
    assert scalars['policy/weight/identity'] == policy['weights']['identity']
    assert scalars['policy/magnitude/rotate'] == policy['magnitudes']['rotate']
    assert {'dafa.alpha', 'dafa.magnitude_logits'} <= set(distiller.state_dict())
    main = [p for p in distiller.parameters()
            if all(p is not a for a in distiller.arch_parameters())]
    assert any(p is distiller.dam.hidden.weight for p in main)


@pytest.mark.parametrize('name', ['FitNet', 'KD', 'DKD', 'ADM'])
def test_short_shapes_run(name):
    """A few steps of the engine's protocol: every term finite, the policy moves, the
    student learns."""
    distiller = make(name, arch_interval=2, xi=0.05)
    distiller.train()
    arch = distiller.arch_parameters()
    main = [p for p in distiller.parameters()
            if p.requires_grad and all(p is not a for a in arch)]
    optimizer = torch.optim.SGD(main, lr=0.05, momentum=0.9)
    arch_optimizer = torch.optim.Adam(arch, lr=3e-2, betas=(0.5, 0.999), weight_decay=1e-3)
    start = {k: v for k, v in distiller.policy()['weights'].items()}
    data = batch(0, size=64)
    losses = []
    for step in range(12):
        part = slice((step % 4) * 16, (step % 4 + 1) * 16)
        train = dict(inputs=data['inputs'][part], labels=data['labels'][part])
        if distiller.wants_arch_step(1, step):
            arch_optimizer.zero_grad(set_to_none=True)
            distiller.arch_backward(train, batch(1, size=16))
            arch_optimizer.step()
        terms = distiller(train)
        assert all(torch.isfinite(t) for t in terms.values())
        optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        optimizer.step()
        losses.append(float(terms['student.task'].detach()))
    assert distiller.policy()['weights'] != start
    assert sum(losses[-4:]) < sum(losses[:4])


def test_viz_draws_dam_boxes_and_policy(tmp_path):
    pytest.importorskip('matplotlib')
    from distill.sokd.viz import draw_dam_boxes, draw_policy
    distiller = make('FitNet').eval()
    data = batch(0, size=4)
    predictions = distiller.dam_predictions(data)
    assert predictions['teacher']['mask'].shape == (4, 1, 4, 4)
    assert draw_dam_boxes(data['inputs'], predictions, tmp_path / 'dam.png').stat().st_size
    assert draw_policy(distiller.policy(), tmp_path / 'policy.png').stat().st_size


def test_frozen_teacher_outputs_are_reused_after_the_arch_step():
    distiller = make('FitNet').train()
    calls = []
    distiller.teacher.register_forward_hook(lambda *args: calls.append(1))
    data = batch(0)
    torch.manual_seed(5)
    fresh = distiller(data)
    distiller.arch_backward(data, batch(1))
    calls.clear()
    torch.manual_seed(5)
    reused = distiller(data)
    assert calls == []  # the teacher did not run again
    for term, value in fresh.items():
        torch.testing.assert_close(reused[term], value)
    distiller(data)
    assert calls == [1]  # the cache serves one step only
    # keyed on the values, not the objects: a rebuilt dict of copied tensors hits (mmengine
    # and DDP rebuild the inputs between the arch step and the step) ...
    distiller.arch_backward(data, batch(1))
    calls.clear()
    distiller(dict(inputs=data['inputs'].clone(), labels=data['labels'].clone()))
    assert calls == []
    # ... other values miss, also when the batch was changed in place after the arch step
    distiller.arch_backward(data, batch(1))
    calls.clear()
    distiller(batch(2))
    assert calls == [1]
    distiller.arch_backward(data, batch(1))
    data['inputs'].mul_(0.5)
    calls.clear()
    distiller(data)
    assert calls == [1]
    distiller.arch_backward(data, batch(1))  # a label changed: another batch
    calls.clear()
    distiller(dict(inputs=data['inputs'], labels=data['labels'].roll(1)))
    assert calls == [1]


def test_an_online_teacher_is_never_reused():
    distiller = make('ADM').train()
    calls = []
    distiller.teacher.register_forward_hook(lambda *args: calls.append(1))
    distiller.arch_backward(batch(0), batch(1))
    calls.clear()
    distiller(batch(0))
    assert calls == [1]


def test_anchor_boxes_from_the_adapter_or_the_cam():
    from distill.adapters.classifier import ClassifierAdapter

    class BoxAdapter(ClassifierAdapter):
        def anchor_boxes(self, batch):
            return [torch.tensor([[0.0, 0.0, 8.0, 16.0]])] * batch['inputs'].shape[0]

    torch.manual_seed(0)
    distiller = build_distiller(dict(
        type='SoKD', base=dict(BASES['FitNet'], student=STUDENT, teacher=TEACHER,
                               adapter=BoxAdapter(probe_input_size=16)), dam=dict(channels=8)))
    data = batch()
    boxes, labels = distiller.dam_pass.anchor_boxes(data, (4, 4), None)
    assert labels is None
    torch.testing.assert_close(boxes[0], torch.tensor([[0.0, 0.0, 2.0, 4.0]]))
    # classification: one CAM box per image, labelled with the true class (K heatmaps)
    per_class = make('KD', dam=dict(channels=8, num_classes=6))
    terms = per_class(data)
    assert torch.isfinite(terms['dam.anchor'])
    _, _, teacher = per_class.run(data)
    boxes, labels = per_class.dam_pass.anchor_boxes(data, (4, 4), teacher.head)
    assert len(boxes) == 8 and all(b.shape == (1, 4) for b in boxes)
    assert [int(label) for label in labels] == data['labels'].tolist()


def test_anchor_interval_computes_the_anchoring_term_one_step_in_k():
    distiller = make('FitNet', dam=dict(channels=8, anchor_interval=3)).train()
    values = [float(distiller(batch())['dam.anchor'].detach()) for _ in range(6)]
    assert [v > 0 for v in values] == [True, False, False, True, False, False]
    assert float(distiller.eval()(batch())['dam.anchor'].detach()) > 0  # outside training
    with pytest.raises(ValueError, match='anchor_interval'):
        make('FitNet', dam=dict(anchor_interval=0))


@pytest.mark.parametrize('name', ['FitNet', 'KD'])
def test_dam_interval_runs_dam_one_step_in_k(name, monkeypatch):
    import distill.sokd.dam_pass as dam_terms
    distiller = make(name, dam=dict(channels=8, interval=2)).train()
    data = batch()
    for step in range(4):
        distiller.zero_grad(set_to_none=True)
        terms = distiller(data)
        assert set(terms) >= {'student.dam', 'dam.anchor'}
        assert (float(terms['student.dam'].detach()) > 0) == (step % 2 == 0)
        sum(terms.values()).backward()
        # one process: a step without DAM leaves DAM out of the graph (nothing to update)
        assert all((p.grad is not None) == (step % 2 == 0) for p in distiller.dam.parameters())
        assert (step % 2 == 1) or any(float(p.grad.abs().sum()) > 0
                                      for p in distiller.dam.parameters())
    monkeypatch.setattr(dam_terms, '_distributed', lambda: True)
    for step in range(2):  # under DDP every DAM parameter is in the graph of every step
        distiller.zero_grad(set_to_none=True)
        terms = distiller(data)
        assert (float(terms['student.dam'].detach()) > 0) == (step % 2 == 0)
        sum(terms.values()).backward()
        assert all(p.grad is not None for p in distiller.dam.parameters())
        # in the graph at every step, a nonzero gradient only in the steps DAM runs
        assert any(float(p.grad.abs().sum()) > 0
                   for p in distiller.dam.parameters()) == (step % 2 == 0)
    if name == 'FitNet':  # a step without DAM distils with the plain base loss
        torch.manual_seed(1)
        off = distiller(data)['student.fitnet']
        plain = make(name, dam=None).train()
        plain.load_state_dict(distiller.state_dict(), strict=False)
        torch.manual_seed(1)
        torch.testing.assert_close(off, plain(data)['student.fitnet'])
    with pytest.raises(ValueError, match='dam interval'):
        make('FitNet', dam=dict(interval=1.5))


def test_mutual_mask_is_the_union_of_the_two_sides():
    distiller = make('FitNet').eval()
    torch.manual_seed(0)
    # DAM's fused output of both sides (teacher images first): heatmap, size, offset
    out = torch.cat([4 * torch.randn(8, 1, 6, 6), torch.rand(8, 2, 6, 6), torch.rand(8, 2, 6, 6)],
                    dim=1)  # peaks on both sides
    masks = {}
    for mode in ('mutual', 'teacher', 'student'):
        distiller.dam_cfg['mask'] = mode
        masks[mode] = distiller.dam_pass.decode_mask(out)
    assert 0 < float(masks['teacher'].mean()) < 1 and 0 < float(masks['student'].mean()) < 1
    torch.testing.assert_close(masks['mutual'],
                               torch.maximum(masks['teacher'], masks['student']))


def test_the_base_warmup_scales_the_distillation_terms():
    torch.manual_seed(0)
    distiller = build_distiller(dict(type='SoKD', base=dict(base_cfg('FitNet'), warmup=0.5),
                                     dam=dict(channels=8))).train()
    distiller.set_progress(0.25)  # half way through the warm-up
    torch.manual_seed(0)
    ramped = distiller(batch())
    distiller.set_progress(0.75)
    torch.manual_seed(0)
    full = distiller(batch())
    for name in ('student.fitnet', 'student.dam'):
        torch.testing.assert_close(ramped[name], 0.5 * full[name])
    for name in ('student.task', 'dam.anchor'):
        torch.testing.assert_close(ramped[name], full[name])
