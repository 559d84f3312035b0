"""The contract every registered distiller keeps, parametrised over the registry: a distiller
registered tomorrow gets these checks, or this file fails naming it until it has a case.

Term names are ``<part>.<term>`` with the part the network (or SoKD's DAM) the term trains;
``student.task`` always, ``teacher.task`` exactly when online; every term a finite scalar; the
sum's gradient reaches the student, and the teacher only when online (offline it stays frozen,
in eval mode); ``set_progress`` takes the engine's fraction; a state dict saved and loaded into
a fresh build gives the same terms."""
import pytest
import torch
from torch import nn

from distill import DISTILLERS, build_distiller

DISTILLERS.import_from_location()


def _net(width, classes=5):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes))


TAPS = [dict(student='2', teacher='2'), dict(student='4', teacher='4', weight=0.5)]
STAGE = [dict(student='stage3', teacher='stage3')]  # tiny_cnn's last stage
FEATURE_BASE = dict(type='FitNet', taps=STAGE, online=False, random_teacher=True)
LOGITS_BASE = dict(type='KD', online=False, random_teacher=True)

# name -> the settings each case adds to the pair (online or offline, taps, SoKD's base)
CASES = {
    'ADM': [dict(online=True, taps=TAPS, warmup=0.0), dict(online=False, taps=TAPS, warmup=0.0)],
    'DML': [dict(online=True)],
    'KD': [dict(online=False), dict(online=True)],
    'DKD': [dict(online=False)],
    'FitNet': [dict(online=False, taps=TAPS)],
    'SoKD': [dict(base=FEATURE_BASE, dam=dict(channels=8)),
             dict(base=LOGITS_BASE, dam=dict(channels=8)),
             dict(base=dict(type='ADM', taps=STAGE, online=True, warmup=0.0), dam=None)],
}
PARTS = ('student', 'teacher', 'dam')


def _build(name, settings, seed=0):
    torch.manual_seed(seed)
    pair = dict(student=_net(4), teacher=_net(8),
                adapter=dict(type='ClassifierAdapter', probe_input_size=16))
    if name == 'SoKD':  # registry networks: they name where their classifier head takes over
        pair.update(student=dict(type='tiny_cnn', num_classes=5, width=4),
                    teacher=dict(type='tiny_cnn', num_classes=5, width=8))
        base = dict(settings['base'], **pair)
        return build_distiller(dict(type='SoKD', base=base, dam=settings['dam']))
    return build_distiller(dict(type=name, **pair, **settings))


def _batch():
    g = torch.Generator().manual_seed(0)
    return dict(inputs=torch.randn(4, 3, 16, 16, generator=g),
                labels=torch.randint(0, 5, (4,), generator=g))


def test_every_registered_distiller_has_a_case():
    # the library's (other test modules register stand-ins of their own at collection)
    library = sorted(name for name, cls in DISTILLERS.module_dict.items()
                     if cls.__module__.startswith('distill.'))
    assert library == sorted(CASES), (
        'a distiller was registered (or removed): give it its cases in CASES')


@pytest.mark.parametrize('name,settings', [(name, settings) for name, cases in CASES.items()
                                           for settings in cases],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_the_distiller_contract(name, settings):
    distiller = _build(name, settings).train()
    distiller.set_progress(0.5)
    torch.manual_seed(1)  # SoKD draws a DAFA op per step
    terms = distiller(_batch())
    online = distiller.online
    assert 'student.task' in terms and ('teacher.task' in terms) == online
    for key, value in terms.items():
        part, _, term = key.partition('.')
        assert part in PARTS and term, f'{name}: term {key!r} is not <part>.<term>'
        assert value.dim() == 0 and bool(torch.isfinite(value)), f'{name}: {key} = {value}'
    sum(terms.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in distiller.student.parameters())
    teacher_grads = [p.grad for p in distiller.teacher.parameters() if p.grad is not None]
    if online:
        assert any(g.abs().sum() > 0 for g in teacher_grads)
    else:
        assert not teacher_grads and not distiller.teacher.training
    # a fresh build (other initial weights) that loads the state dict computes the same terms
    fresh = _build(name, settings, seed=7).train()
    fresh.set_progress(0.5)
    fresh.load_state_dict(distiller.state_dict())
    distiller.zero_grad(set_to_none=True)
    with torch.no_grad():
        torch.manual_seed(2)
        want = distiller(_batch())
        torch.manual_seed(2)
        got = fresh(_batch())
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=f'{name}: {key}')
