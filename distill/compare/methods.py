"""The methods a comparison runs: each one a named change of the config's distiller section.

A method keeps what the user's config says about the networks (``student``, ``teacher``,
``adapter``, ``taps``, ``connector``: the data, schedule and budget are outside the section and
stay as they are) and replaces the rest of the section by its own settings:

* a method of the config's own distiller type (``ADM`` and ``ADM offline`` for an ADM config)
  starts from the config's settings of it (its loss weights, temperature, tau, warm-up);
  another type starts from ``defaults`` below;
* ``fixed`` is applied on top either way: what makes the method what it is (``online``, the
  weights that switch its terms off);
* ``SoKD+X`` wraps the section of method ``X`` in SoKD, with the config's own SoKD settings
  when it is a SoKD config, else ``SOKD_DEFAULTS`` of the framework.

A method that needs taps and a config without any (a DML or KD config) gets ``taps='auto'``.
Offline methods distil from a frozen teacher: the teacher ``independent`` trained on one seed,
or a checkpoint the user gives.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field, replace

#: the keys of a distiller section that belong to the networks (kept by every method)
NETWORK_KEYS = ('student', 'teacher', 'adapter', 'taps', 'connector')
#: keys of a section that no method takes from the config (the comparison sets the teacher)
DROPPED_KEYS = ('teacher_ckpt', 'type')
FRAMEWORKS = ('classification', 'segmentation', 'detection', 'diffusion')


@dataclass(frozen=True)
class Method:
    """One entry of ``METHODS``."""
    name: str
    type: str                      # the distiller class (the base's for SoKD+X)
    doc: str
    baseline: str | None           # the method its paired difference is taken to
    offline: bool = False          # a frozen teacher (from independent's run or the user)
    defaults: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    uses_taps: bool = False
    sokd: str | None = None        # SoKD+X: the name of X
    frameworks: tuple = FRAMEWORKS
    #: why the method is not offered on the frameworks it leaves out
    unavailable: str = ''
    #: a user's variant (``variant``): the method of the table whose section it takes
    base_method: str | None = None


_LOGITS = 'needs class logits or labels (detectors have no single logits tensor)'
_NO_SOKD = ("SoKD's policy search needs an engine with an architecture optimiser "
            '(classification, segmentation, detection)')

METHODS: dict[str, Method] = {m.name: m for m in (
    Method('independent', 'DML',
           'student and teacher trained side by side, each on its own task loss alone (DML '
           'with kd=0: no term links them); the baseline of every other method and the '
           'teacher of the offline ones',
           baseline=None, fixed=dict(online=True, loss_weights=dict(kd=0.0)),
           defaults=dict(temperature=1.0, loss_weights=dict(task=1.0))),
    Method('DML', 'DML', 'deep mutual learning: each network also learns the other\'s soft '
           'outputs (T=1)', baseline='independent',
           defaults=dict(temperature=1.0, loss_weights=dict(task=1.0, kd=1.0)),
           fixed=dict(online=True), frameworks=('classification', 'segmentation', 'diffusion'),
           unavailable=_LOGITS),
    Method('ADM', 'ADM', 'online ADM: DML plus consensus (student) and divergence (teacher) '
           'on the taps', baseline='DML', fixed=dict(online=True), uses_taps=True),
    Method('ADM offline', 'ADM', 'ADM with the teacher frozen: KD plus the consensus term',
           baseline='independent', offline=True, fixed=dict(online=False), uses_taps=True),
    Method('KD', 'KD', 'Hinton KD from the frozen teacher (T=4)', baseline='independent',
           offline=True, defaults=dict(temperature=4.0, loss_weights=dict(task=1.0, kd=1.0)),
           fixed=dict(online=False), frameworks=('classification', 'segmentation', 'diffusion'),
           unavailable=_LOGITS),
    Method('DKD', 'DKD', 'decoupled KD from the frozen teacher (T=4, alpha=1, beta=8)',
           baseline='independent', offline=True,
           defaults=dict(temperature=4.0, alpha=1.0, beta=8.0,
                         loss_weights=dict(task=1.0, kd=1.0)),
           fixed=dict(online=False), frameworks=('classification',),
           unavailable='needs class labels per sample (classifiers)'),
    Method('FitNet', 'FitNet', 'hint loss (MSE) from the frozen teacher\'s features at the taps',
           baseline='independent', offline=True,
           defaults=dict(loss_weights=dict(task=1.0, kd=0.0, fitnet=1.0)),
           fixed=dict(online=False), uses_taps=True),
    Method('SoKD+KD', 'KD', 'SoKD (DAFA, and DAM where the framework keeps it on) around KD',
           baseline='KD', offline=True, sokd='KD', frameworks=('classification',),
           unavailable="needs a classifier: SoKD refines the teacher's features before its "
                       'classification head'),
    Method('SoKD+DKD', 'DKD', 'SoKD around DKD', baseline='DKD', offline=True, sokd='DKD',
           frameworks=('classification',), unavailable='needs a classifier'),
    Method('SoKD+FitNet', 'FitNet', 'SoKD around FitNet: the student matches the DAFA-refined '
           'teacher features', baseline='FitNet', offline=True, sokd='FitNet',
           frameworks=('classification', 'segmentation', 'detection'), unavailable=_NO_SOKD),
    Method('SoKD+ADM offline', 'ADM', 'SoKD around offline ADM (its consensus term)',
           baseline='ADM offline', offline=True, sokd='ADM offline',
           frameworks=('classification', 'segmentation', 'detection'), unavailable=_NO_SOKD),
)}

#: what a comparison runs when --methods is not given
DEFAULT_METHODS = dict(
    classification=('independent', 'DML', 'ADM', 'KD', 'ADM offline'),
    segmentation=('independent', 'DML', 'ADM', 'ADM offline', 'FitNet'),
    detection=('independent', 'ADM', 'ADM offline', 'FitNet'),
    diffusion=('independent', 'DML', 'ADM', 'KD', 'ADM offline'))

#: SoKD's settings where the config is not a SoKD config: the shipped configs' choices
#: (classification keeps DAM off: it did not help there, README "SoKD")
SOKD_DEFAULTS = dict(
    classification=dict(dafa=dict(), dam=None),
    segmentation=dict(dafa=dict(), dam=dict()),
    detection=dict(dafa=dict(), dam=dict()))

#: per framework, settings every section gets (detectors: no logits KD term)
FRAMEWORK_FIXED = dict(detection=dict(loss_weights=dict(kd=0.0)))


def method_names(framework: str | None = None) -> list[str]:
    return [name for name, m in METHODS.items()
            if framework is None or framework in m.frameworks]


class UnknownMethod(ValueError):
    pass


def resolve_method(name: str, framework: str) -> str:
    """The table's spelling of ``name`` (case and ``_``/``-`` for spaces forgiven); an unknown
    name or one the framework does not offer raises ``UnknownMethod`` naming the known ones."""
    canon = {_squash(known): known for known in METHODS}
    known = canon.get(_squash(name))
    if known is None:
        near = difflib.get_close_matches(name, list(METHODS), n=2, cutoff=0.5) or \
            [canon[k] for k in difflib.get_close_matches(_squash(name), list(canon), n=2,
                                                         cutoff=0.5)]
        hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ''
        raise UnknownMethod(f'unknown method {name!r}{hint} The methods of {framework}: '
                            f'{", ".join(method_names(framework))}')
    method = METHODS[known]
    if framework not in method.frameworks:
        raise UnknownMethod(f'{known} is not offered for {framework}: it '
                            f'{method.unavailable}. The methods of {framework}: '
                            f'{", ".join(method_names(framework))}')
    return known


def _squash(name: str) -> str:
    return ''.join(ch for ch in name.lower() if ch.isalnum() or ch == '+')


def baseline_of(name: str, chosen, specs: dict | None = None) -> str | None:
    """The method ``name``'s difference is paired to: its natural baseline, or, when that one
    is not among ``chosen``, the nearest of the baseline's own baselines that is. ``specs``:
    the variants (``variant``) beside ``METHODS``."""
    specs = {**METHODS, **(specs or {})}
    baseline = specs[name].baseline
    while baseline is not None and baseline not in chosen:
        baseline = specs[baseline].baseline
    return baseline


def variant(text: str, framework: str) -> Method:
    """``'NAME=METHOD'``: the user's variant ``NAME`` of the table's ``METHOD``: the same
    section (its change comes from ``--set 'NAME:KEY=VALUE'``), paired with ``METHOD``."""
    name, _, base = (part.strip() for part in text.partition('='))
    if not name or not base or ':' in name:
        raise UnknownMethod(f'{text!r}: a variant is NAME=METHOD (NAME without ":"), e.g. '
                            f'"ADM co0.5=ADM"')
    if _squash(name) in {_squash(known) for known in METHODS}:
        raise UnknownMethod(f'variant {name!r}: the name of a method of the table; give it '
                            f'another name')
    base = resolve_method(base, framework)
    return replace(METHODS[base], name=name, baseline=base, sokd=None, base_method=base,
                   doc=f'{base} with this variant\'s --set changes')


def merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, dicts merged key by key (a copy)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def split_section(section: dict) -> tuple[dict, dict | None]:
    """``(the distiller that holds the networks, the SoKD settings or None)``: a SoKD section
    holds its networks in ``base``."""
    section = copy.deepcopy(dict(section))
    if section.get('type') == 'SoKD':
        base = dict(section.pop('base'))
        section.pop('type')
        return base, section
    return section, None


def method_section(name: str, user_section: dict, framework: str,
                   specs: dict | None = None) -> dict:
    """The distiller section of method ``name`` (of ``METHODS``, or a variant of ``specs``)
    derived from the config's ``user_section`` (without the teacher checkpoint, which the
    comparison adds)."""
    method = {**METHODS, **(specs or {})}[name]
    if method.base_method is not None:
        return method_section(method.base_method, user_section, framework)
    if method.sokd is not None:
        inner = method_section(method.sokd, user_section, framework)
        _, user_sokd = split_section(user_section)
        settings = user_sokd if user_sokd is not None else SOKD_DEFAULTS[framework]
        return dict(type='SoKD', base=inner, **copy.deepcopy(settings))
    nets, _ = split_section(user_section)
    kept = {k: copy.deepcopy(nets[k]) for k in NETWORK_KEYS if k in nets}
    if not method.uses_taps:
        kept.pop('taps', None)
        kept.pop('connector', None)
    elif not kept.get('taps'):
        kept['taps'] = 'auto'
    if nets.get('type') == method.type:
        settings = {k: v for k, v in nets.items()
                    if k not in NETWORK_KEYS and k not in DROPPED_KEYS}
    else:
        settings = copy.deepcopy(method.defaults)
    settings = merge(settings, method.fixed)
    settings = merge(settings, FRAMEWORK_FIXED.get(framework, {}))
    return dict(type=method.type, **kept, **settings)


def describe(framework: str | None = None) -> str:
    """The method table as text (``--list-methods``)."""
    lines, names = [], method_names(framework)
    for name in names:
        m = METHODS[name]
        baseline = baseline_of(name, names)
        extra = f'baseline {baseline}' if baseline else 'no baseline'
        extra += ', offline (frozen teacher)' if m.offline else ''
        lines.append(f'  {name:<17} {m.doc} [{extra}]')
    return '\n'.join(lines)
