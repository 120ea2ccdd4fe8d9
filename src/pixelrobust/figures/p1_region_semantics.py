"""P1 figure: the semantic claim within images against its control, and the three claims' effects
across SLIC segment counts, per model."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import style

SCORES = (("occlusion", "occlusion drop"), ("cam", "mean Grad-CAM++"))
SHORT = {
    "searching only some pixels is enough": "only some pixels",
    "vulnerable points are scattered over several regions": "scattered",
    "a region's robustness varies with its semantic content": "semantic",
}


def plot(*, claim_images, claims, out: dict) -> None:
    """Rule ``p1_region_semantics``: :func:`draw` from the per-image claims table and the claims table (CSV)
    to ``out["png"]`` (and ``out["pdf"]``)."""
    draw(pd.read_csv(claim_images), pd.read_csv(claims), out["png"], out.get("pdf"))


def draw(claim_images: pd.DataFrame, claims: pd.DataFrame, png, pdf=None) -> None:
    """Left: per attackable image (primary segmentation), Spearman rho(score, vulnerable share) of its
    regions against the same for its vulnerable pattern flipped and rotated about the centre (the control); points above
    the diagonal are images where the score tracks vulnerability more than chance placement would.
    Right: each claim's effect with its 95 % interval at every SLIC segment count (filled: primary)."""
    style.apply()
    models = list(dict.fromkeys(list(claims.model) + list(claim_images.model))) or ["(none)"]
    fig, axes = plt.subplots(
        len(models), 2, figsize=(style.FULL_WIDTH, 2.4 * len(models)), squeeze=False
    )
    for r, model in enumerate(models):
        ax = axes[r, 0]
        d = claim_images[
            (claim_images.model == model)
            & claim_images.primary.astype(bool)
            & claim_images.whole_success.astype(bool)
        ]
        for c, (score, label) in enumerate(SCORES):
            ok = d[[f"rho_{score}", f"rho_{score}_control"]].dropna()
            ax.scatter(
                ok[f"rho_{score}_control"],
                ok[f"rho_{score}"],
                s=12,
                alpha=0.7,
                color=style.PALETTE[c],
                label=f"{label} ({len(ok)} images)",
                linewidths=0,
            )
        ax.plot([-1, 1], [-1, 1], color="0.6", lw=0.8, ls="--")
        ax.set_xlim(-1.05, 1.05), ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("control: ρ with the vulnerable map flipped/rotated")
        ax.set_ylabel("ρ(score, vulnerable share)")
        ax.set_title(f"{model}: within-image Spearman, attackable images", fontsize=7)
        ax.legend(fontsize=6, loc="lower right", frameon=False)
        ax = axes[r, 1]
        m = claims[claims.model == model]
        counts = sorted(m.n_segments.unique())
        for c, (claim, short) in enumerate(SHORT.items()):
            e = m[m.claim == claim].set_index("n_segments").reindex(counts)
            x = np.arange(len(counts)) + (c - 1) * 0.18
            y = e.effect.to_numpy(float)
            err = np.vstack([y - e.ci_low.to_numpy(float), e.ci_high.to_numpy(float) - y])
            ax.errorbar(
                x, y, yerr=np.nan_to_num(err), fmt="none", ecolor=style.PALETTE[c + 2], lw=1
            )
            prim = e.primary.fillna(False).astype(bool).to_numpy()
            ax.scatter(x[prim], y[prim], color=style.PALETTE[c + 2], s=22, label=short, zorder=3)
            ax.scatter(
                x[~prim],
                y[~prim],
                facecolors="white",
                edgecolors=style.PALETTE[c + 2],
                s=22,
                zorder=3,
            )
        ax.axhline(0, color="0.6", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(counts)), [str(n) for n in counts])
        ax.set_xlabel("SLIC segments (filled: the verdict's)")
        ax.set_ylabel("effect vs control (95 % CI)")
        ax.set_title(f"{model}: claims across segment counts", fontsize=7)
        if counts:
            ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    style.save(fig, png, pdf)
