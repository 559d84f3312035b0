"""Feature taps: forward hooks on modules named by their path in ``named_modules()``.

A tap records the output of one module while a distiller step runs (``with taps.recording()``)
and holds nothing between steps, so no feature map outlives the step that made it.

    taps = FeatureTaps(model, ['layer2', dict(path='down_blocks.1', index=0)])
    with taps.recording() as feats:
        model(x)
    feats['layer2']  # the tensor layer2 returned during that forward

``find_auto_taps`` pairs the stages (the last module at each spatial stride) of two networks
from the deepest, found from one probe forward of each (the idea of timm's ``feature_info``).
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn


@dataclass(frozen=True)
class TapSpec:
    """Where a feature comes from: a module path and, for tuple outputs, an index."""

    path: str
    index: int | None = None

    @property
    def key(self) -> str:
        return self.path if self.index is None else f'{self.path}[{self.index}]'

    @classmethod
    def parse(cls, spec: 'str | dict | TapSpec') -> 'TapSpec':
        if isinstance(spec, TapSpec):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if isinstance(spec, dict) and 'path' in spec:
            return cls(spec['path'], spec.get('index'))
        raise TypeError(f'a tap is a module path or dict(path=..., index=...), got {spec!r}')


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module behind DDP/compile wrappers, whose ``named_modules`` paths users write."""
    while True:
        inner = getattr(model, 'module', None) or getattr(model, '_orig_mod', None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class TapPathError(KeyError):
    """An unknown module path; the message names the closest existing paths."""

    def __str__(self) -> str:
        return str(self.args[0])


def resolve_module(model: nn.Module, path: str, owner: str = 'model') -> nn.Module:
    """``model``'s submodule at ``path``; an unknown path names the closest existing ones."""
    modules = dict(unwrap_model(model).named_modules())
    if path in modules and path != '':
        return modules[path]
    names = [name for name in modules if name]
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
    if not close:  # fall back to the paths that share the first component
        head = path.split('.')[0]
        close = [name for name in names if name.split('.')[0] == head][:5]
    hint = f'; closest existing paths: {", ".join(close)}' if close else ''
    raise TapPathError(f'{owner} has no module at tap path {path!r}{hint}')


def _select_output(output, spec: TapSpec, module_name: str):
    if spec.index is None:
        if isinstance(output, (tuple, list)):
            raise TypeError(f'module {module_name!r} returns a {type(output).__name__} of '
                            f'{len(output)} items: give the tap an index, '
                            f"e.g. dict(path={module_name!r}, index=0)")
        return output
    if not isinstance(output, (tuple, list)):
        raise TypeError(f'tap {spec.key!r} has an index but module {module_name!r} returns a '
                        f'{type(output).__name__}, not a tuple')
    if not -len(output) <= spec.index < len(output):
        raise IndexError(f'tap {spec.key!r}: module returns only {len(output)} items')
    return output[spec.index]


#: why a tap can record nothing although its module exists
NOT_CALLED = ('is the module used by forward(), and called as module(x)? A model that calls '
              'module.forward(x) directly (MMSeg\'s EncoderDecoder does so with its decode_head) '
              'runs no forward hook of that module: tap one of the modules it calls')


def tapped(feats: dict, key: str, side: str):
    """The feature of tap ``key`` recorded in this forward, or an error that says why not."""
    if key not in feats:
        raise RuntimeError(f'{side} tap {key!r} recorded nothing in this forward: {NOT_CALLED}')
    return feats[key]


class FeatureTaps:
    """Forward hooks that record named module outputs during ``recording()`` only."""

    def __init__(self, model: nn.Module, specs: Iterable, owner: str = 'model'):
        self.specs = [TapSpec.parse(spec) for spec in specs]
        self._recorded: dict[str, torch.Tensor] | None = None
        self._handles = []
        for spec in self.specs:
            module = resolve_module(model, spec.path, owner)
            self._handles.append(module.register_forward_hook(self._make_hook(spec)))

    def _make_hook(self, spec: TapSpec) -> Callable:
        def hook(module, args, output):
            if self._recorded is not None:
                self._recorded[spec.key] = _select_output(output, spec, spec.path)
        return hook

    @contextlib.contextmanager
    def recording(self):
        """Yield a dict that fills with ``{tap key: tensor}`` during the block."""
        recorded: dict[str, torch.Tensor] = {}
        self._recorded = recorded
        try:
            yield recorded
        finally:
            self._recorded = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


# --------------------------------------------------------------------------------------------
# taps='auto'


def probe_strides(model: nn.Module, run: Callable[[nn.Module], object],
                  input_size: int) -> dict[int, tuple[str, torch.Size]]:
    """Map each spatial stride to the last module (in execution order) producing a 4-D tensor
    at that stride, found by one forward ``run(model)`` of an input of height ``input_size``.

    Containers finish after their children, so a stage (``layer2``) wins over its last block.
    """
    model = unwrap_model(model)
    last_at_stride: dict[int, tuple[str, torch.Size]] = {}
    handles = []

    def make_hook(name):
        def hook(module, args, output):
            # a 1x1 map (after global pooling) has no spatial layout to distil
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2] > 1:
                stride = input_size / output.shape[-2]
                if stride >= 1 and float(stride).is_integer():
                    last_at_stride[int(stride)] = (name, output.shape)
        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            run(model)
    finally:
        for handle in handles:
            handle.remove()
    return dict(sorted(last_at_stride.items()))


def find_auto_taps(student_strides: dict, teacher_strides: dict,
                   min_stride: int = 2) -> list[dict]:
    """Pair the two networks' stages, the last module at each stride (>= ``min_stride``), from
    the deepest: the student's last stage with the teacher's last, the one before with the one
    before, as many pairs as the shallower network has stages. Matching strides instead would
    pair a CIFAR-style student's last stage (stride 4) with an ImageNet-style teacher's first
    (stride 4 after its stem) and leave the teacher's deeper stages untapped; where both
    networks have the same strides the two rules agree. A connector resizes the student's map
    to the teacher's where their sizes differ."""
    student = [(s, student_strides[s][0]) for s in sorted(student_strides) if s >= min_stride]
    teacher = [(s, teacher_strides[s][0]) for s in sorted(teacher_strides) if s >= min_stride]
    if not student or not teacher:
        raise ValueError(f"taps='auto' found no stage at a stride >= {min_stride}: student "
                         f'strides {list(student_strides)}, teacher strides '
                         f'{list(teacher_strides)}')
    count = min(len(student), len(teacher))
    return [dict(student=s_name, teacher=t_name, stride=s_stride, teacher_stride=t_stride)
            for (s_stride, s_name), (t_stride, t_name) in zip(student[-count:], teacher[-count:])]


def describe_auto_taps(pairs: list[dict]) -> str:
    """The line every engine logs for what ``taps='auto'`` chose (``find_auto_taps``)."""
    return "taps='auto' paired " + ', '.join(
        f"student {p['student']} (stride {p['stride']}) -> teacher {p['teacher']} "
        f"(stride {p['teacher_stride']})" for p in pairs)
