"""A user's own model for the app tests: ``model._target_=custom_model.make_net model.width=8`` with this folder
on PYTHONPATH (the README's "Your own model" recipe)."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn


def make_net(width: int = 4, in_channels: int = 3, classes: int = 10) -> nn.Sequential:
    """A small classifier: strided 3x3 conv, ReLU, 3x3 conv, global average pool, linear head.

    >>> make_net(width=8)[0]
    Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
    """
    return nn.Sequential(OrderedDict(
        stem=nn.Conv2d(in_channels, width, 3, stride=2, padding=1),
        act=nn.ReLU(),
        body=nn.Conv2d(width, width, 3, padding=1),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        head=nn.Linear(width, classes),
    ))


class Rolled(nn.Module):
    """A conv followed by a median along the width, an op without a receptive-field rule at the module or the aten
    level (the app's ``fallback`` option)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)

    def forward(self, x):
        import torch

        return torch.median(self.conv(x), dim=-1, keepdim=True).values


class PhaseSum(nn.Module):
    """The four sub-pixel phases of 2x2 blocks added, then a conv: paths of different centres (an alignment warning)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2])
