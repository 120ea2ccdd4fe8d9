"""P3 figure: the defence table as heatmaps — top-1 per defence (rows) and attack (columns).

One panel per protocol (rows of panels) and model (columns); each cell shows top-1 and, below
it, the effect: top-1 minus the reference's on the same images (``defense.csv``: the undefended
classifier; for the gray-box stochastic PRM and its shift-only component, the classifier on the
PRM-crafted images, ``transfer_none``), starred where its 95 % interval excludes 0.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..defense_eval import pivot
from . import style


def plot(*, csv, out: dict) -> None:
    """Rule ``p3_defense``: :func:`draw` from ``defense.csv`` to ``out["png"]`` (and ``out["pdf"]``)."""
    draw(pd.read_csv(csv), out["png"], out.get("pdf"))


def draw(table: pd.DataFrame, png, pdf=None) -> None:
    style.apply()
    top = pivot(table, "top1")
    effect = pivot(table, "effect")
    low, high = pivot(table, "effect_low"), pivot(table, "effect_high")
    protocols = list(dict.fromkeys(table.protocol))
    models = list(dict.fromkeys(table.model))
    ncols, nrows = len(models), len(protocols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(min(style.FULL_WIDTH, 2.6 * ncols + 0.6), 2.1 * nrows + 0.4),
        squeeze=False,
        constrained_layout=True,
    )
    image = None
    for i, protocol in enumerate(protocols):
        for j, model in enumerate(models):
            ax = axes[i, j]
            key = next((k for k in top if k[0] == protocol and k[2] == model), None)
            if key is None:
                ax.set_visible(False)
                continue
            t, r = top[key], effect[key]
            image = ax.imshow(
                t.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto"
            )
            for y, d in enumerate(t.index):
                for x, a in enumerate(t.columns):
                    v = t.loc[d, a]
                    if np.isnan(v):
                        continue
                    text = f"{v:.2f}"
                    if not pd.isna(r.loc[d, a]):
                        sure = low[key].loc[d, a] > 0 or high[key].loc[d, a] < 0
                        text += f"\n{r.loc[d, a]:+.2f}{'*' if sure else ''}"
                    ax.text(
                        x,
                        y,
                        text,
                        ha="center",
                        va="center",
                        fontsize=4.5,
                        color="white" if v < 0.6 else "black",
                    )
            ax.set_xticks(range(len(t.columns)), t.columns, rotation=45, ha="right", fontsize=5.5)
            ax.set_yticks(
                range(len(t.index)), t.index if j == 0 else [""] * len(t.index), fontsize=5.5
            )
            n = int(table[(table.model == model) & (table.protocol == protocol)].n_images.iloc[0])
            ax.set_title(f"{protocol} · {key[1]}\n{model}, {n} images", fontsize=6)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.6)
        bar.set_label(
            "top-1 (below: effect against the reference, * 95 % interval excludes 0)", fontsize=6
        )
    style.save(fig, png, pdf)
