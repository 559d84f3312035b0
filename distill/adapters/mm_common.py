"""What the MMSegmentation and MMDetection adapters share: the input conversion and the loss sum.

Teacher and student may normalise images differently (mean, std, channel order).

The distillation model runs the *student's* data preprocessor once, so both networks see the
same augmented (and padded) batch; the teacher's input is then converted from the student's
normalisation to its own, pixel for pixel, instead of being preprocessed a second time.
``sum_mm_losses`` sums an
OpenMMLab loss dict as mmengine does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Normalisation:
    """``x = (flip?(img) - mean) / std`` as a data preprocessor applies it."""

    mean: tuple | None
    std: tuple | None
    flips_channels: bool  # bgr_to_rgb or rgb_to_bgr: the stored image order is swapped

    @classmethod
    def of(cls, preprocessor: nn.Module | None) -> 'Normalisation':
        if preprocessor is None:
            return cls(None, None, False)
        # mmseg keeps the flag as ``channel_conversion``, mmengine/mmdet as ``_channel_conversion``
        flips = bool(getattr(preprocessor, 'channel_conversion',
                             getattr(preprocessor, '_channel_conversion', False)))
        if not getattr(preprocessor, '_enable_normalize', False):
            return cls(None, None, flips)
        mean = tuple(float(v) for v in preprocessor.mean.flatten())
        std = tuple(float(v) for v in preprocessor.std.flatten())
        return cls(mean, std, flips)

    def denormalise(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return inputs
        mean = inputs.new_tensor(self.mean).view(1, -1, 1, 1)
        std = inputs.new_tensor(self.std).view(1, -1, 1, 1)
        return inputs * std + mean

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return images
        mean = images.new_tensor(self.mean).view(1, -1, 1, 1)
        std = images.new_tensor(self.std).view(1, -1, 1, 1)
        return (images - mean) / std


def convert_inputs(inputs: torch.Tensor, source: Normalisation,
                   target: Normalisation) -> torch.Tensor:
    """Re-normalise ``inputs`` (made by ``source``) as ``target`` would have made them."""
    if source == target:
        return inputs
    images = source.denormalise(inputs)
    if source.flips_channels != target.flips_channels:
        images = images.flip(1)
    return target.normalise(images)


class InputConverter:
    """Maps each network to the conversion of the shared batch into its own normalisation."""

    def __init__(self):
        self.reference = Normalisation(None, None, False)
        self.per_model: dict[int, Normalisation] = {}

    def set_reference(self, preprocessor: nn.Module | None) -> None:
        """The preprocessor that made the batch (the student's)."""
        self.reference = Normalisation.of(preprocessor)

    def add_model(self, model: nn.Module) -> None:
        self.per_model[id(model)] = Normalisation.of(getattr(model, 'data_preprocessor', None))

    def __call__(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        target = self.per_model.get(id(model))
        if target is None:
            return inputs
        return convert_inputs(inputs, self.reference, target)


def sum_mm_losses(losses: dict) -> torch.Tensor:
    """Sum the entries of an OpenMMLab loss dict whose name contains 'loss' (as mmengine's
    ``parse_losses`` does: 'decode.acc_seg' is a metric, not a loss)."""
    total = None
    for name, value in losses.items():
        if 'loss' not in name:
            continue
        value = sum(v.mean() for v in value) if isinstance(value, (list, tuple)) else value.mean()
        total = value if total is None else total + value
    if total is None:
        raise ValueError(f'the model returned no loss term; got {sorted(losses)}')
    return total
