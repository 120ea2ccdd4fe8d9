"""P2 figure: per-attack distributions of the agreement between SSIM change maps and Grad-CAM++."""

from __future__ import annotations

import pandas as pd

from ..map_compare import METRICS
from . import style


def plot(comparison: pd.DataFrame, png, pdf=None) -> None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    style.apply()
    data = comparison.astype({"pointing_hit": float})
    fig, axes = plt.subplots(1, len(METRICS), figsize=(style.FULL_WIDTH, 2.0), constrained_layout=True)
    order = list(dict.fromkeys(data.attack))
    for ax, metric in zip(axes, METRICS):
        if metric == "pointing_hit":
            sns.barplot(data=data, x="attack", y=metric, order=order, ax=ax, errorbar=("ci", 95), hue="attack", legend=False)
        else:
            sns.boxplot(data=data, x="attack", y=metric, order=order, ax=ax, fliersize=0, hue="attack", legend=False)
            sns.stripplot(data=data, x="attack", y=metric, order=order, ax=ax, size=2, color="black", alpha=0.5)
        ax.set_title(metric, fontsize=7)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=45, labelsize=6)
    style.save(fig, png, pdf)
