"""P3 figure: the PRM's training curves (total loss, MSE, cross-entropy, batch top-1)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from . import style


def plot(*, csv, out: dict, model: str) -> None:
    """Rule ``p3_prm_training``: :func:`draw` from the PRM's ``history.csv`` to ``out["png"]`` (and
    ``out["pdf"]``)."""
    draw(pd.read_csv(csv), model, out["png"], out.get("pdf"))


def draw(history: pd.DataFrame, model: str, png, pdf=None) -> None:
    style.apply()
    fig, axes = plt.subplots(1, 3, figsize=(style.FULL_WIDTH, 2.0))
    window = max(1, len(history) // 50)
    smooth = history.rolling(window, min_periods=1).mean()
    for ax, cols, label in (
        (axes[0], ["loss"], "loss"),
        (axes[1], ["mse", "ce"], "terms"),
        (axes[2], ["top1"], "batch top-1"),
    ):
        for i, c in enumerate(cols):
            ax.plot(history.step, history[c], color=style.PALETTE[i], alpha=0.25, lw=0.6)
            ax.plot(history.step, smooth[c], color=style.PALETTE[i], lw=1.2, label=c)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if len(cols) > 1:
            ax.set_yscale("log")
            ax.legend(fontsize=6, frameon=False)
    axes[0].set_title(f"PRM in front of {model}", fontsize=7)
    fig.tight_layout()
    style.save(fig, png, pdf)
