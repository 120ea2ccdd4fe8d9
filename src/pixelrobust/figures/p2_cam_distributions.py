"""P2 figure: per map and attack, distributions of the agreement between the perturbation's maps and
Grad-CAM++ (one panel per metric; the maps as hues), and the per-image grid diagnostic."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..map_compare import METRICS
from . import style


def plot(*, csv, out: dict) -> None:
    """Rule ``p2_cam_distributions``: :func:`draw` from ``ssim_cam_comparison.csv`` to ``out["png"]`` (and
    ``out["pdf"]``)."""
    draw(pd.read_csv(csv, dtype={"image_id": str}), out["png"], out.get("pdf"))


def draw(comparison: pd.DataFrame, png, pdf=None) -> None:
    style.apply()
    data = comparison.astype({"pointing_hit": float})
    panels = [*METRICS, "texture_spearman", "grid_ratio"]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(style.FULL_WIDTH, 2.2), constrained_layout=True
    )
    order = list(dict.fromkeys(data.attack))
    for ax, metric in zip(axes, panels):
        if metric == "grid_ratio":  # one value per image and attack, whatever the map
            d = data.drop_duplicates(["image_id", "attack"]).assign(
                grid_ratio=lambda t: np.log10(t.grid_ratio)
            )
            sns.stripplot(data=d, x="attack", y=metric, order=order, ax=ax, size=2.5, color="black")
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_title("grid ratio (log10)", fontsize=7)
        elif metric == "pointing_hit":
            # the hit rate with its 95 % interval as dodged points: bars of three maps x four attacks are too
            # narrow at this panel width to be seen (their interval lines covered them)
            sns.pointplot(
                data=data,
                x="attack",
                y=metric,
                hue="map",
                order=order,
                ax=ax,
                errorbar=("ci", 95),
                legend=False,
                dodge=0.5,
                linestyle="none",
                markersize=3,
                err_kws={"linewidth": 0.8},
            )
            ax.set_ylim(-0.05, 1.05)
            ax.set_title("pointing_hit (rate)", fontsize=7)
        else:
            sns.boxplot(
                data=data,
                x="attack",
                y=metric,
                hue="map",
                order=order,
                ax=ax,
                fliersize=0.5,
                legend=metric == METRICS[0],
            )
            ax.set_title(metric, fontsize=7)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=90, labelsize=6)
    legend = axes[0].get_legend()
    if legend is not None:  # one legend for every panel, below them
        handles, labels = axes[0].get_legend_handles_labels()
        legend.remove()
        fig.legend(
            handles, labels, loc="outside lower center", ncol=len(labels), fontsize=6, frameon=False
        )
    style.save(fig, png, pdf)
