"""Connectors align a student feature map to its teacher's shape (README, "Distil your own
classifier from Python")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.registry import CONNECTORS


def check_alignable(student_feat: torch.Tensor, teacher_feat: torch.Tensor, tap: str) -> None:
    """Raise a clear error when two tapped features cannot be aligned."""
    s, t = tuple(student_feat.shape), tuple(teacher_feat.shape)
    if student_feat.dim() != 4 or teacher_feat.dim() != 4:
        raise ValueError(f'tap {tap}: feature distillation needs (B,C,H,W) maps, got student '
                         f'{s} and teacher {t}')
    if s[0] != t[0]:
        raise ValueError(f'tap {tap}: student {s} and teacher {t} differ in batch size')


def resize_to(feat: torch.Tensor, size) -> torch.Tensor:
    if tuple(feat.shape[-2:]) == tuple(size):
        return feat
    return F.interpolate(feat, size=tuple(size), mode='bilinear', align_corners=False)


@CONNECTORS.register_module()
class ConvBNConnector(nn.Module):
    """1x1 conv (Cs -> Ct) + BN, then bilinear resize to the teacher's (H, W)."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.student_channels = student_channels
        self.conv = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)

    def forward(self, student_feat: torch.Tensor, size) -> torch.Tensor:
        if student_feat.shape[1] != self.student_channels:
            raise ValueError(f'connector built for {self.student_channels} student channels got '
                             f'a feature of shape {tuple(student_feat.shape)}')
        return resize_to(self.bn(self.conv(student_feat)), size)


@CONNECTORS.register_module()
class IdentityConnector(nn.Module):
    """No parameters: only resizes. For pairs whose channels already match."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        if student_channels != teacher_channels:
            raise ValueError(f'IdentityConnector needs equal channels, got student '
                             f'{student_channels} and teacher {teacher_channels}')

    def forward(self, student_feat: torch.Tensor, size) -> torch.Tensor:
        return resize_to(student_feat, size)


def build_connector(cfg, student_channels: int, teacher_channels: int) -> nn.Module:
    """``'auto'`` (the default of every distiller): the parameter-free ``IdentityConnector``
    where the channel counts match (ADM adds no trainable parameters, as its paper says), a
    ``ConvBNConnector`` where they differ; or any registered connector config."""
    if cfg is None or cfg == 'auto' or (isinstance(cfg, dict) and cfg.get('type') == 'auto'):
        cfg = dict(type='IdentityConnector' if student_channels == teacher_channels
                   else 'ConvBNConnector')
    cfg = dict(cfg)
    return CONNECTORS.build(cfg, default_args=dict(student_channels=student_channels,
                                                    teacher_channels=teacher_channels))
