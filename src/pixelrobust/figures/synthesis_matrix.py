"""Synthesis figure: per model, the pairwise agreement of the four maps (Spearman below the
diagonal, top-k IoU above it), built from ``synthesis.csv``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import style


def matrix(table: pd.DataFrame) -> np.ndarray:
    """A 4×4 matrix of one model's rows: Spearman in the lower triangle, IoU in the upper, NaN diagonal."""
    from ..synthesis import MAPS

    pos = {m: i for i, m in enumerate(MAPS)}
    out = np.full((len(MAPS), len(MAPS)), np.nan)
    for r in table.itertuples():
        i, j = sorted((pos[r.map_a], pos[r.map_b]))
        out[j, i], out[i, j] = r.spearman, r.iou_topk
    return out


def plot(table_csv, png, pdf=None) -> None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ..synthesis import LABELS, MAPS

    style.apply()
    table = pd.read_csv(table_csv)
    models = list(dict.fromkeys(table.model))
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(style.COLUMN_WIDTH * max(len(models), 1), 3.0),
                             squeeze=False, constrained_layout=True)
    names = [LABELS[m].replace(" ", "\n", 1) for m in MAPS]
    for ax, model in zip(axes[0], models):
        rows = table[table.model == model]
        sns.heatmap(matrix(rows), ax=ax, vmin=-0.5, vmax=0.5, center=0, cmap="vlag", annot=True, fmt=".2f", square=True, cbar=False,
                    xticklabels=names, yticklabels=names, annot_kws={"fontsize": 6})
        ax.tick_params(labelsize=5)
        ax.set_title(f"{model} ({rows.n_images.iloc[0]} images)\nbelow: Spearman, above: top-{rows.topk_percent.iloc[0]:g} % IoU "
                     f"(chance {rows.chance_iou.iloc[0]:.2f})", fontsize=6)
    style.save(fig, png, pdf)
