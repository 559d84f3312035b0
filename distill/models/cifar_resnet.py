"""CIFAR ResNets of the distillation literature (CRD / RepDistiller ``models/resnet.py``).

Same layers, widths and initialisation as the reference, so results are comparable with the
papers' tables.  Two deliberate differences, neither of which changes the parameters:

* ``forward(x)`` returns logits only; intermediate features are read with forward hooks
  (``distill.taps``) instead of ``is_feat=True``.
* ReLUs are not in-place.  A hooked feature map that the next module overwrote in place would
  be silently wrong, and autograd would refuse to backpropagate through it.

The pooling is adaptive: identical to the reference ``AvgPool2d(8)`` on 32x32 inputs, and it
still works on other input sizes.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from distill.registry import MODELS


def conv3x3(in_channels, out_channels, stride=1):
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                     bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; ReLU after the sum."""

    expansion = 1

    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: a 3x3 stem, three stages at strides 1, 2, 4, pool, fc.

    Args:
        depth: 6n + 2 (n basic blocks per stage).
        stage_channels: widths of (stem, layer1, layer2, layer3).
        num_classes: size of the logits.
        in_channels: channels of the input image.
    """

    # The module whose output ``forward_head`` takes (see ``distill.taps``).
    head_input = 'layer3'

    def __init__(self, depth, stage_channels, num_classes=100, in_channels=3):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f'CifarResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}')
        blocks_per_stage = (depth - 2) // 6
        stem_channels, *widths = stage_channels

        self.conv1 = nn.Conv2d(in_channels, stem_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU()
        self._stage_in_channels = stem_channels
        self.layer1 = self._make_stage(widths[0], blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(widths[1], blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(widths[2], blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2] * BasicBlock.expansion, num_classes)
        self.num_features = self.fc.in_features
        self._init_weights()

    def _make_stage(self, channels, num_blocks, stride):
        out_channels = channels * BasicBlock.expansion
        downsample = None
        if stride != 1 or self._stage_in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._stage_in_channels, out_channels, kernel_size=1, stride=stride,
                          bias=False),
                nn.BatchNorm2d(out_channels),
            )
        blocks = [BasicBlock(self._stage_in_channels, channels, stride, downsample)]
        self._stage_in_channels = out_channels
        blocks += [BasicBlock(out_channels, channels) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def _init_weights(self):
        # As in the reference: Kaiming (fan_out) convs, unit-scale BN, default Linear.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward_features(self, x):
        """Image -> output of ``layer3`` (B, C, H/4, W/4)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        return self.layer3(x)

    def forward_head(self, feature):
        """Output of ``layer3`` (possibly refined by a distiller) -> logits."""
        pooled = torch.flatten(self.avgpool(feature), 1)
        return self.fc(pooled)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


# One small factory per variant, as in timm: the registry name is the paper's name.
_THIN = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


@MODELS.register_module(name='resnet8')
def resnet8(num_classes=100, **kwargs):
    return CifarResNet(8, _THIN, num_classes=num_classes, **kwargs)


@MODELS.register_module(name='resnet14')
def resnet14(num_classes=100, **kwargs):
    return CifarResNet(14, _THIN, num_classes=num_classes, **kwargs)


@MODELS.register_module(name='resnet20')
def resnet20(num_classes=100, **kwargs):
    return CifarResNet(20, _THIN, num_classes=num_classes, **kwargs)


@MODELS.register_module(name='resnet32')
def resnet32(num_classes=100, **kwargs):
    return CifarResNet(32, _THIN, num_classes=num_classes, **kwargs)


@MODELS.register_module(name='resnet44')
def resnet44(num_classes=100, **kwargs):
    return CifarResNet(44, _THIN, num_classes=num_classes, **kwargs)


@MODELS.register_module(name='resnet56')
def resnet56(num_classes=100, **kwargs):
    return CifarResNet(56, _THIN, num_classes=num_classes, **kwargs)


@MODELS.register_module(name='resnet110')
def resnet110(num_classes=100, **kwargs):
    return CifarResNet(110, _THIN, num_classes=num_classes, **kwargs)


@MODELS.register_module(name='resnet8x4')
def resnet8x4(num_classes=100, **kwargs):
    return CifarResNet(8, _WIDE, num_classes=num_classes, **kwargs)


@MODELS.register_module(name='resnet32x4')
def resnet32x4(num_classes=100, **kwargs):
    return CifarResNet(32, _WIDE, num_classes=num_classes, **kwargs)
