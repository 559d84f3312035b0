"""What a distiller needs from a task, whatever the model or engine behind it.

An adapter turns (model, batch) into a ``ModelOutput``: the model's own task loss and the
outputs that logits distillation compares. Distillers only ever talk to this interface, which
is how the methods stay free of mmseg, mmdet and diffusers.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ModelOutput:
    """One network's result on a batch."""

    outputs: torch.Tensor | None = None   # logits, per-pixel logits or predicted noise
    task_loss: torch.Tensor | None = None  # the model's own supervised loss (summed terms)
    extra: dict = field(default_factory=dict)


def probe_size(probe_input_size: int | None, input_size: int | None, default: int,
               owner: str) -> int:
    """The probe side of an adapter's constructor: ``probe_input_size`` (``default`` if not
    given), or ``input_size``, the name ``ClassifierAdapter`` and ``DiffusionAdapter`` gave it
    in 0.1.0 (it read as the training image size, which is ``Adapter.input_size(batch)``); the
    old name still works, with a ``FutureWarning``."""
    if input_size is None:
        return int(default if probe_input_size is None else probe_input_size)
    if probe_input_size is not None:
        raise TypeError(f'{owner} got input_size and probe_input_size: input_size is the old '
                        f'name of probe_input_size, give that alone')
    warnings.warn(f'{owner}(input_size=...) is now {owner}(probe_input_size=...): the side of '
                  f'the probe image that finds tap shapes; input_size will stop working in a '
                  f'later release', FutureWarning, stacklevel=3)
    return int(input_size)


class NoHeadError(TypeError):
    """A network that does not say where its classifier head takes over (``Adapter.head``,
    which SoKD needs), or says it wrongly; the message names the class and what to give it."""


class Adapter:
    """Base adapter; subclasses implement ``run``, ``probe`` and ``output_loss``."""

    #: height (and width) of the probe input used to find tap shapes and strides
    probe_input_size: int = 32

    def prepare(self, batch):
        """The batch of one step as ``run`` reads it: the user's batch in the adapter's form
        (the classifier's ``(inputs, labels)`` becomes its dict), and what both networks must
        share (noise, timesteps). Every forward of a distiller calls it once, first; default:
        the batch as given."""
        return batch

    def run(self, model: nn.Module, batch, compute_loss: bool = True) -> ModelOutput:
        raise NotImplementedError

    def probe(self, model: nn.Module) -> None:
        """One forward of ``model`` on a small example input, for tap shapes. It must call the
        modules ``run`` calls, the way ``run`` calls them: a tap whose hook fires here fires in
        training, so a tap that cannot record is refused when the distiller is built."""
        raise NotImplementedError

    def probe_stages(self, model: nn.Module) -> None:
        """The forward whose stages ``taps='auto'`` pairs (the last module at each stride); by
        default ``probe``. A task whose head maps predictions at a stride of the features
        (a segmentor's per-pixel logits) probes only its feature extractor here."""
        self.probe(model)

    def output_loss(self, learner: ModelOutput, target: ModelOutput, batch,
                    temperature: float) -> torch.Tensor:
        """Distillation of outputs, gradient to the learner only (KD for logits)."""
        raise NotImplementedError

    def labels(self, batch):
        """Class labels of the batch, for losses that need them (DKD); None if the task has
        none."""
        return None

    def anchor_boxes(self, batch):
        """Boxes that anchor SoKD's DAM: a list with one float tensor (N_i, 4) per image,
        x1, y1, x2, y2 in input-image pixels (detection: ground truth; segmentation: connected
        components of each foreground class). None when the task has none (classification,
        where DAM derives pseudo-boxes from the teacher's class activation map)."""
        return None

    def input_size(self, batch) -> tuple[int, int]:
        """(H, W) of the network input of this batch, to scale boxes onto feature grids."""
        raise NotImplementedError

