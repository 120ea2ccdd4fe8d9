"""P3 figure: per model, the dataset input-gradient map (mean |dL/dx|) and the architecture-induced map."""

from __future__ import annotations

import matplotlib.pyplot as plt

from ..io import load_npz
from . import style


def plot(*, npz: list, out: dict, models: list[str]) -> None:
    """Rule ``p3_gradient_maps``: :func:`draw` from the ``gradient_map`` files ``npz`` of ``models`` (in that
    order) to ``out["png"]`` (and ``out["pdf"]``)."""
    draw({m: load_npz(f) for m, f in zip(models, npz)}, out["png"], out.get("pdf"))


def draw(maps: dict[str, dict], png, pdf=None) -> None:
    """``maps``: {model: {'dataset_map', 'architecture_map', 'split', 'n_images'}} — one row per model."""
    style.apply()
    models = list(maps)
    fig, axes = plt.subplots(
        len(models), 2, figsize=(style.COLUMN_WIDTH * 1.3, 1.7 * max(1, len(models))), squeeze=False
    )
    for r, model in enumerate(models):
        m = maps[model]
        for c, (key, title) in enumerate(
            (
                ("dataset_map", f"mean |∂L/∂x| ({int(m['n_images'])} {m['split']})"),
                ("architecture_map", "architecture-induced"),
            )
        ):
            ax = axes[r, c]
            im = ax.imshow(m[key], cmap="inferno", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=6)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
        axes[r, 0].set_ylabel(model, fontsize=6)
    fig.tight_layout()
    style.save(fig, png, pdf)
