"""P2 figure: success rate and mean SSIM against ε (SSIM ball) and against the budget (PGD)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from . import style

LABELS = {"ssim_ball": "SSIM ball (ε)", "pgd_linf": "PGD L∞ (eps)", "pgd_l2": "PGD L2 (eps)"}


def plot(*, table, matched, out: dict) -> None:
    """Rule ``p2_ssim_sweep``: :func:`draw` from ``ssim_attack.csv`` and ``ssim_matched.csv`` to
    ``out["png"]`` (and ``out["pdf"]``)."""
    draw(pd.read_csv(table), pd.read_csv(matched), out["png"], out.get("pdf"))


def draw(table: pd.DataFrame, matched: pd.DataFrame, png, pdf=None) -> None:
    style.apply()
    attacks = [a for a in LABELS if a in set(table.attack)]
    fig, axes = plt.subplots(
        1, len(attacks), figsize=(style.FULL_WIDTH, 2.2), squeeze=False, constrained_layout=True
    )
    for ax, attack in zip(axes[0], attacks):
        t = table[table.attack == attack].sort_values("epsilon")
        ax.plot(t.epsilon, t.success_rate, marker="o", label="success rate")
        ax.plot(t.epsilon, t.mean_ssim, marker="s", label="mean SSIM")
        chosen = (
            matched[matched.attack == attack].epsilon
            if attack != "ssim_ball"
            else matched.ssim_epsilon.iloc[:1]
        )
        for e in chosen:
            ax.axvline(e, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(LABELS[attack])
        ax.set_title(f"{attack}, {int(t.n_images.max()) if len(t) else 0} images", fontsize=7)
    axes[0, 0].legend(fontsize=6, loc="lower left")
    axes[0, 0].set_ylabel("rate / SSIM")
    style.save(fig, png, pdf)
