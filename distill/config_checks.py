"""Config checks that name the key at fault, at build time rather than at step 1.

    check_keys('schedule', cfg.schedule, ['epochs', 'milestones', 'gamma'])
    -> KeyError: unknown config key schedule.epoch; did you mean schedule.epochs? The keys of
       schedule are: epochs, gamma, milestones

``check_distiller_cfg`` runs before any distiller is built (every task builds through
``distill.build_distiller``): a known ``type`` (else the closest registered names), numeric
loss weights, well-formed tap pairs. ``check_built_distiller`` runs after: the two networks
give logits of the same shape, and no tap pair distils a 1x1 (non-spatial) map.
"""
from __future__ import annotations

import difflib
import inspect
import numbers
from typing import Iterable

import torch

TAP_PAIR_KEYS = ('student', 'teacher', 'weight', 'index')


class ConfigError(KeyError, ValueError):
    """A config key or value that cannot work; the message names the key. Both a KeyError
    (unknown keys) and a ValueError (bad values), as the checks it replaces raised."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def closest(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to ``name`` (difflib's ratio, as Python's own suggestions)."""
    return difflib.get_close_matches(str(name), [str(v) for v in valid], n=n, cutoff=0.6)


def check_keys(section: str, given, valid: Iterable[str]) -> None:
    """Raise ``ConfigError`` for the first key of ``given`` not in ``valid``, naming the closest
    valid ones and listing them all."""
    valid = sorted(set(valid))
    for key in given or {}:
        if key not in valid:
            near = closest(key, valid)
            hint = (f'; did you mean {" or ".join(f"{section}.{k}" for k in near)}?' if near
                    else '.')
            raise ConfigError(f'unknown config key {section}.{key}{hint} The keys of {section} '
                              f'are: {", ".join(valid)}')


def accepted_kwargs(callable_) -> list[str] | None:
    """The keyword names ``callable_`` (a class: its ``__init__``) accepts; None if it takes
    ``**kwargs`` (anything goes, nothing to check)."""
    try:
        params = inspect.signature(callable_).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def init_keywords(cls) -> list[str] | None:
    """The keywords ``cls(...)`` accepts, following ``**kwargs`` up the classes' ``__init__``
    chain (``ADM(..., tau=1.0, **kwargs)`` -> ``Distiller(student, teacher, ...)``); None if the
    chain ends in a ``**kwargs`` that goes nowhere known."""
    names = []
    for klass in getattr(cls, '__mro__', ()):
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [p.name for p in params if p.name != 'self' and p.kind in (
            p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


#: keys mmengine's registries read from every config section, never the built object's arguments:
#: ``type`` picks the class, ``_scope_`` its registry scope (mmengine adds it to every section a
#: config inherits from an ``mmseg::``/``mmdet::`` base file)
REGISTRY_KEYS = ('type', '_scope_')


def check_kwargs(section: str, cfg: dict, callable_, skip: tuple = ()) -> None:
    """Every key of ``cfg`` (but mmengine's ``REGISTRY_KEYS`` and ``skip``) must be an argument
    of ``callable_``."""
    names = accepted_kwargs(callable_)
    if names is not None:
        check_keys(section, [k for k in cfg if k not in REGISTRY_KEYS + tuple(skip)], names)


def check_number(key: str, value, positive: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f'{key} must be a number, got {value!r} ({type(value).__name__})')
    if positive and not value > 0:
        raise ConfigError(f'{key} must be > 0, got {value!r}')


def check_registered(section: str, registry, name) -> None:
    """``name`` must be registered in ``registry``; else name the closest registered ones."""
    if not isinstance(name, str) or registry.get(name) is not None:
        return
    names = sorted(registry.module_dict)
    near = closest(name, names)
    hint = f'; did you mean {" or ".join(near)}?' if near else '.'
    raise ConfigError(f'{section}={name!r} is not a registered {registry.name}{hint} '
                      f'Registered: {", ".join(names)}')


# ------------------------------------------------------------------------- teachers
def brings_weights(teacher, pretrained_key: bool = True) -> bool:
    """Whether a teacher as given comes with weights of its own: an ``nn.Module`` (the user's,
    built and maybe loaded by them) does; a model config does when it loads the whole network
    (``pretrained=...`` of the zoo's models, with ``pretrained_key``; mmengine's whole-model
    ``init_cfg=dict(type='Pretrained', checkpoint=...)``)."""
    if isinstance(teacher, torch.nn.Module):
        return True
    if not isinstance(teacher, dict):
        return False
    if pretrained_key and teacher.get('pretrained'):
        return True
    inits = teacher.get('init_cfg')
    inits = inits if isinstance(inits, (list, tuple)) else [inits]
    return any(isinstance(init, dict) and init.get('type') == 'Pretrained'
               and init.get('checkpoint') for init in inits)


def check_teacher_weights(name: str, online: bool, teacher_ckpt, random_teacher,
                          has_weights: bool, prefix: str = '') -> None:
    """The rule of every engine: an offline distiller's teacher is frozen, so it needs weights
    (``teacher_ckpt``, or a teacher that brings its own: ``brings_weights``); without them it
    teaches from its random initialisation, every epoch, at chance level. ``random_teacher=True``
    says that is meant (tests, ablations). ``prefix``: where the keys sit in the config."""
    if not isinstance(random_teacher, bool):
        raise ConfigError(f'{prefix}random_teacher must be True or False, got {random_teacher!r}')
    if online or teacher_ckpt or random_teacher or has_weights:
        return
    raise ConfigError(f'{name} is offline (a frozen teacher) and has no teacher_ckpt: it would '
                      f'distil from a randomly initialised teacher. Give {prefix}teacher_ckpt='
                      f"PATH (the trained teacher's weights), or set {prefix}random_teacher=True "
                      f'if a random frozen teacher is meant')


# ------------------------------------------------------------------------- distillers
def _check_tap_index(where: str, index) -> None:
    """A tap's ``index`` (which element of a tuple output): None or an int, not a bool."""
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise ConfigError(f'{where}.index must be an int, got {index!r}')


def _check_tap_side(where: str, spec) -> None:
    if isinstance(spec, str):
        return
    if isinstance(spec, dict) and isinstance(spec.get('path'), str):
        check_keys(where, spec, ('path', 'index'))
        _check_tap_index(where, spec.get('index'))
        return
    raise ConfigError(f'{where} must be a module path (str) or dict(path=..., index=...), got '
                      f'{spec!r}')


def check_tap_pairs(taps, section: str = 'distiller.taps') -> None:
    if taps is None or taps == 'auto':
        return
    if not isinstance(taps, (list, tuple)) or not taps:
        raise ConfigError(f"{section} must be 'auto' or a non-empty list of "
                          f"dict(student=PATH, teacher=PATH[, weight=1.0, index=None]), got "
                          f'{taps!r}')
    for i, pair in enumerate(taps):
        where = f'{section}[{i}]'
        if not isinstance(pair, dict):
            raise ConfigError(f'{where} must be dict(student=PATH, teacher=PATH), got {pair!r}')
        check_keys(where, pair, TAP_PAIR_KEYS)
        for side in ('student', 'teacher'):
            if side not in pair:
                raise ConfigError(f'{where} has no {side!r}: a tap pair is '
                                  f'dict(student=PATH, teacher=PATH)')
            _check_tap_side(f'{where}.{side}', pair[side])
        if 'weight' in pair:
            check_number(f'{where}.weight', pair['weight'])
        _check_tap_index(where, pair.get('index'))


def check_distiller_cfg(cfg: dict, section: str = 'distiller') -> None:
    """Before building: a registered type, numeric loss weights, well-formed taps (also of a
    wrapped ``base`` distiller, as SoKD has)."""
    from distill.registry import DISTILLERS
    check_registered(f'{section}.type', DISTILLERS, cfg.get('type'))
    distiller_class = DISTILLERS.get(cfg['type']) if isinstance(cfg.get('type'), str) else None
    names = init_keywords(distiller_class) if distiller_class is not None else None
    if names is not None:
        check_keys(section, [k for k in cfg if k != 'type'], names)
    weights = cfg.get('loss_weights') or {}
    if not isinstance(weights, dict):
        raise ConfigError(f'{section}.loss_weights must be a dict of numbers, got {weights!r}')
    for name, value in weights.items():
        check_number(f'{section}.loss_weights.{name}', value)
    for key in ('temperature', 'tau'):
        if key in cfg:
            check_number(f'{section}.{key}', cfg[key], positive=True)
    check_tap_pairs(cfg.get('taps'), f'{section}.taps')
    if 'teacher' in cfg and hasattr(distiller_class, 'default_online'):
        online = cfg.get('online')
        check_teacher_weights(f"{section} ({cfg['type']})",
                              distiller_class.default_online if online is None else online,
                              cfg.get('teacher_ckpt'), cfg.get('random_teacher', False),
                              brings_weights(cfg['teacher']), prefix=f'{section}.')
    adapter = cfg.get('adapter')
    if isinstance(adapter, dict) and isinstance(adapter.get('type'), str):
        from distill.registry import ADAPTERS
        adapter_class = ADAPTERS.get(adapter['type'])  # None for one not imported yet
        if adapter_class is not None:
            check_kwargs(f'{section}.adapter', adapter, adapter_class)
    if isinstance(cfg.get('base'), dict):
        check_distiller_cfg(cfg['base'], f'{section}.base')


def _probe_logits(distiller, model):
    adapter = distiller.adapter
    size, channels = adapter.probe_input_size, getattr(adapter, 'in_channels', 3)
    param = next(model.parameters(), None)
    inputs = torch.zeros(2, channels, size, size,
                         device=param.device if param is not None else 'cpu')
    out = []
    distiller.probe_forward(model, lambda m: out.append(
        adapter.run(m, dict(inputs=inputs), compute_loss=False).outputs))
    return out[0]


def check_built_distiller(distiller, section: str = 'distiller') -> None:
    """After building: logits of one shape (classifiers), no 1x1 tap maps."""
    from distill.adapters.classifier import ClassifierAdapter
    from distill.distillers.base import Distiller
    for module in distiller.modules():
        if not isinstance(module, Distiller):
            continue
        for pair in getattr(module, 'tap_pairs', []):
            for side in ('student', 'teacher'):
                if tuple(pair[f'{side}_shape'][1:]) == (1, 1):
                    raise ConfigError(
                        f"{section}.taps: the pair {pair['student']} -> {pair['teacher']} taps a "
                        f"1x1 map on the {side} side (shapes {pair['student_shape']} and "
                        f"{pair['teacher_shape']} at the probe size): there is no spatial "
                        f'layout to distil. Tap a module before the global pooling (taps='
                        f"'auto' does).")
        if isinstance(getattr(module, 'adapter', None), ClassifierAdapter):
            shapes = {side: tuple(_probe_logits(module, getattr(module, side)).shape)
                      for side in ('student', 'teacher')}
            if shapes['student'][1:] != shapes['teacher'][1:]:
                raise ConfigError(
                    f"{section}: the student's logits have shape {shapes['student']} and the "
                    f"teacher's {shapes['teacher']} for the same probe input: give "
                    f'{section}.student and {section}.teacher the same num_classes')


# ------------------------------------------------------------------------- flat configs
def check_top_level_keys(cfg, known: Iterable[str], cfg_options=None, file_keys=None,
                         what: str = 'config', cutoff: float = 0.8) -> None:
    """For configs whose settings sit at the top level (diffusion's, like the diffusers
    example's flags): a name that is a near-miss of a known key (``max_train_step``) is a
    typo; other new names are the config file's own variables (``resolution = 32``) and pass.
    A ``cfg_options`` key must start with a known key or one of ``file_keys`` (the names the
    config file defines), since the command line defines no variables. Used by the
    classification engine for its sections, and by diffusion for its flags."""
    known = sorted(set(known))
    for key in cfg.keys():
        if key in known:
            continue
        near = difflib.get_close_matches(key, known, n=2, cutoff=cutoff)
        if near:
            raise ConfigError(f'unknown {what} key {key!r}; did you mean '
                              f'{" or ".join(map(repr, near))}? The keys of the {what} are: '
                              f'{", ".join(known)}')
    for key in cfg_options or {}:
        head = key.split('.')[0]
        if head in known or head in (file_keys or ()):
            continue
        near = closest(head, known)
        hint = f'; did you mean {" or ".join(near)}?' if near else ''
        raise ConfigError(f'--cfg-options {key}: {head!r} is not a key of the {what}{hint}')
