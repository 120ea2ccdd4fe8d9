"""The CIFAR ResNets of github EhanW/advrob-cifar10 (``model/ResNet.py``, MIT), rewritten.

Same layers and parameter names as that repository, so its state dicts (``pretrained/resnet20.pth`` and
``pretrained/resnet20_pgd.pth``) load strictly: a 3×3 stem ``conv_1``/``bn_1``; three stages
``stage_1..3`` of basic blocks (16, 32, 64 channels; the first block of stages 2 and 3 halves the
resolution); blocks with ``conv_1``, ``bn_1``, ``conv_2``, ``bn_2`` and, where the shape changes, a
``downsample`` branch (1×1 convolution with stride 2, then batch norm); global average pooling; ``fc``.
The networks take *normalised* images (that repository normalises with ImageNet's mean and std
outside the network); wrap them in :class:`pixelrobust.models.Classifier` with those.

As a function it is :class:`pixelrobust.models.CifarResNet` with shortcut ``"B"`` (the same layers in the
same order; tests/unit/test_zoo.py checks equal logits with the parameters mapped in order). It is
kept as its own module because the entry-point path loads a checkpoint strictly in the checkpoint's own
key layout, which is the point of this first non-built-in model (issue #27); a built-in architecture
entry with a key adapter would do the same for this one pair.

Differences that do not change any output: non-inplace ReLUs, and adaptive average pooling where the
original pools with a fixed 8×8 window (identical on 32×32 inputs, the only size it was trained on).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv_1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(planes)
        self.conv_2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn_2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn_2(self.conv_2(F.relu(self.bn_1(self.conv_1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet-(6n+2) with EhanW's parameter names."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv_1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(16)
        in_planes = 16
        for s, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = []
            for i in range(n):
                blocks.append(Block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            setattr(self, f"stage_{s}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_1(self.conv_1(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet20(num_classes: int = 10) -> ResNet:
    return ResNet(20, num_classes)


def resnet56(num_classes: int = 10) -> ResNet:
    return ResNet(56, num_classes)
