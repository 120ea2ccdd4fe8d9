"""Synthesis figure: per model, the pairwise agreement of the four maps beyond the permutation null
(same-image agreement minus agreement with other images' maps; Spearman below the diagonal, top-k
IoU above it), built from ``synthesis.csv``. Cells whose interval excludes 0 are marked with *."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..synthesis import LABELS, MAPS
from . import style


def matrix(
    table: pd.DataFrame, spearman: str = "spearman_excess", iou: str = "iou_excess"
) -> np.ndarray:
    """A 4×4 matrix of one model's rows: ``spearman`` in the lower triangle, ``iou`` in the upper, NaN diagonal."""
    pos = {m: i for i, m in enumerate(MAPS)}
    out = np.full((len(MAPS), len(MAPS)), np.nan)
    for r in table.itertuples():
        i, j = sorted((pos[r.map_a], pos[r.map_b]))
        out[j, i], out[i, j] = getattr(r, spearman), getattr(r, iou)
    return out


def annotations(table: pd.DataFrame) -> np.ndarray:
    """Cell texts: the excess with * where its 95 % interval excludes 0."""
    lo = matrix(table, "spearman_excess_ci_low", "iou_excess_ci_low")
    hi = matrix(table, "spearman_excess_ci_high", "iou_excess_ci_high")
    val = matrix(table)
    text = np.full(val.shape, "", dtype=object)
    for i, j in zip(*np.nonzero(np.isfinite(val))):
        star = "*" if (lo[i, j] > 0 or hi[i, j] < 0) else ""
        text[i, j] = f"{val[i, j]:+.3f}{star}"
    return text


def plot(*, table, out: dict) -> None:
    """Rule ``synthesis_matrix``: the agreement matrices of ``synthesis.csv`` (``table``), to ``out["png"]``
    (and ``out["pdf"]``)."""
    style.apply()
    table = pd.read_csv(table)
    models = list(dict.fromkeys(table.model))
    fig, axes = plt.subplots(
        1,
        max(len(models), 1),
        figsize=(style.COLUMN_WIDTH * max(len(models), 1), 3.0),
        squeeze=False,
        constrained_layout=True,
    )
    names = [LABELS[m].replace(" ", "\n", 1) for m in MAPS]
    for ax, model in zip(axes[0], models):
        rows = table[table.model == model]
        sns.heatmap(
            matrix(rows),
            ax=ax,
            vmin=-0.2,
            vmax=0.2,
            center=0,
            cmap="vlag",
            annot=annotations(rows),
            fmt="",
            square=True,
            cbar=False,
            xticklabels=names,
            yticklabels=names,
            annot_kws={"fontsize": 6},
        )
        ax.tick_params(labelsize=5)
        lo, hi = int(rows.n_images.min()), int(rows.n_images.max())
        ax.set_title(
            f"{model} ({lo if lo == hi else f'{lo}–{hi}'} images{'' if lo == hi else ' per pair'}): excess over other images' maps\nbelow: Spearman, above: "
            f"top-{rows.topk_percent.iloc[0]:g} % IoU (* 95 % CI excludes 0)",
            fontsize=6,
        )
    style.save(fig, out["png"], out.get("pdf"))
