"""P3 figure: top-1 accuracy under PGD restricted to k % of the pixels, per mask type and model."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from . import style

MASK_STYLE = {
    "top": ("C3", "-"),
    "bottom": ("C0", "-"),
    "random": ("C7", "--"),
    "top_arch": ("C3", ":"),
    "bottom_arch": ("C0", ":"),
    "centre": ("C2", "-."),
}


TITLES = {"linf": "L∞ PGD", "l2": "L2 PGD"}


def plot(*, csv, out: dict, norm: str) -> None:
    """Rule ``p3_masked_pgd``: :func:`draw` from the masked-PGD table of ``norm`` (``linf``, ``l2``) to
    ``out["png"]`` (and ``out["pdf"]``)."""
    draw(pd.read_csv(csv), out["png"], out.get("pdf"), TITLES[norm])


def draw(table: pd.DataFrame, png, pdf=None, title: str = "") -> None:
    style.apply()
    models = list(dict.fromkeys(table.model))
    ncol = min(2, len(models))
    nrow = -(-len(models) // ncol)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        figsize=(style.FULL_WIDTH if ncol > 1 else style.COLUMN_WIDTH, 2.2 * nrow),
        squeeze=False,
    )
    for ax in axes.flat[len(models) :]:
        ax.set_visible(False)
    for ax, model in zip(axes.flat, models):
        d = table[table.model == model]
        for mask, g in d.groupby("mask", sort=False):
            colour, ls = MASK_STYLE.get(mask, ("k", "-"))
            g = g.sort_values("k_percent")
            ax.plot(g.k_percent, g.top1, ls, marker="o", ms=3, color=sns_colour(colour), label=mask)
        ks = sorted(d.k_percent.unique())
        ax.set_xscale("log")
        ax.set_xticks(ks, [f"{k:g}" for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("perturbed pixels k (%)")
        ax.set_ylabel("top-1 under attack")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(
            f"{model} ({int(d.n_images.iloc[0])} images){' — ' + title if title else ''}",
            fontsize=7,
        )
    axes.flat[0].legend(fontsize=6, frameon=False)
    fig.tight_layout()
    style.save(fig, png, pdf)


def sns_colour(code: str):
    """``'C3'`` → the project palette's fourth colour; other matplotlib colours pass through."""
    if code.startswith("C") and code[1:].isdigit():
        return style.PALETTE[int(code[1:]) % len(style.PALETTE)]
    return code
