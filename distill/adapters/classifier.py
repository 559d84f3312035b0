"""Image classifiers: any ``nn.Module`` mapping images (B,3,H,W) to logits (B,K)."""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from distill.adapters.base import Adapter, ModelOutput, NoHeadError, probe_size
from distill.losses.logits import kd_loss
from distill.registry import ADAPTERS
from distill.taps import FeatureTaps, TapPathError, probe_strides, unwrap_model


BATCH_FORMS = '`dict(inputs=Tensor[B,C,H,W], labels=Tensor[B])` or `(inputs, labels)`'


def _describe(value) -> str:
    """A short account of a batch that is not one of ``BATCH_FORMS``, for the error."""
    if isinstance(value, torch.Tensor):
        return f'Tensor{list(value.shape)}'
    if isinstance(value, dict):
        return 'dict(' + ', '.join(f'{key}={_describe(item)}' for key, item in value.items()) + ')'
    if isinstance(value, (tuple, list)):
        items = ', '.join(_describe(item) for item in value[:4])
        more = ', ...' if len(value) > 4 else ''
        return f'{type(value).__name__} of {len(value)} ({items}{more})'
    return type(value).__name__


def classification_batch(batch) -> dict:
    """``batch`` as ``dict(inputs=Tensor[B,C,H,W], labels=Tensor[B])``: a dict with those keys
    is returned as it is (other keys kept), an ``(inputs, labels)`` tuple or list becomes the
    dict; anything else is a ``TypeError`` naming both forms and what was given."""
    given = batch
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        batch = dict(inputs=batch[0], labels=batch[1])
    if not (isinstance(batch, dict) and all(isinstance(batch.get(key), torch.Tensor)
                                            for key in ('inputs', 'labels'))):
        raise TypeError(f'a classification batch is {BATCH_FORMS}; got {_describe(given)}')
    return batch


def check_logits(model: nn.Module, logits):
    """``logits`` if they are what a classifier returns, ``Tensor[B, num_classes]``; else a
    ``TypeError`` naming the model's class, what it returned and what was expected, so that a
    model that is not a classifier stops at the distiller's build (whose checks run the
    networks through ``ClassifierAdapter.run``) rather than deep inside a loss."""
    if isinstance(logits, torch.Tensor) and logits.dim() == 2:
        return logits
    name = type(unwrap_model(model)).__name__
    if isinstance(logits, torch.Tensor):
        hint = (' (flatten the pooled map before the last layer: torch.flatten(x, 1))'
                if logits.dim() == 4 else '')
    else:
        hint = ' (features for distillation come from taps, which record any module)'
    raise TypeError(f'{name}(images) returned {_describe(logits)}: ClassifierAdapter takes a '
                    f'classifier whose forward(images) returns the logits alone, '
                    f'Tensor[B, num_classes]{hint}')


class ClassifierHead(NamedTuple):
    """Where a classifier's head takes over (``ClassifierAdapter.head``)."""
    #: the module whose output is the last feature map, (B, C, H, W)
    path: str
    #: feature map -> logits: the model's own ``forward_head``, or the derived ``PooledLinear``
    forward: Callable
    #: the ``nn.Linear`` that maps the globally average-pooled map to the logits, where the
    #: head is that (its weights give SoKD's class activation map); None otherwise
    linear: nn.Linear | None


class PooledLinear:
    """The head of a classifier that ends in global average pooling and one ``nn.Linear``:
    ``linear(feature.mean((H, W)))``. A plain object, not a module: the linear layer stays the
    model's own (trained, saved and copied with it), registered nowhere else."""

    def __init__(self, linear: nn.Linear):
        self.linear = linear

    def __call__(self, feature: torch.Tensor) -> torch.Tensor:
        return self.linear(feature.mean(dim=(-2, -1)))


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _close(a, b) -> bool:
    """Equal up to the rounding of a reordered float sum (pooling, then a matrix product)."""
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and bool(torch.allclose(a.float(), b.float(), rtol=1e-3,
                                    atol=1e-4 * (1.0 + float(b.float().abs().max())))))


@ADAPTERS.register_module()
class ClassifierAdapter(Adapter):
    """Batch: ``dict(inputs=Tensor[B,3,H,W], labels=Tensor[B])``, or the ``(inputs, labels)``
    pair a PyTorch ``DataLoader`` over a ``TensorDataset`` (or torchvision's data sets) yields,
    which ``prepare`` turns into that dict.

    Args:
        probe_input_size: side of the zero image used to find tap shapes (default 32);
            ``input_size``, its name in 0.1.0, still works with a ``FutureWarning``.
        in_channels: channels of that image (and of the data: 1 for grey images).
        label_smoothing: of the task's cross-entropy.
        head_input: for networks that do not say where their head takes over (SoKD needs it:
            ``head``): the module whose output is the last feature map (``'features'``), or
            ``'auto'`` (the last module at the deepest stride, as ``taps='auto'`` finds
            stages); the head is then global average pooling and the network's own
            ``nn.Linear`` that gives its logits from that map, checked at build time. None
            (default): a network must give ``head_input`` and ``forward_head`` itself.

    A network's own ``head_input`` and ``forward_head`` always come first.
    """

    def __init__(self, probe_input_size: int | None = None, in_channels: int = 3,
                 label_smoothing: float = 0.0, head_input: str | None = None, *,
                 input_size: int | None = None):
        self.probe_input_size = probe_size(probe_input_size, input_size, 32,
                                           'ClassifierAdapter')
        self.in_channels = in_channels
        self.label_smoothing = label_smoothing
        if head_input is not None and not (isinstance(head_input, str) and head_input):
            raise TypeError(f"ClassifierAdapter(head_input=...) is a module path or 'auto', "
                            f'got {head_input!r}')
        self.head_input = head_input

    def prepare(self, batch):
        """The batch as ``dict(inputs=..., labels=...)``, whichever of the two forms it came
        in: the one place where a distiller's step reads a user's batch, so that everything
        after it (both networks, the loss terms, SoKD's search) sees one form. Anything else
        is refused here, naming the forms and what was given, instead of failing deeper with
        a bare ``KeyError`` or ``TypeError``."""
        return classification_batch(batch)

    def run(self, model: nn.Module, batch, compute_loss: bool = True) -> ModelOutput:
        logits = check_logits(model, model(batch['inputs']))
        task_loss = None
        if compute_loss:
            task_loss = F.cross_entropy(logits.float(), batch['labels'],
                                        label_smoothing=self.label_smoothing)
        return ModelOutput(outputs=logits, task_loss=task_loss)

    def probe(self, model: nn.Module) -> None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else 'cpu'
        size = self.probe_input_size
        model(torch.zeros(2, self.in_channels, size, size, device=device))

    def output_loss(self, learner, target, batch, temperature):
        return kd_loss(learner.outputs, target.outputs, temperature)

    def labels(self, batch):
        return batch['labels']

    def input_size(self, batch):
        return tuple(batch['inputs'].shape[-2:])

    def head(self, model: nn.Module) -> ClassifierHead:
        """Where the classifier's head takes over, so that a distiller can tap that feature,
        change it and still get logits (SoKD): the model's own ``head_input`` (a module path)
        and ``forward_head(feature) -> logits``, or, for a model without them, the head this
        adapter's ``head_input`` derives. Either is checked by one forward of a random probe
        image: ``forward(feature)`` must give the model's logits. A model that offers neither,
        or whose head does not give its logits, is refused with a ``NoHeadError`` that says
        what to add (with the module path ``'auto'`` would take, where there is one)."""
        inner = unwrap_model(model)
        name = type(inner).__name__
        path, forward_head = getattr(inner, 'head_input', None), getattr(inner, 'forward_head',
                                                                         None)
        own = isinstance(path, str) and callable(forward_head)
        if not own:  # a model that is no classifier is refused as such, not for its head
            check_logits(model, self._eval_forward(model, lambda m: m(self._probe_image(m))))
            if self.head_input is None:
                raise NoHeadError(self._no_head_message(model, name, path))
            path, forward_head = self.head_input, None
            if path == 'auto':
                path = self._last_feature_map(model)
                if path is None:
                    raise NoHeadError(f"{name}: ClassifierAdapter(head_input='auto') found no "
                                      f'feature map (B, C, H, W) with H > 1 in its forward; '
                                      f'{self._what_to_add(None)}')
        if own:
            where = f'{name}.head_input = {path!r}'
        elif self.head_input == 'auto':
            where = f"ClassifierAdapter(head_input='auto'), which took {path!r} of {name}"
        else:
            where = f'ClassifierAdapter(head_input={path!r}) on {name}'
        feature, logits = self._head_probe(model, path, where)
        if feature.dim() != 4:
            raise NoHeadError(f'{where}: that module returns a Tensor{list(feature.shape)}, not '
                              f'a feature map (B, C, H, W); name the module whose output is the '
                              f'last one')
        linear = self._pooled_linear(inner, feature, logits)
        if own:
            try:
                mapped = self._eval_forward(inner, lambda _: forward_head(feature))
            except Exception as err:  # a head that cannot take that map: say which, in one line
                mapped = f'{type(err).__name__} ({str(err).splitlines()[0] if str(err) else ""})'
            if not _close(mapped, logits):
                call = f'{name}.forward_head(output of {path!r}, Tensor{list(feature.shape)})'
                if isinstance(mapped, str):
                    got = f'{call} raises {mapped}'
                elif isinstance(mapped, torch.Tensor) and mapped.shape == logits.shape:
                    got = (f'{call} differs from the logits of {name}(images) by up to '
                           f'{_max_difference(mapped, logits):.3g}')
                else:
                    got = (f'{call} gives {_describe(mapped)}, not the logits of '
                           f'{name}(images), Tensor{list(logits.shape)}')
                raise NoHeadError(f'{where}: {got}: head_input must name the module whose '
                                  f'output forward_head turns into the logits')
            return ClassifierHead(path, forward_head, linear)
        if feature.shape[-2:].numel() == 1:
            raise NoHeadError(f'{where}: that module returns a 1x1 map at the probe size '
                              f'(Tensor{list(feature.shape)}), after the global pooling: name '
                              f'the module whose output is the last map before it')
        if linear is None:
            raise NoHeadError(f'{where}: global average pooling of that output and one of '
                              f"{name}'s nn.Linear layers do not give its logits; "
                              f'{self._what_to_add(path)}')
        return ClassifierHead(path, PooledLinear(linear), linear)

    # ---------------------------------------------------------------- head helpers
    def _probe_image(self, model: nn.Module) -> torch.Tensor:
        """A random probe image (a fixed draw): a zero image makes every map constant, on
        which any pooling looks like the average."""
        param = next(model.parameters(), None)
        generator = torch.Generator().manual_seed(0)
        size = self.probe_input_size
        image = torch.randn(2, self.in_channels, size, size, generator=generator)
        return image.to(param.device) if param is not None else image

    def _eval_forward(self, model: nn.Module, run):
        """``run(model)`` in eval mode without gradient, the mode restored."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return run(model)
        finally:
            model.train(was_training)

    def _head_probe(self, model, path: str, where: str):
        """``(output of path, logits)`` of one forward of a random probe image."""
        try:
            taps = FeatureTaps(model, [path], owner=type(unwrap_model(model)).__name__)
        except TapPathError as err:
            raise NoHeadError(f'{where}: {err}') from None
        image = self._probe_image(model)
        try:
            with taps.recording() as feats:
                logits = check_logits(model, self._eval_forward(model, lambda m: m(image)))
        finally:
            taps.remove()
        if path not in feats:
            raise NoHeadError(f'{where}: that module runs no forward hook in a forward of the '
                              f'model: name a module its forward calls')
        return feats[path], logits

    @staticmethod
    def _pooled_linear(model: nn.Module, feature, logits) -> nn.Linear | None:
        """The model's ``nn.Linear`` that gives ``logits`` from the average-pooled ``feature``
        (the last registered such layer), or None: the head is something else."""
        pooled = feature.mean(dim=(-2, -1))
        for module in reversed(list(model.modules())):
            if (isinstance(module, nn.Linear) and module.in_features == pooled.shape[1]
                    and module.out_features == logits.shape[1]):
                with torch.no_grad():
                    if _close(module(pooled), logits):
                        return module
        return None

    def _last_feature_map(self, model: nn.Module) -> str | None:
        """The last module at the deepest stride of a random probe image (the input of the
        global pooling, in common classifiers), as ``taps='auto'`` finds stages; None if none."""
        image = self._probe_image(model)
        try:
            strides = probe_strides(model, lambda m: self._eval_forward(m, lambda n: n(image)),
                                    self.probe_input_size)
        except Exception:  # a forward that fails here fails again, with its own error, later
            return None
        return strides[max(strides)][0] if strides else None

    @staticmethod
    def _what_to_add(path: str | None) -> str:
        path = repr(path) if path else "'<module path>'"
        return (f'give the class a `head_input = {path}` attribute (the module whose output '
                f'is the last feature map, before global pooling) and a `forward_head(feature) '
                f'-> logits` method (the rest of the forward, from that map; README, "SoKD")')

    def _no_head_message(self, model, name: str, given) -> str:
        """What a model that lacks ``head_input`` or ``forward_head`` must add; the path is its
        own ``head_input`` where it has one, else the one ``'auto'`` would take."""
        missing = 'forward_head' if isinstance(given, str) else 'head_input'
        path = given if isinstance(given, str) else self._last_feature_map(model)
        derive = (f', or let ClassifierAdapter(head_input={path!r}) derive them (global '
                  f'average pooling, then its last nn.Linear)' if path else '')
        return f'{name} has no {missing}: {self._what_to_add(path)}{derive}'
