"""Wide ResNets for CIFAR (CRD / RepDistiller ``models/wrn.py``): WRN-depth-width.

Pre-activation blocks (BN-ReLU-conv), three groups at strides 1, 2, 4, then a final BN-ReLU,
pooling and fc.  As in ``cifar_resnet``: logits-only ``forward``, ``forward_head`` for the
block3 output, no in-place ReLUs (they would corrupt hooked features), adaptive pooling
(identical to the reference ``avg_pool2d(8)`` on 32x32 inputs).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from distill.registry import MODELS


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with identity or 1x1-conv shortcut."""

    def __init__(self, in_channels, out_channels, stride, drop_rate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride,
                               padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.drop_rate = drop_rate
        self.same_shape = in_channels == out_channels
        self.conv_shortcut = None if self.same_shape else nn.Conv2d(
            in_channels, out_channels, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x):
        activated = self.relu1(self.bn1(x))
        # Reference behaviour: when the shape changes, the shortcut also sees the activated
        # input; otherwise the shortcut is the raw input.
        shortcut = x if self.same_shape else self.conv_shortcut(activated)
        out = self.relu2(self.bn2(self.conv1(activated)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out)


class NetworkBlock(nn.Module):
    """A group of ``num_layers`` wide blocks; only the first one changes stride/width."""

    def __init__(self, num_layers, in_channels, out_channels, stride, drop_rate=0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_channels if i == 0 else out_channels, out_channels,
                           stride if i == 0 else 1, drop_rate)
            for i in range(num_layers)
        ])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for 32x32 inputs.

    Args:
        depth: 6n + 4 (n blocks per group).
        num_classes: size of the logits.
        widen_factor: width multiplier k (widths 16k, 32k, 64k).
        drop_rate: dropout inside blocks (0 in the distillation papers).
        in_channels: channels of the input image.
    """

    head_input = 'block3'

    def __init__(self, depth, num_classes=100, widen_factor=1, drop_rate=0.0, in_channels=3):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f'WideResNet depth must be 6n+4 (16, 22, 28, 40, ...), got {depth}')
        blocks_per_group = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.block1 = NetworkBlock(blocks_per_group, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(blocks_per_group, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(blocks_per_group, widths[2], widths[3], 2, drop_rate)
        # Final pre-activation: the blocks end with a conv, so BN-ReLU comes before pooling.
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(widths[3], num_classes)
        self.num_features = widths[3]
        self._init_weights()

    def _init_weights(self):
        # Reference init: N(0, 2 / (k*k*out_channels)) == Kaiming normal, fan_out, for convs.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.Linear):
                nn.init.constant_(module.bias, 0)

    def forward_features(self, x):
        """Image -> output of ``block3`` (B, 64k, H/4, W/4), before the final BN-ReLU."""
        x = self.conv1(x)
        x = self.block1(x)
        x = self.block2(x)
        return self.block3(x)

    def forward_head(self, feature):
        """Output of ``block3`` (possibly refined by a distiller) -> logits."""
        activated = self.relu(self.bn1(feature))
        pooled = torch.flatten(F.adaptive_avg_pool2d(activated, 1), 1)
        return self.fc(pooled)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@MODELS.register_module(name='wrn_16_1')
def wrn_16_1(num_classes=100, **kwargs):
    return WideResNet(16, num_classes=num_classes, widen_factor=1, **kwargs)


@MODELS.register_module(name='wrn_16_2')
def wrn_16_2(num_classes=100, **kwargs):
    return WideResNet(16, num_classes=num_classes, widen_factor=2, **kwargs)


@MODELS.register_module(name='wrn_40_1')
def wrn_40_1(num_classes=100, **kwargs):
    return WideResNet(40, num_classes=num_classes, widen_factor=1, **kwargs)


@MODELS.register_module(name='wrn_40_2')
def wrn_40_2(num_classes=100, **kwargs):
    return WideResNet(40, num_classes=num_classes, widen_factor=2, **kwargs)
