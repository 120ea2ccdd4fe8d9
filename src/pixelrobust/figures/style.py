"""The project's figure style: seaborn ticks theme, colour-blind-safe palette, paper column width."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from ..io import atomic_path

COLUMN_WIDTH = 3.4  # inches, one column of a two-column paper
FULL_WIDTH = 7.0
PALETTE = sns.color_palette("colorblind")


def apply() -> None:
    sns.set_theme(
        context="paper",
        style="ticks",
        palette=PALETTE,
        font_scale=0.9,
        rc={
            "figure.dpi": 150,
            "savefig.dpi": 300,
            "savefig.bbox": "tight",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "image.cmap": "viridis",
        },
    )


def save(fig, png: str | Path, pdf: str | Path | None = None) -> None:
    """Save as PNG (and PDF), atomically; close the figure."""
    for path in [p for p in (png, pdf) if p]:
        with atomic_path(path, suffix=Path(path).suffix) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."))
    plt.close(fig)
