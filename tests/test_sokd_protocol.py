"""SoKD composes its base through the base distiller's public protocol only (issue 13): no
private attribute of the base, no type switch, and a new base that declares the capability
works without touching SoKD."""
import ast
from pathlib import Path

import pytest
import torch

from distill import build_distiller
from distill.distillers.base import Distiller
from distill.registry import DISTILLERS

ROOT = Path(__file__).resolve().parents[1]
SOKD_SOURCES = [ROOT / 'distill/distillers/sokd.py', *sorted((ROOT / 'distill/sokd').glob('*.py'))]
#: what a distiller instance holds beside its class's methods (set in ``Distiller.__init__``)
PUBLIC_STATE = {'student', 'teacher', 'adapter', 'online', 'loss_weights', 'temperature'}
PROTOCOL = {name for name in dir(Distiller) if not name.startswith('_')} | PUBLIC_STATE
NOT_PROTOCOL = {'tap_pairs', 'connectors', 'student_taps', 'teacher_taps', 'feature_terms'}

STUDENT = dict(type='tiny_cnn', num_classes=6, width=4)
TEACHER = dict(type='tiny_cnn', num_classes=6, width=8)
ADAPTER = dict(type='ClassifierAdapter', probe_input_size=16)
TAPS = [dict(student='stage2', teacher='stage2'), dict(student='stage3', teacher='stage3')]


def _is_base(node) -> bool:
    """``base`` or ``self.base``."""
    return ((isinstance(node, ast.Name) and node.id == 'base')
            or (isinstance(node, ast.Attribute) and node.attr == 'base'
                and isinstance(node.value, ast.Name) and node.value.id == 'self'))


def base_reads(source: str):
    """Every ``(line, name)`` that reads an attribute of the base, and every type switch on it
    (``hasattr``/``getattr`` with the base as first argument, ``isinstance`` other than the
    constructor's "a module or a config" check)."""
    reads, switches = [], []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _is_base(node.value):
            reads.append((node.lineno, node.attr))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ('isinstance', 'hasattr', 'getattr')
                and node.args and _is_base(node.args[0])
                and ast.unparse(node) != 'isinstance(base, nn.Module)'):
            switches.append((node.lineno, node.func.id))
    return reads, switches


def test_the_checker_finds_private_reads_and_switches():
    """The check below can fail: it sees what the old SoKD did."""
    reads, switches = base_reads(
        'def f(self, base):\n'
        '    self.base._probe(1)\n'
        '    x = base.tap_pairs[-1]\n'
        '    if isinstance(base, DKD) or hasattr(self.base, "ramp"):\n'
        '        pass\n')
    assert {name for _, name in reads} == {'_probe', 'tap_pairs'}
    assert {name for _, name in switches} == {'isinstance', 'hasattr'}


@pytest.mark.parametrize('path', SOKD_SOURCES, ids=lambda p: p.name)
def test_sokd_reads_only_the_public_protocol_of_its_base(path):
    source = path.read_text()
    reads, switches = base_reads(source)
    outside = [(line, name) for line, name in reads
               if name.startswith('_') or name in NOT_PROTOCOL or name not in PROTOCOL]
    assert not outside, f'{path.name} reads attributes of the base outside its protocol'
    assert not switches, f'{path.name} switches on the type of the base'
    bases = {'KD', 'DKD', 'DML', 'FitNet', 'ADM'}
    for node in ast.walk(ast.parse(source)):  # no concrete base named in the code
        if isinstance(node, ast.ImportFrom):
            assert node.module not in ('distill.distillers.logits', 'distill.distillers.adm',
                                       'distill.distillers.fitnet'), (path.name, node.module)
            assert not {alias.name for alias in node.names} & bases, path.name
        if isinstance(node, ast.Name):
            assert node.id not in bases, (path.name, node.lineno, node.id)


@DISTILLERS.register_module(force=True)
class SumSquaresHint(Distiller):
    """A base SoKD has never seen: per-location squared distance summed over channels."""

    default_online = False
    default_loss_weights = dict(task=1.0, kd=0.0, hint=2.0)
    uses_taps = True
    feature_term = 'hint'

    def location_distance(self, gs, ft, detach_target=True):
        return (gs - (ft.detach() if detach_target else ft)).pow(2).sum(dim=1)

    def feature_terms(self, student_feats, teacher_feats, batch):
        total = sum(pair['weight'] * (gs - ft.detach()).pow(2).sum(dim=1).mean()
                    for pair, gs, ft in self.aligned_features(student_feats, teacher_feats))
        return {'student.hint': self.loss_weights['hint'] * total}


@DISTILLERS.register_module(force=True)
class TapsWithoutLocations(SumSquaresHint):
    feature_term = None


def _batch():
    generator = torch.Generator().manual_seed(0)
    return dict(inputs=torch.rand(4, 3, 16, 16, generator=generator),
                labels=torch.randint(0, 6, (4,), generator=generator))


def test_a_new_base_works_through_the_protocol():
    cfg = dict(type='SumSquaresHint', student=STUDENT, teacher=TEACHER, adapter=ADAPTER, taps=TAPS,
               random_teacher=True)
    torch.manual_seed(0)
    base = build_distiller(cfg)
    torch.manual_seed(0)
    plain = build_distiller(dict(type='SoKD', base=cfg, dafa=None, dam=None))
    plain.load_state_dict(base.state_dict(), strict=False)
    expected, got = base(_batch()), plain(_batch())
    assert set(got) == {'student.task', 'student.hint'}
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value)
    full = build_distiller(dict(type='SoKD', base=cfg, dam=dict(channels=8))).train()
    terms = full(_batch())
    assert set(terms) == {'student.task', 'student.hint', 'student.dam', 'dam.anchor'}
    full.arch_backward(_batch(), _batch())
    assert float(full.dafa.alpha.grad.abs().sum()) > 0


def test_a_base_with_taps_must_declare_its_per_location_loss():
    cfg = dict(type='TapsWithoutLocations', student=STUDENT, teacher=TEACHER, adapter=ADAPTER,
               taps=TAPS, random_teacher=True)
    with pytest.raises(TypeError, match='feature_term is None'):
        build_distiller(dict(type='SoKD', base=cfg))
