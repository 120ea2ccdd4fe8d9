"""P1 figure: share of vulnerable pixels per region against its semantic scores, per model."""

from __future__ import annotations

import pandas as pd

from . import style


def plot(regions: pd.DataFrame, summary: pd.DataFrame, png, pdf=None) -> None:
    """One row per model, columns: occlusion drop, mean Grad-CAM++; Spearman rho with 95 % CI in the title."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    style.apply()
    regions = regions[regions.n_searched > 0].assign(share=lambda d: d.n_vulnerable / d.n_searched)
    models = list(summary.model) or sorted(regions.model.unique())
    fig, axes = plt.subplots(len(models), 2, figsize=(style.FULL_WIDTH, 2.0 * max(1, len(models))), squeeze=False)
    for r, model in enumerate(models):
        d = regions[regions.model == model]
        s = summary[summary.model == model].iloc[0] if (summary.model == model).any() else None
        for c, (score, label) in enumerate((("occlusion", "occlusion drop of p(true)"), ("cam", "mean Grad-CAM++"))):
            ax = axes[r, c]
            sns.scatterplot(data=d, x=f"semantic_{score}", y="share", ax=ax, s=10, alpha=0.6, linewidth=0, color=style.PALETTE[c])
            ax.set_xlabel(label)
            ax.set_ylabel("vulnerable share of region" if c == 0 else "")
            if s is not None and pd.notna(s[f"spearman_{score}"]):
                ax.set_title(f"{model}: ρ = {s[f'spearman_{score}']:.2f} "
                             f"[{s[f'spearman_{score}_ci_low']:.2f}, {s[f'spearman_{score}_ci_high']:.2f}]", fontsize=7)
            else:
                ax.set_title(f"{model}: ρ undefined (no variation)", fontsize=7)
    fig.tight_layout()
    style.save(fig, png, pdf)
