"""Helpers on per-pixel maps shared by the stages: top-k masks, their IoU and its chance level.

A *map* is an H×W array of one value per pixel (a gradient map, a one-pixel drop map, a CAM, a map of
a perturbation); a *mask* is a boolean array of the same shape. Statistics over images (intervals,
the verdict rule, the minimum-images gate) are in :mod:`pixelrobust.stats`; this module holds what
is computed within one map or pair of maps.

Two tie rules for the top-k set, each kept for its users (:func:`top_k_mask`):

* ``pixel_order``: exactly ``round(k/100 · size)`` entries, ties to the earlier entry (row-major) —
  P3's masks (:func:`pixelrobust.gradients.pixel_mask`: masked PGD, the PRM lattice sweep);
* ``shuffled``: ties in a fixed pseudo-random order of the entries — the map comparisons (P2's maps
  against the CAM, the synthesis, robust vs standard), with at least one entry: a map with many equal
  values (‖δ‖² of L∞ PGD, whose every pixel sits at ±ε) would otherwise put its top k % in the first
  rows of the image.
"""

from __future__ import annotations

import numpy as np
import torch

TIES = ("pixel_order", "shuffled")


def n_selected(n_pixels: int, k_percent: float) -> int:
    """How many of ``n_pixels`` entries the top ``k_percent`` % are: ``round(k/100 · n)`` (Python's round)."""
    if not 0 <= k_percent <= 100:
        raise ValueError(f"k_percent must be in [0, 100], got {k_percent}")
    return int(round(n_pixels * k_percent / 100.0))


def top_k_mask(values, k_percent: float, *, ties: str, at_least_one: bool = False) -> np.ndarray:
    """Boolean mask (``values``' shape) of the ``round(k/100 · size)`` largest entries of ``values``.

    ``ties``: ``pixel_order`` (equal values go to the earlier entry, row-major) or ``shuffled`` (equal
    values in a fixed pseudo-random order of the entries, the same for every map of one size); see the
    module doc for who uses which. ``at_least_one``: never an empty mask (an IoU of empty sets says
    nothing); without it a small ``k_percent`` selects no entry (masked PGD at k 0 perturbs nothing).
    Values are compared as float64; NaN has no rank and is refused."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    v = np.asarray(values, dtype=np.float64)
    flat = v.ravel()
    if np.isnan(flat).any():
        raise ValueError("a map with NaN has no top k; compare maps of finite values")
    n = n_selected(flat.size, k_percent)
    if at_least_one:
        n = max(1, n)
    if ties == "pixel_order":
        order = np.argsort(-flat, kind="stable")
    else:
        shuffle = np.random.default_rng(flat.size).permutation(flat.size)
        order = np.lexsort((shuffle, -flat))
    mask = np.zeros(flat.size, bool)
    mask[order[:n]] = True
    return mask.reshape(v.shape)


def iou(a, b) -> float:
    """Intersection over union of two boolean masks (tensors or arrays; 1.0 when both are empty)."""
    a, b = torch.as_tensor(a, dtype=torch.bool), torch.as_tensor(b, dtype=torch.bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every boolean set of ``a`` (N×P) with every set of ``b`` (M×P): N×M (1 where both are empty)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def chance_iou(d: float, t: float) -> float:
    """Expected IoU of two independent random masks covering shares ``d`` and ``t`` of the pixels:
    dt / (d + t − dt) (q / (2 − q) for two top-k % sets, q = k / 100)."""
    return d * t / (d + t - d * t)


__all__ = ["TIES", "chance_iou", "iou", "iou_matrix", "n_selected", "top_k_mask"]
