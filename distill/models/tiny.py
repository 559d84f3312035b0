"""``tiny_cnn``: a very small CNN for CPU tests and demos.

Three stages at strides 1, 2, 4 (the layout of the CIFAR ResNets, so the same distillers
and tap strides apply) of conv3x3-BN-ReLU (one, one, two), then global pooling and a linear
head.  At width 16 a training step on a batch of 64 32x32 images takes about 35 ms on one
CPU thread.
"""
import torch
import torch.nn as nn

from distill.registry import MODELS


def conv_bn_relu(in_channels, out_channels, stride=1):
    # No in-place ReLU: a forward hook on the BN would otherwise see its output overwritten.
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class TinyCNN(nn.Module):
    """stage1 (stride 1, width) -> stage2 (stride 2, 2*width) -> stage3 (stride 4, 4*width).

    Args:
        num_classes: size of the logits.
        width: channels of stage1; stage2 and stage3 double it twice.
        in_channels: channels of the input image.
    """

    head_input = 'stage3'

    def __init__(self, num_classes=10, width=16, in_channels=3):
        super().__init__()
        self.stage1 = nn.Sequential(*conv_bn_relu(in_channels, width))
        self.stage2 = nn.Sequential(*conv_bn_relu(width, 2 * width, stride=2))
        # A second conv only in the last stage: it widens the receptive field to 17 px, enough
        # to span a shape of the synthetic set, while a step stays well under 50 ms.
        self.stage3 = nn.Sequential(*conv_bn_relu(2 * width, 4 * width, stride=2),
                                    *conv_bn_relu(4 * width, 4 * width))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        self.num_features = 4 * width
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward_features(self, x):
        """Image -> output of ``stage3`` (B, 4*width, H/4, W/4)."""
        return self.stage3(self.stage2(self.stage1(x)))

    def forward_head(self, feature):
        """Output of ``stage3`` (possibly refined by a distiller) -> logits."""
        return self.fc(torch.flatten(self.avgpool(feature), 1))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@MODELS.register_module(name='tiny_cnn')
def tiny_cnn(num_classes=10, width=16, in_channels=3, **kwargs):
    return TinyCNN(num_classes=num_classes, width=width, in_channels=in_channels, **kwargs)
