"""Input-gradient maps (P3): where in the image a classifier's loss is sensitive.

Two maps, both H×W, averaged over colour channels:

* :func:`dataset_gradient_map` — our reading of the paper's definition (its text could not be read;
  docs/sources.md): mean over images of |∂L/∂x| (cross-entropy
  with the true label), for a model wrapped to take [0, 1] inputs.
* :func:`architecture_gradient_map` — what the authors' code uses for its masks: a copy of the
  network with every weight set to one constant, biases zero, batch-norm statistics neutral
  (mean 0, variance 1, affine weight = the constant, bias 0), an all-ones input and a backward pass of
  ones from the logits; mean |grad| over channels, scaled to max 1. It depends on the architecture
  only (strides, kernel overlaps), not on what the network learned.

Masks from a map (:func:`pixel_mask`) select exactly ``round(k/100 · H·W)`` pixels.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .data import load_split, read_manifest
from .io import save_npz
from .maps import n_selected, top_k_mask
from .models import build_model
from .runtime import model_device

log = logging.getLogger("pixelrobust")

MASK_KINDS = ("top", "bottom", "random")


def input_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """∂CE/∂x of each image (summed loss, so each image's gradient is its own), N×C×H×W."""
    x = images.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


LOSSES = ("margin", "ce")


def loss_gradient(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, kind: str = "margin"
) -> torch.Tensor:
    """∂loss/∂x at ``x`` of the summed ``margin`` (best other logit − true logit) or ``ce`` loss
    (:func:`input_gradients`): the objective of an attack step."""
    if kind == "ce":
        return input_gradients(model, x, labels)
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    true = logits.gather(1, labels[:, None])[:, 0]
    loss = (logits.scatter(1, labels[:, None], -math.inf).amax(1) - true).sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad


# ours: a backward pass keeps every activation of its batch. In the reference run (docs/reference/, 2026-11-29) the
# MobileNetV2 gradient map at batch 256 of 224 x 224 images peaked at 13.6 GB (Snakemake's sampled max_rss; 20.8 GB
# for the whole run by /usr/bin/time), more than a 16 GB laptop has. So a backward batch holds at most this many
# input pixels: 32 images at 224 x 224 (about 2 GB for MobileNetV2), while 32 x 32 images keep any batch up to 1568.
BACKWARD_PIXELS = 32 * 224 * 224


def backward_batch(batch_size: int, hw: tuple[int, int]) -> int:
    """The images per backward pass: ``batch_size``, capped so that a batch holds at most :data:`BACKWARD_PIXELS`
    input pixels (at least one image)."""
    return max(1, min(int(batch_size), BACKWARD_PIXELS // (int(hw[0]) * int(hw[1]))))


def dataset_gradient_map(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Mean over images and channels of |∂L/∂x|: an H×W map (float64 on the CPU). ``batch_size`` images per
    backward pass, capped by :func:`backward_batch` for large images."""
    if len(images) == 0:
        raise ValueError("dataset_gradient_map needs at least one image")
    batch_size = backward_batch(batch_size, images.shape[-2:])
    device = model_device(model)
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    for i in range(0, len(images), batch_size):
        g = input_gradients(
            model, images[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)
        )
        if not torch.isfinite(g).all():
            raise FloatingPointError(f"non-finite input gradients on images {i}..{i + batch_size}")
        total += g.abs().mean(dim=1).sum(dim=0).double().cpu()
    return total / len(images)


def neutral_copy(net: nn.Module, constant: float = 0.1) -> nn.Module:
    """A copy of ``net`` with every weight = ``constant``, biases 0, BN statistics neutral (authors' ``get_rf``)."""
    net = copy.deepcopy(net).eval()
    with torch.no_grad():
        for m in net.modules():
            for name, p in m.named_parameters(recurse=False):
                p.fill_(0.0 if name == "bias" else constant)
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return net


def architecture_gradient_map(
    net: nn.Module, input_shape: tuple[int, int, int], constant: float = 0.1
) -> torch.Tensor:
    """The architecture-induced map of ``net`` (the bare network, without input normalisation), max 1.

    Raises when the map is zero everywhere (e.g. every unit saturated); pick another ``constant``.
    """
    neutral = neutral_copy(net, constant)
    device = model_device(neutral)
    x = torch.ones(1, *input_shape, device=device, requires_grad=True)
    out = neutral(x)
    (grad,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out))
    m = grad.abs().mean(dim=(0, 1)).double().cpu()
    if not torch.isfinite(m).all() or m.max() <= 0:
        raise FloatingPointError(
            f"the architecture gradient map of {type(net).__name__} with constant {constant} is zero or not finite "
            "(saturated or overflowing activations); change gradients.architecture_constant"
        )
    return m / m.max()


def pixel_mask(
    grad_map: torch.Tensor | np.ndarray, k_percent: float, kind: str = "top", seed: int = 0
) -> torch.Tensor:
    """Boolean H×W mask of exactly ``round(k % · H·W)`` pixels.

    ``top``: the largest values of ``grad_map``; ``bottom``: the smallest; ``random``: uniformly at
    random (``seed``). Ties are broken by pixel order (row-major: :func:`pixelrobust.maps.top_k_mask`'s
    ``pixel_order`` rule), so masks are deterministic.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    gm = np.asarray(grad_map, dtype=np.float64)
    if gm.ndim != 2:
        raise ValueError(f"a gradient map is H×W, got shape {tuple(gm.shape)}")
    if kind == "random":
        order = np.random.default_rng(seed).permutation(gm.size)
        mask = np.zeros(gm.size, bool)
        mask[order[: n_selected(gm.size, k_percent)]] = True
        return torch.from_numpy(mask.reshape(gm.shape))
    return torch.from_numpy(top_k_mask(gm if kind == "top" else -gm, k_percent, ties="pixel_order"))


def centre_closeness(shape: tuple[int, int]) -> np.ndarray:
    """H×W map of closeness to the image centre: minus the Euclidean distance of each pixel's centre from the
    image's centre ``((H − 1)/2, (W − 1)/2)``. No data, no model: the geometry a gradient map may merely repeat
    (convolutions with zero padding see border pixels through fewer paths)."""
    h, w = (int(v) for v in shape)
    r, c = np.mgrid[0:h, 0:w]
    return -np.hypot(r - (h - 1) / 2, c - (w - 1) / 2)


def centre_mask(shape: tuple[int, int], k_percent: float) -> torch.Tensor:
    """Boolean H×W mask of the ``round(k % · H·W)`` pixels nearest the image centre (ours: a data-free control
    of P3's ordering, :func:`pixelrobust.summary.p3_beyond_geometry`). Pixels at equal distance (the symmetric rings)
    are taken in :func:`pixelrobust.maps.top_k_mask`'s fixed shuffled order, not row by row, so the ring cut at
    the boundary is not biased towards the top rows."""
    return torch.from_numpy(top_k_mask(centre_closeness(shape), k_percent, ties="shuffled"))


def gradient_map(
    *,
    data,
    weights,
    out: dict,
    spec: dict,
    split: str,
    n_images: int | None,
    start: int,
    constant: float,
    batch_size: int,
    device,
) -> dict:
    """Rule ``gradient_map``: both maps of one model, saved to ``out["npz"]`` (dataset_map, architecture_map).

    The dataset map averages images ``start`` .. ``start + n_images - 1`` of ``split`` (capped by what exists;
    ``gradients.start``, so that a test-split map need not use the images masked PGD attacks)."""
    counts = read_manifest(data)["counts"]
    if split not in counts:
        raise ValueError(
            f"gradients.split for {spec['dataset']} is {split!r}, but the prepared dataset has only {sorted(counts)}"
        )
    if start >= counts[split]:
        raise ValueError(
            f"gradients.start for {spec['dataset']} is {start}, but the prepared {split} split has only "
            f"{counts[split]} images; lower gradients.start.{spec['dataset']}"
        )
    stop = counts[split] if n_images is None else min(start + n_images, counts[split])
    if n_images is not None and start + n_images > counts[split]:
        log.warning(
            "gradients.n_images.%s asks for %d %s images from %d, but the prepared split has %d: the map averages "
            "the %d there are (recorded as n_images in %s)",
            spec["dataset"],
            n_images,
            split,
            start,
            counts[split],
            stop - start,
            out["npz"],
        )
    images = load_split(data, split, start, stop)
    model = build_model(spec, weights, device)
    dmap = dataset_gradient_map(model, images.images, images.labels, batch_size)
    amap = architecture_gradient_map(model.net, tuple(images.images.shape[1:]), constant)
    save_npz(
        out["npz"],
        dataset_map=dmap.numpy(),
        architecture_map=amap.numpy(),
        split=np.array(split),
        n_images=np.array(stop - start),
        start=np.array(start),
        constant=np.array(constant),
    )
    log.info(
        "%s: gradient map over %d %s images from %d, max %.3g mean %.3g",
        spec["name"],
        stop - start,
        split,
        start,
        dmap.max(),
        dmap.mean(),
    )
    return {"dataset_map": dmap, "architecture_map": amap}
