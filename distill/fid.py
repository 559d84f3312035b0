"""FID with a feature network of your own: what can be computed offline, without Inception.

The FID of papers runs Inception-v3 features (weights downloaded from the internet). Where
those cannot be had, the Fréchet distance between the Gaussians of *another* network's
features of real and generated images still ranks generators against each other; its values
are not comparable to papers' FIDs or to FIDs of another feature network. Every number this
module returns is labelled with the network that produced it (README, Diffusion).

A feature network is a classifier of this library's registry (``distill.registry.MODELS``)
and its state dict: ``dict(model=dict(type='tiny_cnn', num_classes=10, in_channels=1, ...),
checkpoint='feature_net.pth')``; its features are the input of its last ``nn.Linear`` (the
pooled penultimate layer). torchmetrics' ``FrechetInceptionDistance`` does the statistics.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn


class PenultimateFeatures(nn.Module):
    """``images in [0, 1] (N, C, H, W) -> (N, D)``: the input of ``classifier``'s last
    ``nn.Linear``; grey images are repeated to three channels, or RGB averaged to one, to match
    the classifier's first convolution."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        convs = [m for m in classifier.modules() if isinstance(m, nn.Conv2d)]
        if not linears or not convs:
            raise ValueError(f'a feature network is a classifier with a convolution and a last '
                             f'nn.Linear; {type(classifier).__name__} has '
                             f'{len(convs)} and {len(linears)}')
        self.classifier = classifier.eval().requires_grad_(False)
        self.head = linears[-1]
        self.in_channels = convs[0].in_channels
        self.num_features = self.head.in_features  # torchmetrics reads this (no dummy input)
        self._captured = None
        self.head.register_forward_pre_hook(self._capture)

    def _capture(self, module, inputs):
        self._captured = inputs[0]

    def train(self, mode: bool = True):  # torchmetrics calls .train(); the network stays eval
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        if images.shape[1] != self.in_channels:
            if images.shape[1] == 1:
                images = images.expand(-1, self.in_channels, -1, -1)
            elif self.in_channels == 1:
                images = images.mean(dim=1, keepdim=True)
            else:
                raise ValueError(f'images of {images.shape[1]} channels for a feature network '
                                 f'of {self.in_channels}')
        self.classifier(images)
        features, self._captured = self._captured, None
        return features.flatten(1).double()


def load_feature_network(spec: dict) -> PenultimateFeatures:
    """``dict(model=<registry config>, checkpoint=<state dict file>)`` -> the feature module.
    The file is read with ``weights_only=True`` (no code runs)."""
    from distill.models import build_model
    if not isinstance(spec, dict) or set(spec) - {'model', 'checkpoint'} or 'model' not in spec:
        raise ValueError(f"feature_network is dict(model=<model config>, checkpoint=<file>), "
                         f"got {spec!r}")
    classifier = build_model(dict(spec['model']))
    path = spec.get('checkpoint')
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f'feature network checkpoint {str(path)!r} not found')
        state = torch.load(path, map_location='cpu', weights_only=True)
        classifier.load_state_dict(state.get('state_dict', state))
    return PenultimateFeatures(classifier)


def describe(spec: dict) -> str:
    """What the FID was computed with, for the records and the README's tables."""
    model = dict(spec['model'])
    name = model.pop('type')
    args = ', '.join(f'{k}={v}' for k, v in sorted(model.items()))
    return f"{name}({args}) penultimate features, {Path(spec.get('checkpoint') or '-').name}"


def feature_fid(real: torch.Tensor, fake: torch.Tensor, features: nn.Module,
                batch_size: int = 256) -> float:
    """FID of ``fake`` against ``real`` (both (N, C, H, W) in [-1, 1]) in ``features``' space
    (torchmetrics' ``FrechetInceptionDistance`` with a custom feature network)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f'an FID needs at least 2 images on each side, got {len(real)} real '
                         f'and {len(fake)} generated')
    metric = FrechetInceptionDistance(feature=features, normalize=True)
    for images, is_real in ((real, True), (fake, False)):
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size].float().cpu().clamp(-1, 1)
            metric.update((chunk + 1) / 2, real=is_real)
    value = float(metric.compute())
    return value if math.isfinite(value) else float('nan')
