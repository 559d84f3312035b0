"""Distillers: loss-term names online and offline, where each term's gradient goes, errors."""
import math

import pytest
import torch
from torch import nn

from distill import DISTILLERS, build_distiller
from distill.checkpoint import save_atomic
from distill.taps import TapPathError


def net(width, classes=5):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes))


TAPS = [dict(student='2', teacher='2'), dict(student='4', teacher='4', weight=0.5)]


def make(kind='ADM', **kw):
    torch.manual_seed(0)
    cfg = dict(type=kind, student=net(4), teacher=net(8),
               adapter=dict(type='ClassifierAdapter', probe_input_size=16))
    if kind in ('ADM', 'FitNet'):
        cfg['taps'] = TAPS
    if kind == 'ADM':  # the terms at full weight from the first step (ADM's default ramps them)
        cfg['warmup'] = 0.0
    cfg.update(kw)
    return build_distiller(cfg)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(inputs=torch.randn(4, 3, 16, 16, generator=g),
                labels=torch.randint(0, 5, (4,), generator=g))


@pytest.mark.parametrize('kind,online,names', [
    ('ADM', True, {'student.task', 'student.kd', 'student.co',
                   'teacher.task', 'teacher.kd', 'teacher.di'}),
    ('ADM', False, {'student.task', 'student.kd', 'student.co'}),
    ('DML', True, {'student.task', 'student.kd', 'teacher.task', 'teacher.kd'}),
    ('KD', False, {'student.task', 'student.kd'}),
    ('DKD', False, {'student.task', 'student.kd'}),
    ('FitNet', False, {'student.task', 'student.fitnet'}),
])
def test_term_names(kind, online, names):
    distiller = make(kind, online=online)
    terms = distiller(batch())
    assert set(terms) == names
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())


def test_registry_lists_the_methods():
    for name in ('ADM', 'DML', 'KD', 'DKD', 'FitNet'):
        assert DISTILLERS.get(name) is not None


def _param_grads(distiller, term):
    distiller.zero_grad(set_to_none=True)
    terms = distiller(batch())
    terms[term].backward()
    groups = dict(student=distiller.student, teacher=distiller.teacher,
                  connectors=distiller.connectors)
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
            for name, m in groups.items()}


@pytest.mark.parametrize('term,expected', [
    ('student.co', dict(student=True, teacher=False, connectors=True)),
    ('teacher.di', dict(student=False, teacher=True, connectors=False)),
    ('student.kd', dict(student=True, teacher=False, connectors=False)),
    ('teacher.kd', dict(student=False, teacher=True, connectors=False)),
    ('student.task', dict(student=True, teacher=False, connectors=False)),
    ('teacher.task', dict(student=False, teacher=True, connectors=False)),
])
def test_each_adm_term_updates_only_its_network(term, expected):
    assert _param_grads(make('ADM'), term) == expected


def test_offline_teacher_is_frozen_in_eval_and_untouched():
    distiller = make('ADM', online=False)
    distiller.train()
    assert not distiller.teacher.training and distiller.student.training
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    bn_before = distiller.teacher[1].running_mean.clone()
    sum(distiller(batch()).values()).backward()
    assert torch.equal(distiller.teacher[1].running_mean, bn_before)
    assert all(p.grad is None for p in distiller.teacher.parameters())


def test_loss_weights_scale_terms_and_unknown_weight_is_an_error():
    plain = make('ADM', loss_weights=dict(co=1.0, di=1.0))(batch())
    scaled = make('ADM', loss_weights=dict(co=3.0, di=0.5))(batch())
    torch.testing.assert_close(scaled['student.co'], 3 * plain['student.co'])
    torch.testing.assert_close(scaled['teacher.di'], 0.5 * plain['teacher.di'])
    with pytest.raises(KeyError, match='fitnet'):
        make('ADM', loss_weights=dict(fitnet=1.0))


def test_tau_schedule_follows_progress():
    distiller = make('ADM', tau_schedule=dict(start=0.1, end=2.0))
    distiller.set_progress(0.0)
    assert distiller.current_tau() == pytest.approx(0.1)
    distiller.set_progress(0.5)
    assert distiller.current_tau() == pytest.approx(1.05)
    distiller.set_progress(1.0)
    low_tau = distiller(batch())['student.co']
    distiller.set_progress(0.0)
    assert not torch.equal(low_tau, distiller(batch())['student.co'])
    with pytest.raises(ValueError, match='tau_schedule'):
        make('ADM', tau_schedule=dict(start=0.1, stop=1.0))


def test_set_progress_refuses_a_value_outside_0_1_naming_it():
    """set_progress(nan) was taken, and every ramped term (kd, co, di) became NaN; a value out
    of range was clamped without a word."""
    distiller = make('ADM', warmup=0.3)
    for bad in (float('nan'), float('inf'), -0.1, 1.5):
        with pytest.raises(ValueError, match=rf'set_progress\({bad!r}\): the fraction of '
                                             rf'training done must be a number in \[0, 1\]'):
            distiller.set_progress(bad)
    distiller.set_progress(1.0)
    assert all(torch.isfinite(value) for value in distiller(batch()).values())


def test_cosine_tau_schedule_rises_from_start_to_end():
    """``type='cosine'``: ``start + (end - start) (1 - cos(pi p)) / 2``, from ``start`` at
    progress 0 to ``end`` at 1 through the midpoint at 1/2, slow at both ends (a quarter of the
    way in it has moved 15 % of the way, not 85 %)."""
    distiller = make('ADM', tau_schedule=dict(start=0.1, end=2.0, type='cosine'))
    expected = {0.0: 0.1, 0.25: 0.1 + 1.9 * (1 - math.sqrt(0.5)) / 2, 0.5: 1.05,
                0.75: 0.1 + 1.9 * (1 + math.sqrt(0.5)) / 2, 1.0: 2.0}
    for progress, tau in expected.items():
        distiller.set_progress(progress)
        assert distiller.current_tau() == pytest.approx(tau), progress


def test_divergence_reading_reaches_the_teacher_term_only():
    """``divergence='mutual'`` changes teacher.di (to the float64-tested reading of
    tests/test_adm_terms.py) and nothing the student is trained on; a typo is refused."""
    from distill.losses.adm import divergence_loss
    repel, mutual = make('ADM'), make('ADM', divergence='mutual')
    terms = {name: d(batch()) for name, d in (('repel', repel), ('mutual', mutual))}
    for name in ('student.task', 'student.kd', 'student.co', 'teacher.kd'):
        torch.testing.assert_close(terms['repel'][name], terms['mutual'][name])
    assert not torch.allclose(terms['repel']['teacher.di'], terms['mutual']['teacher.di'])
    # the distiller's term is di * sum_taps w * L_di of the aligned features
    run = mutual.run_networks(batch())
    expected = sum(pair['weight'] * divergence_loss(ft, gs, mutual.tau, divergence='mutual')
                   for pair, gs, ft in mutual.aligned_features(run.student_feats,
                                                               run.teacher_feats))
    torch.testing.assert_close(terms['mutual']['teacher.di'],
                               mutual.loss_weights['di'] * expected)
    with pytest.raises(ValueError, match='divergence is one of'):
        make('ADM', divergence='mutul')


def test_auto_taps_and_connector_shapes(caplog):
    with caplog.at_level('INFO', logger='distill.distillers'):
        distiller = make('ADM', taps='auto')
    assert "taps='auto' paired student 4 (stride 2) -> teacher 4 (stride 2)" in caplog.text
    assert [p['student'] for p in distiller.tap_pairs] == ['4']
    assert distiller.connectors[0].conv.weight.shape == (16, 8, 1, 1)
    # what it chose is public (the engines print it); given taps leave it None
    assert distiller.auto_tap_pairs == [dict(student='4', teacher='4', stride=2,
                                             teacher_stride=2)]
    assert make('ADM').auto_tap_pairs is None and make('DML').auto_tap_pairs is None
    sokd = build_distiller(dict(type='SoKD', dam=None,  # DAFA alone: no classifier head
                                base=dict(type='FitNet', student=net(4), teacher=net(8),
                                          taps='auto', adapter=dict(type='ClassifierAdapter',
                                                                    probe_input_size=16))))
    assert sokd.auto_tap_pairs == distiller.auto_tap_pairs


class CallsForwardDirectly(nn.Module):
    """As MMSeg's EncoderDecoder runs its decode head: ``head.forward(x)``, which runs no
    forward hook of ``head`` (its own modules' hooks do fire)."""

    def __init__(self, width):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.head = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(width, 5))

    def forward(self, x):
        return self.classifier(self.head.forward(self.stem(x)))


def test_a_tap_whose_hook_never_fires_is_refused_when_built_not_at_the_first_step():
    def build(taps):
        return build_distiller(dict(type='ADM', student=CallsForwardDirectly(4),
                                    teacher=CallsForwardDirectly(8), taps=taps, warmup=0.0,
                                    adapter=dict(type='ClassifierAdapter', probe_input_size=16)))
    with pytest.raises(RuntimeError, match=r"student tap 'head' recorded nothing in a probe "
                                           r"forward .*module.forward\(x\) directly"):
        build([dict(student='head', teacher='head')])
    # auto pairs only modules whose hooks fire: the head's last module, not the head
    distiller = build('auto')
    assert [(p['student'], p['teacher']) for p in distiller.auto_tap_pairs] == [('head.1',
                                                                                 'head.1')]
    assert set(distiller(batch())) >= {'student.co', 'teacher.di'}
    # a tap that fired in the probe but not in a step: named, not a bare KeyError
    with pytest.raises(RuntimeError, match=r"teacher tap 'head.1' recorded nothing in this "
                                           r"forward"):
        list(distiller.aligned_features({'head.1': torch.zeros(1)}, {}))


def test_unknown_tap_path_is_a_clear_error():
    with pytest.raises(TapPathError, match="teacher has no module at tap path '22'"):
        make('ADM', taps=[dict(student='2', teacher='22')])


def test_unalignable_features_name_the_tap():
    with pytest.raises(ValueError, match=r"7 -> 7.*\(B,C,H,W\)"):
        make('ADM', taps=[dict(student='7', teacher='7')])  # Linear outputs: (B, K)


def test_teacher_checkpoint_is_loaded(tmp_path):
    teacher = net(8)
    save_atomic({'state_dict': teacher.state_dict()}, tmp_path / 'teacher.pth')
    distiller = make('ADM', online=False, teacher_ckpt=str(tmp_path / 'teacher.pth'))
    for key, value in teacher.state_dict().items():
        assert torch.equal(distiller.teacher.state_dict()[key], value)
    with pytest.raises(ValueError, match='does not match'):
        save_atomic({'state_dict': net(4).state_dict()}, tmp_path / 'wrong.pth')
        make('ADM', online=False, teacher_ckpt=str(tmp_path / 'wrong.pth'))


def test_an_offline_teacher_without_weights_is_refused_at_build():
    """Offline KD/FitNet/ADM/SoKD with no teacher_ckpt distilled from a randomly initialised
    frozen teacher (top-1 at chance every epoch), without a word; refused now, in one line,
    unless random_teacher=True says it is meant. A teacher handed over as a module (the user
    may have loaded it), a pretrained one, or an online teacher (it trains) pass."""
    from distill.config_checks import ConfigError
    tiny = dict(type='tiny_cnn', num_classes=3, width=4)
    pair = dict(student=tiny, teacher=dict(tiny, width=8),
                adapter=dict(type='ClassifierAdapter', probe_input_size=16))
    taps = [dict(student='stage3', teacher='stage3')]
    for cfg, key in [(dict(type='KD', **pair), 'distiller'),
                     (dict(type='FitNet', taps=taps, **pair), 'distiller'),
                     (dict(type='ADM', online=False, taps=taps, **pair), 'distiller'),
                     (dict(type='SoKD', base=dict(type='KD', **pair)), 'distiller.base')]:
        with pytest.raises(ConfigError, match=rf'^{key} \(\w+\) is offline \(a frozen teacher\) '
                                              rf'and has no teacher_ckpt: .*Give {key}\.teacher_'
                                              rf'ckpt=PATH .*or set {key}\.random_teacher=True'):
            build_distiller(cfg)
    from distill.distillers import KD
    with pytest.raises(ConfigError, match=r'^KD is offline .*set random_teacher=True'):
        KD(**pair)  # built without build_distiller: the same rule
    assert not build_distiller(dict(type='KD', random_teacher=True, **pair)).online
    build_distiller(dict(type='KD', student=tiny, teacher=net(8, classes=3),
                         adapter=pair['adapter']))  # the user's module
    assert build_distiller(dict(type='ADM', taps=taps, **pair)).online
    with pytest.raises(ConfigError, match='random_teacher must be True or False'):
        build_distiller(dict(type='KD', random_teacher='yes', **pair))


def test_the_same_module_as_student_and_teacher_is_refused():
    """build_distiller(dict(type='KD', student=net, teacher=net)) was accepted: the network
    distilled into itself."""
    shared = net(4)
    with pytest.raises(ValueError, match=r'^student and teacher are the same Sequential '
                                         r'object: give the teacher as a network of its own'):
        build_distiller(dict(type='KD', student=shared, teacher=shared,
                             adapter=dict(type='ClassifierAdapter', probe_input_size=16)))


def test_warmup_ramps_every_term_but_the_task_losses():
    torch.manual_seed(0)
    cfg = dict(type='ADM', student=dict(type='tiny_cnn', num_classes=3, width=4),
               teacher=dict(type='tiny_cnn', num_classes=3, width=8),
               adapter=dict(type='ClassifierAdapter', probe_input_size=16),
               taps=[dict(student='stage3', teacher='stage3')], warmup=0.5)
    distiller = build_distiller(cfg).eval()
    batch = dict(inputs=torch.randn(4, 3, 16, 16), labels=torch.tensor([0, 1, 2, 0]))
    torch.manual_seed(0)  # the same networks, without warm-up
    full = {k: v.item() for k, v in build_distiller({**cfg, 'warmup': 0.0}).eval()(batch).items()}
    for progress, factor in ((0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (0.9, 1.0)):
        distiller.set_progress(progress)
        terms = {k: v.item() for k, v in distiller(batch).items()}
        for name, value in terms.items():
            expected = full[name] * (1.0 if name.endswith('.task') else factor)
            assert value == pytest.approx(expected, rel=1e-5, abs=1e-7), (name, progress)
    with pytest.raises(ValueError, match='warmup'):
        build_distiller({**cfg, 'warmup': 1.5})


def test_teacher_kd_weights_only_the_teacher_side():
    cfg = dict(type='DML', student=dict(type='tiny_cnn', num_classes=3, width=4),
               teacher=dict(type='tiny_cnn', num_classes=3, width=8),
               adapter=dict(type='ClassifierAdapter', probe_input_size=16),
               loss_weights=dict(task=1.0, kd=2.0))
    batch = dict(inputs=torch.randn(4, 3, 16, 16), labels=torch.tensor([0, 1, 2, 0]))
    terms = {}
    for teacher_kd in (None, 0.5, 0.0):
        torch.manual_seed(0)
        distiller = build_distiller({**cfg, 'teacher_kd': teacher_kd}).eval()
        terms[teacher_kd] = {k: v.item() for k, v in distiller(batch).items()}
    assert terms[0.5]['student.kd'] == pytest.approx(terms[None]['student.kd'])
    assert terms[0.5]['teacher.kd'] == pytest.approx(terms[None]['teacher.kd'] / 4)
    assert 'teacher.kd' not in terms[0.0] and 'student.kd' in terms[0.0]
    with pytest.raises(TypeError, match='teacher_kd'):
        build_distiller({**cfg, 'teacher_kd': '0.5'})


def test_a_plain_loop_ramps_the_default_warmup_by_counting_its_own_steps():
    # the README's loop: no engine, no set_progress; ADM's defaults (30 % warm-up) with
    # total_steps=10 ramp the distillation terms over the first 3 training forwards
    torch.manual_seed(0)
    distiller = build_distiller(dict(type='ADM', student=net(4), teacher=net(8), taps=TAPS,
                                     adapter=dict(type='ClassifierAdapter', probe_input_size=16),
                                     total_steps=10))
    assert distiller.warmup == 0.3 and distiller.temperature == 1.0
    assert distiller.loss_weights == dict(task=1.0, kd=1.0, co=0.1, di=0.01)
    optimizer = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=0.0)
    ramps = []
    for step in range(5):
        distiller.eval()
        distiller(batch())  # evaluation forwards do not count as steps
        distiller.train()
        terms = distiller(batch())
        ramps.append(float(terms['student.co'].detach()))
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
    full = ramps[-1]
    assert full > 0 and ramps[0] == 0.0
    assert ramps[1:4] == pytest.approx([full / 3, 2 * full / 3, full], rel=1e-4)
    assert distiller.progress == pytest.approx(0.5)


def test_a_schedule_without_total_steps_or_an_engine_is_an_error_not_a_silent_zero():
    torch.manual_seed(0)
    distiller = build_distiller(dict(type='ADM', student=net(4), teacher=net(8), taps=TAPS,
                                     adapter=dict(type='ClassifierAdapter', probe_input_size=16)))
    distiller.eval()
    distiller(batch())  # evaluation needs no progress
    distiller.train()
    with pytest.raises(RuntimeError, match=r'warmup=0.3 .*total_steps=N.*set_progress'):
        distiller(batch())
    distiller.set_progress(0.5)  # an engine drives it: no counting, no error
    assert distiller(batch())['student.co'] > 0 and distiller.progress == 0.5
    scheduled = make('ADM', tau_schedule=dict(start=0.1, end=1.0))
    with pytest.raises(RuntimeError, match='tau_schedule moves tau'):
        scheduled(batch())
    assert make('DML')(batch())  # nothing depends on progress: no total_steps needed
    with pytest.raises(ValueError, match='total_steps'):
        make('ADM', total_steps=0)


def test_a_pytorch_tuple_batch_trains_the_step_the_dict_batch_trains():
    # a DataLoader over a TensorDataset yields [inputs, labels]: the adapter's prepare turns
    # it into the dict form once, so the terms, their gradients and the step are the same
    from torch.utils.data import DataLoader, TensorDataset
    data = batch()
    loader = DataLoader(TensorDataset(data['inputs'], data['labels']), batch_size=4)
    forms = dict(dict=data, list=next(iter(loader)), tuple=(data['inputs'], data['labels']))
    assert isinstance(forms['list'], list)
    terms, params = {}, {}
    for name, form in forms.items():
        distiller = make('ADM')
        optimizer = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad],
                                    lr=0.1)
        step = distiller(form)
        optimizer.zero_grad()
        sum(step.values()).backward()
        optimizer.step()
        terms[name] = {k: v.detach() for k, v in step.items()}
        params[name] = [p.detach().clone() for p in distiller.parameters()]
    for name in ('list', 'tuple'):
        assert terms[name].keys() == terms['dict'].keys()
        for key, value in terms['dict'].items():
            torch.testing.assert_close(terms[name][key], value, rtol=0, atol=0)
        for got, expected in zip(params[name], params['dict']):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize('given,shown', [
    (dict(image=torch.zeros(4, 3, 16, 16), label=torch.zeros(4)),
     r'dict\(image=Tensor\[4, 3, 16, 16\], label=Tensor\[4\]\)'),
    (dict(inputs=torch.zeros(4, 3, 16, 16)), r'dict\(inputs=Tensor\[4, 3, 16, 16\]\)'),
    (torch.zeros(4, 3, 16, 16), r'Tensor\[4, 3, 16, 16\]'),
    ((torch.zeros(4, 3, 16, 16), torch.zeros(4), torch.zeros(4)), r'tuple of 3'),
    ([torch.zeros(4, 3, 16, 16), [0, 1, 2, 3]], r'list of 2 \(Tensor\[4, 3, 16, 16\], list'),
])
def test_a_batch_of_another_form_names_the_forms_and_what_was_given(given, shown):
    forms = (r'dict\(inputs=Tensor\[B,C,H,W\], labels=Tensor\[B\]\)` or `\(inputs, '
             r'labels\)`')
    for kind in ('ADM', 'KD'):
        with pytest.raises(TypeError, match=forms + '; got ' + shown):
            make(kind)(given)


def test_task_shares_hold_a_term_at_a_share_of_its_networks_task_loss():
    # float64: the rescaled term is share * task in value, and its gradient is the term's
    # own times share * task / term (a constant factor: no gradient through task or term)
    torch.set_default_dtype(torch.float64)
    try:
        plain = make('ADM', loss_weights=dict(co=1.0, di=1.0))
        shared = make('ADM', loss_weights=dict(co=1.0, di=1.0),
                      task_shares=dict(co=0.1, di=0.01))
        terms, ref = shared(batch()), plain(batch())
        for name, share, network in (('student.co', 0.1, 'student'),
                                     ('teacher.di', 0.01, 'teacher')):
            torch.testing.assert_close(terms[name], share * ref[f'{network}.task'])
        for name in ('student.task', 'teacher.task', 'student.kd', 'teacher.kd'):
            torch.testing.assert_close(terms[name], ref[name])  # terms not named: unchanged
        factor = (0.1 * ref['student.task'] / ref['student.co']).detach()
        grads = torch.autograd.grad(terms['student.co'], list(shared.student.parameters()),
                                    allow_unused=True)
        expected = torch.autograd.grad(factor * ref['student.co'],
                                       list(plain.student.parameters()), allow_unused=True)
        assert any(g is not None for g in grads)
        for got, want in zip(grads, expected):
            assert (got is None) == (want is None)
            if got is not None:
                torch.testing.assert_close(got, want)
        assert _param_grads(shared, 'student.co') == dict(student=True, teacher=False,
                                                         connectors=True)
        assert _param_grads(shared, 'teacher.di') == dict(student=False, teacher=True,
                                                         connectors=False)
    finally:
        torch.set_default_dtype(torch.float32)


def test_task_shares_cap_offline_and_errors():
    distiller = make('ADM', task_shares=dict(co=0.5))
    terms = {'student.task': torch.tensor(2.0), 'student.co': torch.tensor(1e-9),
             'teacher.di': torch.tensor(3.0)}
    out = distiller.share_of_task(terms)
    assert out['student.co'] == pytest.approx(1e-9 * distiller.MAX_SHARE_GAIN)  # capped
    assert out['teacher.di'] == 3.0  # no teacher.task (offline) or no share: unchanged
    zero = distiller.share_of_task({'student.task': torch.tensor(0.0),
                                    'student.co': torch.tensor(0.0)})
    assert torch.isfinite(zero['student.co'])
    offline = make('ADM', online=False, task_shares=dict(co=0.2, di=0.1))
    terms = offline(batch())
    torch.testing.assert_close(terms['student.co'], 0.2 * terms['student.task'])
    with pytest.raises(KeyError, match='fitnet'):
        make('ADM', task_shares=dict(fitnet=0.1))
    with pytest.raises(ValueError, match='finite number'):
        make('ADM', task_shares=dict(co=float('nan')))


@pytest.mark.parametrize('settings,message', [
    (dict(loss_weights=dict(co=-1.0)), r'loss_weights.co must be a finite number >= 0'),
    (dict(loss_weights=dict(di=float('nan'))), r'loss_weights.di must be a finite number'),
    (dict(loss_weights=dict(kd=float('inf'))), r'loss_weights.kd must be a finite number'),
    (dict(temperature=0.0), r'temperature must be .*> 0'),
    (dict(tau=float('nan')), r'tau must be .*> 0'),
    (dict(teacher_kd=-0.5), r'teacher_kd must be a finite number >= 0'),
])
def test_weights_and_temperatures_are_checked_when_built(settings, message):
    with pytest.raises(ValueError, match=message):
        make('ADM', **settings)


def test_teacher_kd_holds_for_every_logits_method():
    # DKD restated the base's output terms and ignored teacher_kd: DKD(online=True,
    # teacher_kd=0) still trained its teacher on teacher.kd
    for kind in ('DML', 'DKD', 'KD', 'ADM'):
        terms = make(kind, online=True, teacher_kd=0.0)(batch())
        assert 'student.kd' in terms and 'teacher.kd' not in terms, kind
        halved = make(kind, online=True, teacher_kd=0.5)(batch())
        full = make(kind, online=True)(batch())
        torch.testing.assert_close(halved['teacher.kd'], 0.5 * full['teacher.kd'])


def test_dkd_term_is_dkd_loss_at_the_configured_alpha_beta():
    """DKD's ``student.kd`` is ``kd * dkd_loss`` of the student's logits to the teacher's with
    the ``alpha`` (TCKD) and ``beta`` (NCKD) it was built with, not the other way round."""
    from distill.losses import dkd_loss
    distiller = make('DKD', alpha=0.5, beta=3.0, temperature=2.0)
    data = batch()
    run = distiller.run_networks(data)
    expected = distiller.loss_weights['kd'] * dkd_loss(
        run.student_out.outputs, run.teacher_out.outputs, data['labels'], alpha=0.5, beta=3.0,
        temperature=2.0)
    term = distiller(data)['student.kd']
    torch.testing.assert_close(term, expected)
    swapped = dkd_loss(run.student_out.outputs, run.teacher_out.outputs, data['labels'],
                       alpha=3.0, beta=0.5, temperature=2.0)
    assert not torch.allclose(term, distiller.loss_weights['kd'] * swapped)


def test_probe_input_size_keeps_its_old_name_input_size_with_a_warning():
    from distill.adapters.classifier import ClassifierAdapter
    from distill.registry import ADAPTERS
    assert ClassifierAdapter().probe_input_size == 32
    assert ClassifierAdapter(probe_input_size=24).probe_input_size == 24
    with pytest.warns(FutureWarning, match=r'input_size=\.\.\.\) is now .*probe_input_size'):
        old = ADAPTERS.build(dict(type='ClassifierAdapter', input_size=16))
    assert old.probe_input_size == 16
    with pytest.raises(TypeError, match='give that alone'):
        ClassifierAdapter(probe_input_size=16, input_size=16)
