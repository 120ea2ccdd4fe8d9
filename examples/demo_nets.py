"""A user's own network, for the entry-point model path (``arch: python:demo_nets:small_cnn``).

An example of what config/README.md ("Your own model", way 4) asks of a module: importable by the workflow's
jobs (here: put ``examples/`` on ``PYTHONPATH``) and a function returning an ``nn.Module`` that takes
normalised images and returns logits. ``num_classes`` is passed by the workflow because the function takes it;
other arguments come from ``models.<name>.kwargs``. Used by ``config/own_models.yaml`` (a wiring check,
trained for a minute by ``tools/demo_checkpoints.py``; not a model to study).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))


class SmallCNN(nn.Module):
    """Six 3x3 convolutions (width, 2·width, 4·width channels; max pooling after the second and fourth),
    global average pooling, a linear head. ReLUs are functional, so the Grad-CAM++ layer is found by tracing
    the autograd graph (``features.5``'s output, 8x8 on 32x32 images), not by module type."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.features = nn.ModuleList(
            [
                _conv(3, c1),
                _conv(c1, c1),
                _conv(c1, c2),
                _conv(c2, c2),
                _conv(c2, c3),
                _conv(c3, c3),
            ]
        )
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.features):
            x = F.relu(block(x))
            if i in (1, 3):
                x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def small_cnn(num_classes: int = 10, width: int = 32) -> nn.Module:
    """The entry point: ``models.<name>.arch: python:demo_nets:small_cnn`` (``kwargs: {width: 32}``)."""
    return SmallCNN(num_classes, width)
