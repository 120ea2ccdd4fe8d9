"""Regions of an image (SLIC superpixels) and a semantic score per region.

Semantic scores (ours, documented in docs/decisions.md):

* ``occlusion``: the drop in true-class probability when the region alone is occluded, i.e. its
  pixels are replaced by a Gaussian-blurred copy of the image (``mode='blur'``, σ = image side /
  16 by default) or by the region's mean colour (``mode='mean'``). Positive: the region supports
  the decision.
* ``cam``: the mean Grad-CAM++ value (true class, map in [0, 1]) inside the region.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.segmentation import slic
from torchvision.transforms import functional as TF

from .errors import ConfigError
from .runtime import model_device


def slic_segments(
    image: torch.Tensor, n_segments: int, compactness: float, sigma: float = 0.0
) -> np.ndarray:
    """SLIC superpixels of one image (3×H×W in [0, 1]) as an H×W int32 map of labels 0..R-1.

    Labels are renumbered consecutively, so every label in 0..R-1 has at least one pixel.
    """
    if n_segments < 1 or compactness <= 0:
        raise ConfigError(
            f"SLIC needs n_segments >= 1 and compactness > 0, got {n_segments}, {compactness}"
        )
    img = image.permute(1, 2, 0).double().numpy()
    seg = slic(
        img,
        n_segments=int(n_segments),
        compactness=float(compactness),
        sigma=float(sigma),
        start_label=0,
        channel_axis=-1,
    )
    _, inverse = np.unique(seg, return_inverse=True)
    return inverse.reshape(seg.shape).astype(np.int32)


def check_segments(segments: np.ndarray, shape: tuple[int, int]) -> int:
    """Validate a label map; return the number of regions."""
    if segments.shape != tuple(shape):
        raise ValueError(f"segmentation has shape {segments.shape}, the image is {tuple(shape)}")
    labels = np.unique(segments)
    n = int(segments.max()) + 1 if segments.size else 0
    if labels.min() < 0 or len(labels) != n:
        missing = sorted(set(range(n)) - set(labels.tolist()))
        raise ValueError(
            f"segmentation labels must be 0..R-1 with no empty region; empty regions: {missing[:10]}"
        )
    return n


def occlude(
    image: torch.Tensor, segments: np.ndarray, mode: str = "blur", sigma: float | None = None
) -> torch.Tensor:
    """R images, each with one region occluded (R×3×H×W)."""
    c, h, w = image.shape
    n = check_segments(segments, (h, w))
    seg = torch.from_numpy(segments).long()
    masks = torch.nn.functional.one_hot(seg, n).permute(2, 0, 1).bool()  # R×H×W
    if mode == "blur":
        s = float(sigma) if sigma else max(h, w) / 16
        k = 2 * int(round(3 * s)) + 1
        filler = TF.gaussian_blur(image[None], [k, k], [s, s])[0].expand(n, c, h, w)
    elif mode == "mean":
        counts = masks.sum((1, 2)).clamp(min=1).float()
        means = torch.einsum("chw,rhw->rc", image, masks.float()) / counts[:, None]
        filler = means[:, :, None, None].expand(n, c, h, w)
    else:
        raise ConfigError(f"occlusion mode must be 'blur' or 'mean', got {mode!r}")
    return torch.where(masks[:, None], filler, image[None].expand(n, c, h, w))


@torch.no_grad()
def occlusion_scores(
    model: torch.nn.Module,
    image: torch.Tensor,
    label: int,
    segments: np.ndarray,
    mode: str = "blur",
    sigma: float | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Per region: p_true(clean) − p_true(region occluded)."""
    device = model_device(model)
    occluded = occlude(image, segments, mode, sigma)
    p_clean = model(image[None].to(device)).softmax(1)[0, label]
    p = torch.cat(
        [
            model(occluded[i : i + batch_size].to(device)).softmax(1)[:, label]
            for i in range(0, len(occluded), batch_size)
        ]
    )
    return (p_clean - p).cpu().numpy()


def region_means(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Mean of an H×W map inside each region."""
    n = check_segments(segments, values.shape)
    sums = np.bincount(segments.ravel(), weights=values.ravel(), minlength=n)
    return sums / np.bincount(segments.ravel(), minlength=n)
