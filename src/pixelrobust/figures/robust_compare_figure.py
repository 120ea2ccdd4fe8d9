"""Robust vs standard (ours): per pair, a row of the two models' mean maps side by side (share of images on which
each pixel is one-pixel vulnerable; mean input-gradient map) and the comparisons' effects with their 95 %
intervals, built from ``robust_compare.csv`` and the rule's npz of mean maps."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.gridspec import GridSpec

from ..io import load_npz
from ..robust_compare import pair_name
from ..stats import MIN_IMAGES
from . import style

MAPS = (
    ("p1_standard", "P1 vulnerable share\nstandard"),
    ("p1_robust", "P1 vulnerable share\nrobust"),
    ("gradient_standard", "mean |∂L/∂x|\nstandard"),
    ("gradient_robust", "mean |∂L/∂x|\nrobust"),
)
COLOURS = {
    "held": "tab:green",
    "not held": "tab:red",
    "inconclusive": "tab:gray",
    "too few images": "tab:olive",
    "descriptive": "tab:blue",
}


def forest_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows drawn in a pair's effect panel, in table order: those whose effect is a finite **difference**
    (the statistic says "minus"), so that every point on the axis is one kind of number (a correlation or a
    share is not drawn beside them)."""
    finite = np.isfinite(table.effect.to_numpy(float))
    diff = table.statistic.fillna("").astype(str).str.contains(" minus ").to_numpy()
    return table[finite & diff].reset_index(drop=True)


def interval_drawn(rows: pd.DataFrame) -> np.ndarray:
    """Which rows get their interval drawn: finite bounds on at least :data:`~pixelrobust.stats.MIN_IMAGES`
    images (below that a bootstrap interval says little; the point is still drawn)."""
    lo, hi = rows.ci_low.to_numpy(float), rows.ci_high.to_numpy(float)
    return np.isfinite(lo) & np.isfinite(hi) & (rows.n_images.to_numpy(int) >= MIN_IMAGES)


def plot(*, table, maps: list, out: dict) -> None:
    """Rule ``robust_compare_figure``: :func:`draw` from ``robust_compare.csv`` and the pairs' mean-map files
    (``<standard>__<robust>.npz``) to ``out["png"]`` (and ``out["pdf"]``)."""
    draw(pd.read_csv(table), {Path(p).stem: load_npz(p) for p in maps}, out["png"], out.get("pdf"))


def draw(table: pd.DataFrame, maps: dict[str, dict], png, pdf=None) -> None:
    """``maps``: {"<standard>__<robust>": npz contents} in the table's pair order."""
    style.apply()
    pairs = list(dict.fromkeys(zip(table.standard, table.robust)))
    heights = [
        max(2.0, 0.16 * len(forest_rows(table[(table.standard == s) & (table.robust == r)])) + 0.6)
        for s, r in pairs
    ]
    fig = plt.figure(figsize=(style.FULL_WIDTH, sum(heights) + 1.5 * len(pairs) or 1.5))
    if not pairs:
        ax = fig.add_subplot(111)
        ax.axis("off")
        ax.text(0.5, 0.5, "no robust-vs-standard pair configured", ha="center", va="center")
        style.save(fig, png, pdf)
        return
    # per pair: the four mean maps in a row, the effects below them across the width
    gs = GridSpec(
        2 * len(pairs),
        4,
        figure=fig,
        height_ratios=[h for f in heights for h in (1.5, f)],
        wspace=0.3,
        hspace=0.45,
    )
    for p, (s, r) in enumerate(pairs):
        z = maps.get(pair_name(s, r), {})
        for c, (key, title) in enumerate(MAPS):
            if key not in z:
                continue
            ax = fig.add_subplot(gs[2 * p, c])
            ax.imshow(np.asarray(z[key], float), cmap="inferno", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=5)
            if c == 0:
                ax.set_ylabel(f"{s}\nvs {r}", fontsize=5)
        rows = forest_rows(table[(table.standard == s) & (table.robust == r)])
        ax = fig.add_subplot(gs[2 * p + 1, 1:])
        y = np.arange(len(rows))[::-1]
        for verdict, colour in COLOURS.items():
            sel = (rows.verdict == verdict).to_numpy()
            if sel.any():
                ax.scatter(rows.effect[sel], y[sel], s=10, color=colour, label=verdict, zorder=3)
        lo, hi = rows.ci_low.to_numpy(float), rows.ci_high.to_numpy(float)
        ok = interval_drawn(rows)
        ax.hlines(y[ok], lo[ok], hi[ok], color="0.3", lw=0.8)
        ax.axvline(0, color="0.5", lw=0.5, ls="--")
        ax.set_yticks(y)
        ax.set_yticklabels([f"{a}: {c}" for a, c in zip(rows.section, rows.comparison)], fontsize=4)
        ax.tick_params(axis="x", labelsize=5)
        ax.set_xlabel(
            "difference (95 % CI, drawn from 10 images on); positive = the hypothesis / standard minus robust",
            fontsize=5,
        )
        ax.set_title(f"{s} vs {r} ({rows.dataset.iloc[0] if len(rows) else ''})", fontsize=6)
        if len(rows):
            ax.legend(fontsize=4, loc="lower right", frameon=False)
    style.save(fig, png, pdf)
