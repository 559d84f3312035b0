"""Fail loudly and early: a loss term or a weight that became NaN or inf stops the run there.

Two checks, both before anything is written:

* ``check_finite_terms`` before ``backward``: a non-finite loss term stops the run, naming the
  first such term (in the distiller's order) and the step (the mmengine model; the trainer core
  defers the same check to its logging steps with ``DeferredChecks``, so that a training step
  does not wait on the device);
* ``check_finite_state`` after the optimiser step (and before every checkpoint): a parameter,
  buffer (BatchNorm statistics) or optimiser moment that is no longer finite stops the run,
  naming the first such tensor, the step, and that step's loss terms, largest first. A loss can
  stay finite (1e27) while the step it drives leaves ``inf`` in the weights; the next forward
  then makes every term NaN at once, and only this check says where it started.

So a checkpoint is only ever written from finite state, and "checkpoints written before this
step are intact" is true when either error is raised.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

INTACT = 'Checkpoints written before this step are intact (each was checked finite).'


class NonFiniteLossError(FloatingPointError):
    """A loss term, a weight or a buffer became NaN or inf; the message names it and the step."""


def _where(step: int, epoch: int | None) -> str:
    return f'step {step}' + (f' (epoch {epoch})' if epoch is not None else '')


def _ranked(values: dict) -> str:
    ranked = sorted(values.items(), key=lambda item: -abs(item[1]))
    return ', '.join(f'{name}={v:.4g}' for name, v in ranked)


def check_finite_terms(terms: dict[str, torch.Tensor], step: int, epoch: int | None = None,
                       previous: dict | None = None):
    """Raise ``NonFiniteLossError`` naming the first non-finite term (and listing any other);
    return the float values. Call it before ``backward``, so no optimiser step sees a NaN.

    ``previous``: the terms of the step before, shown largest first: when every term turns
    NaN at once (weights thrown far by one huge but finite term), that names the culprit."""
    # one device-to-host copy for all the terms (a float() each would sync once per term)
    numbers = torch.stack([value.detach().float() for value in terms.values()]).tolist() \
        if terms else []
    values = dict(zip(terms, numbers))
    check_finite_values(values, step, epoch, previous)
    return values


def named_state_tensors(model: torch.nn.Module, optimizer=None) -> Iterable:
    """``(name, tensor)`` of every floating-point parameter and buffer of ``model`` and, with
    ``optimizer``, every floating-point tensor of its state (momentum, Adam moments)."""
    for name, tensor in model.named_parameters():
        yield name, tensor
    for name, tensor in model.named_buffers():
        if tensor.is_floating_point():
            yield name, tensor
    if optimizer is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        for param, state in optimizer.state.items():
            for key, value in state.items():
                if key != 'step' and torch.is_tensor(value) and value.is_floating_point():
                    yield f'optimizer state {key} of {names.get(id(param), "a parameter")}', value


def first_non_finite(named: Iterable) -> str | None:
    """The name of the first tensor holding a NaN or inf, or None.

    One fused max-abs reduction per dtype group (``torch._foreach_norm``, what
    ``clip_grad_norm_`` uses) and a single device sync; the per-tensor search only runs when
    something is wrong.
    """
    named = [(name, t.detach()) for name, t in named if t.numel() and (
        t.is_floating_point() or t.is_complex())]  # integers are always finite
    if not named:
        return None
    norms = torch._foreach_norm([t for _, t in named], float('inf'))
    if bool(torch.isfinite(torch.stack([n.float() for n in norms])).all()):
        return None
    for (name, _), norm in zip(named, norms):
        if not torch.isfinite(norm):
            return name
    return None


def check_finite_state(model: torch.nn.Module, step: int, epoch: int | None = None,
                       values: dict | None = None, optimizer=None, reduce=None,
                       when: str = 'after the optimiser step') -> None:
    """Raise ``NonFiniteLossError`` if a parameter or buffer of ``model`` (or a tensor of
    ``optimizer``'s state) holds a NaN or inf, naming the first one, the step and the loss
    terms of that step (``values``), largest first.

    ``reduce`` (e.g. ``lambda t: accelerator.reduce(t, 'sum')``) makes every process raise when
    any one finds a bad tensor, so none is left waiting in a collective.
    """
    bad = first_non_finite(named_state_tensors(model, optimizer))
    if reduce is not None:
        flag = torch.tensor([0.0 if bad is None else 1.0],
                            device=next(model.parameters()).device)
        if float(reduce(flag)) == 0:
            return
    elif bad is None:
        return
    what = (f'{bad} became non-finite' if bad is not None
            else 'a parameter or buffer became non-finite on another process')
    terms = f'; the loss terms of that step, largest first: {_ranked(values)}' if values else ''

    raise NonFiniteLossError(f'{what} {when} at {_where(step, epoch)}{terms}. Lower the '
                             f'learning rate or the largest loss weight. {INTACT}')


def state_finite_flag(tensors: list, buffer: tuple | None = None) -> torch.Tensor | None:
    """A 0-dim bool tensor, True when every tensor of ``tensors`` (floating parameters and
    buffers) is finite, computed on the device without reading it: one fused max-abs
    (``torch._foreach_norm``) and, with ``buffer`` (a float32 tensor of one entry per tensor and
    the list of its entries, made once), one fused copy of the norms into it instead of a
    ``stack`` (which costs an ``unsqueeze`` operator call per tensor); None for no tensors."""
    if not tensors:
        return None
    with torch.no_grad():
        norms = torch._foreach_norm(tensors, float('inf'))
        if buffer is None:
            return torch.isfinite(torch.stack([n.float() for n in norms])).all()
        torch._foreach_copy_(buffer[1], norms)
        return torch.isfinite(buffer[0]).all()


def _state_tensors(model: torch.nn.Module) -> list:
    return [t for _, t in named_state_tensors(model)
            if t.numel() and (t.is_floating_point() or t.is_complex())]


class DeferredChecks:
    """The NaN guard of the trainer core without a device-to-host read in every step.

    ``add_terms`` keeps each step's loss terms stacked on the device (one ``stack``) and
    ``add_state`` a flag of the state after the optimiser step (fused norms); ``read`` brings
    everything pending to the host in one copy (at logging steps, before a checkpoint or an
    evaluation, at the end of an epoch), raises ``NonFiniteLossError`` for the first step whose
    terms or state were not finite (naming the term or tensor, that step and the step before),
    and returns each step's values for the logs. A bad step is therefore found at the next
    read, not at once: the optimiser may have stepped on it meanwhile, which is why a
    checkpoint is only written after a read (``Trainer.save``) and from state checked finite.
    """

    def __init__(self):
        self.pending = []            # (kind, step, epoch, names, device tensor)
        self.previous = None         # the values of the last step read, for the messages
        self._tensors = (None, [], None)  # (model, its state tensors, a buffer of their norms)

    def __len__(self):
        return len(self.pending)

    def add_terms(self, terms: dict, step: int, epoch: int | None) -> None:
        if terms:  # one stack of the 0-dim terms (promoted to a common dtype), no per-term op
            stacked = torch.stack(list(terms.values())).detach().float()
            self.pending.append(('terms', step, epoch, tuple(terms), stacked))

    def add_values(self, values: dict, step: int, epoch: int | None) -> None:
        """Logged values that are not checked (SoKD's arch step); tensors stay on the device."""
        if values:
            device = next((v.device for v in values.values() if torch.is_tensor(v)), None)
            stacked = torch.stack([v.detach().float().reshape(()) if torch.is_tensor(v)
                                   else torch.tensor(float(v), device=device)
                                   for v in values.values()])
            self.pending.append(('values', step, epoch, tuple(values), stacked))

    def add_state(self, model: torch.nn.Module, step: int, epoch: int | None) -> None:
        if self._tensors[0] is not model:
            tensors = _state_tensors(model)
            norms = torch.empty(len(tensors), device=tensors[0].device) if tensors else None
            self._tensors = (model, tensors, (norms, list(norms.unbind())) if tensors else None)
        flag = state_finite_flag(*self._tensors[1:])
        if flag is not None:
            self.pending.append(('state', step, epoch, (), flag.reshape(1)))

    def read(self, model: torch.nn.Module | None = None, reduce=None) -> list:
        """``[(kind, step, {name: value})]`` of the pending steps, read in one copy; raises
        ``NonFiniteLossError`` at the first bad one. ``reduce`` (a sum over processes) makes
        every process raise when one finds a bad step, so none waits in a collective."""
        if not self.pending:
            return []
        pending, self.pending = self.pending, []
        device = pending[0][4].device
        flat = torch.cat([entry[4].to(device, torch.float32).reshape(-1) for entry in pending])
        if reduce is not None:  # one collective: does any process hold a bad step?
            flat = torch.cat([flat, reduce(_bad_flag(pending).float().reshape(1).to(device))])
        numbers = flat.tolist()
        others_bad = reduce is not None and numbers.pop() > 0
        out, position = [], 0
        for kind, step, epoch, names, tensor in pending:
            count = tensor.numel()
            row, position = numbers[position:position + count], position + count
            if kind == 'terms':
                values = dict(zip(names, row))
                check_finite_values(values, step, epoch, self.previous)
                self.previous = values
            elif kind == 'state':
                if row[0] == 0:
                    bad = first_non_finite(named_state_tensors(model)) if model else None
                    what = (f'{bad} became non-finite' if bad else
                            'a parameter or buffer became non-finite')
                    terms = (f'; the loss terms of that step, largest first: '
                             f'{_ranked(self.previous)}' if self.previous else '')
                    raise NonFiniteLossError(
                        f'{what} after the optimiser step at {_where(step, epoch)}{terms}. '
                        f'Lower the learning rate or the largest loss weight. {INTACT}')
                continue
            else:
                values = dict(zip(names, row))
            out.append((kind, step, values))
        if others_bad:
            raise NonFiniteLossError(f'a loss term or a parameter became non-finite on another '
                                     f'process before step {pending[-1][1]}. {INTACT}')
        return out


def _bad_flag(pending) -> torch.Tensor:
    """On the device: does any pending entry hold a non-finite term or a bad state flag?"""
    flags = [(~torch.isfinite(t)).any() if kind == 'terms' else (t == 0).any()
             for kind, _, _, _, t in pending if kind != 'values']
    return torch.stack(flags).any() if flags else torch.zeros((), dtype=torch.bool)


def check_finite_values(values: dict, step: int, epoch: int | None = None,
                        previous: dict | None = None) -> None:
    """``check_finite_terms`` on values already read: the same message."""
    bad = {name: v for name, v in values.items() if not math.isfinite(v)}
    if bad:
        first = next(iter(bad))
        others = ', '.join(f'{name}={v}' for name, v in bad.items() if name != first)
        finite = ', '.join(f'{name}={v:.4g}' for name, v in values.items() if name not in bad)
        raise NonFiniteLossError(
            f'loss term {first} became non-finite ({bad[first]}) at {_where(step, epoch)}'
            + (f'; also non-finite: {others}' if others else '')
            + (f'; finite: {finite}' if finite else '')
            + (f'. The step before, largest first: {_ranked(previous)}' if previous else '')
            + f'. {INTACT}')
