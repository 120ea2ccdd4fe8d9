"""Grad-CAM++ maps (pytorch_grad_cam) for our wrapped models."""

from __future__ import annotations

import numpy as np
import torch

from .models import Classifier, CifarResNet
from .runtime import model_device


def target_layer(model: Classifier) -> torch.nn.Module:
    """The layer whose activations Grad-CAM++ weighs: the last convolutional block."""
    net = model.net
    if isinstance(net, CifarResNet):
        return net.layer3[-1]
    if hasattr(net, "features"):  # torchvision MobileNetV2 and similar
        return net.features[-1]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ValueError(f"model {model.name}: no convolutional layer for Grad-CAM++")
    return convs[-1]


def gradcam_pp(model: Classifier, images: torch.Tensor, classes: torch.Tensor | list[int], batch_size: int = 64) -> np.ndarray:
    """Grad-CAM++ maps (N×H×W, each scaled to [0, 1]) of ``classes`` on ``images`` in [0, 1]."""
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = model_device(model)
    classes = [int(c) for c in classes]
    out = []
    with GradCAMPlusPlus(model=model, target_layers=[target_layer(model)]) as cam:
        for s in range(0, len(images), batch_size):
            # the input carries the graph, so frozen (requires_grad=False) models work too
            x = images[s : s + batch_size].to(device).clone().requires_grad_(True)
            targets = [ClassifierOutputTarget(c) for c in classes[s : s + batch_size]]
            out.append(cam(input_tensor=x, targets=targets))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0,) + tuple(images.shape[2:]), np.float32)
