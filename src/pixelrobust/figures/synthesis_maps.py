"""Synthesis figure: for example images of each model, the image and its four "where" maps."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..map_compare import MAP_LABELS
from ..synthesis import LABELS, load_maps
from . import style

COLUMNS = ["image", "onepixel", "ssim_ball", "gradcam_pp", "input_gradient"]


def grid_view(values: np.ndarray, searched: np.ndarray) -> np.ndarray:
    """The searched pixels of a map as a dense grid (the whole map when every pixel was searched)."""
    rows, cols = np.flatnonzero(searched.any(1)), np.flatnonzero(searched.any(0))
    return values[np.ix_(rows, cols)]


def plot(*, maps: dict[str, str], out: dict, examples: int) -> None:
    """Rule ``synthesis_maps``, to ``out["png"]`` (and ``out["pdf"]``). ``maps``: model name → its
    ``four_maps`` file; ``examples`` images per model."""
    style.apply()
    rows = []
    for model, path in maps.items():
        z = load_maps(path)
        rows += [(model, z, n) for n in range(min(examples, len(z["image_id"])))]
    fig, axes = plt.subplots(
        max(len(rows), 1),
        len(COLUMNS),
        figsize=(style.FULL_WIDTH, 1.35 * max(len(rows), 1) + 0.3),
        squeeze=False,
        constrained_layout=True,
    )
    for r, (model, z, n) in enumerate(rows):
        for c, key in enumerate(COLUMNS):
            ax = axes[r, c]
            if key == "image":
                ax.imshow(np.clip(z["image"][n].transpose(1, 2, 0), 0, 1))
                ax.set_ylabel(f"{model}\n{str(z['image_id'][n])[:24]}", fontsize=5)
            else:
                m = z[key][n]
                if key == "onepixel":
                    m = grid_view(m, z["searched"][n])
                ax.imshow(
                    m,
                    cmap="magma",
                    interpolation="nearest",
                    vmin=float(np.nanmin(m)),
                    vmax=float(np.nanmax(m)) or 1.0,
                )
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                title = "image" if key == "image" else LABELS[key]
                if key == "ssim_ball" and "p2_map" in z:
                    title = f"P2 SSIM ball: {MAP_LABELS.get(str(z['p2_map']), str(z['p2_map']))}"
                ax.set_title(title, fontsize=6)
    style.save(fig, out["png"], out.get("pdf"))
