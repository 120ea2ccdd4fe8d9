"""P3 figure: the λ sweep — accuracy and lattice IoU against λ, and the input-gradient map per λ."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..io import load_npz
from . import style

CONTROL_STYLE = {
    "untrained": (style.PALETTE[7 % len(style.PALETTE)], "--"),
    "fill_only": (style.PALETTE[4], ":"),
}


def plot(*, table, maps, out: dict, model: str) -> None:
    """Rule ``p3_prm_lambda``: :func:`draw` from the model's λ-sweep table (CSV) and maps (npz) to
    ``out["png"]`` (and ``out["pdf"]``)."""
    draw(pd.read_csv(table), load_npz(maps)["maps"], model, out["png"], out.get("pdf"))


def draw(sweep: pd.DataFrame, maps: np.ndarray, model: str, png, pdf=None) -> None:
    """The trained PRM's curves and maps; the IoU of its same-run controls (``prm`` column: ``untrained``,
    ``fill_only``) as thin lines. The clean level is ``clean_top1`` (else the λ = 0 row)."""
    style.apply()
    controls = {}
    if "prm" in sweep:
        controls = {name: g for name, g in sweep.groupby("prm", sort=False) if name != "trained"}
        sweep = sweep[sweep.prm == "trained"].reset_index(drop=True)
    n = len(sweep)
    ncol = min(n, 7)
    nrow = -(-n // ncol)
    fig = plt.figure(figsize=(style.FULL_WIDTH, 2.3 + 1.1 * nrow))
    grid = fig.add_gridspec(1 + nrow, ncol, height_ratios=[2.0] + [1.0] * nrow)
    ax = fig.add_subplot(grid[0, :])
    x = np.arange(n)
    ax.plot(x, sweep.top1, "o-", color=style.PALETTE[0], ms=3, label="top-1")
    ax.plot(
        x,
        sweep.iou,
        "s-",
        color=style.PALETTE[3],
        ms=3,
        label="IoU(top-k grad, lattice), trained PRM",
    )
    ax.plot(
        x,
        sweep.lattice_share,
        "^--",
        color=style.PALETTE[2],
        ms=3,
        label="share of top-k on lattice",
    )
    ax.axhline(
        sweep.chance_share.iloc[0],
        color="0.5",
        lw=0.7,
        ls=":",
        label=f"chance share {sweep.chance_share.iloc[0]:.2f}",
    )
    ax.axhline(
        sweep.chance_iou.iloc[0],
        color="0.7",
        lw=0.7,
        ls="-.",
        label=f"chance IoU {sweep.chance_iou.iloc[0]:.3f}",
    )
    for name, g in controls.items():
        colour, ls = CONTROL_STYLE.get(name, ("0.4", "--"))
        ax.plot(
            x[: len(g)],
            g.iou.to_numpy(),
            ls,
            color=colour,
            lw=0.9,
            label=f"IoU, {name.replace('_', '-')} PRM",
        )
    clean = sweep.clean_top1.iloc[:1] if "clean_top1" in sweep else sweep.top1[sweep["lambda"] == 0]
    if len(clean):
        ax.axhline(clean.iloc[0], color=style.PALETTE[0], lw=0.7, ls=":", label="clean top-1")
    ax.set_xticks(x, [f"{v:g}" for v in sweep["lambda"]], fontsize=6)
    ax.set_xlabel("λ")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"PRM λ sweep, {model}", fontsize=7)
    ax.legend(fontsize=5, frameon=False, ncol=3)
    for i in range(n):
        a = fig.add_subplot(grid[1 + i // ncol, i % ncol])
        a.imshow(maps[i], cmap="inferno", interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(f"λ={sweep['lambda'].iloc[i]:g}", fontsize=6)
    fig.tight_layout()
    style.save(fig, png, pdf)
