"""Planted P2 comparisons (map_compare's per-image table) and their summary: shared by the tests of
``map_compare.summarise`` (tests/unit/test_map_compare.py) and of ``summary.p2_claims`` (tests/unit/test_summary.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pixelrobust.map_compare import BUDGET, MAPS, summarise

PRIMARY = {"map": "energy", "metric": "mass_in_topk", "baselines": ["pgd_linf", "pgd_l2"]}


def comparison_frame(
    n: int, ssim_ratio: float, seed: int = 0, success: dict | None = None
) -> pd.DataFrame:
    """``n`` images: energy share SSIM ball = base + 0.2, L∞ PGD base, L2 PGD base + 0.1, budget map base + 0.02;
    every attack fools every image unless ``success`` gives an attack's number of fooled images."""
    rng = np.random.default_rng(seed)
    success = success or {}
    rows = []
    for i in range(n):
        base = rng.normal(0.1, 0.05)
        for attack, mass, ratio in (
            ("ssim_ball", base + 0.2, ssim_ratio),
            ("pgd_linf", base, 1.0),
            ("pgd_l2", base + 0.1, 1.0),
            (BUDGET, base + 0.02, np.nan),
        ):
            for name in MAPS if attack != BUDGET else ("energy", "window_ssim"):
                rows.append(
                    {
                        "image_id": f"i{i}",
                        "attack": attack,
                        "map": name,
                        "pearson": base,
                        "spearman": base + rng.normal(0, 0.01),
                        "iou_topk": 0.2,
                        "pointing_hit": attack == "ssim_ball",
                        "mass_in_topk": mass,
                        "texture_spearman": 0.3,
                        "grid_ratio": ratio * math.exp(rng.normal(0, 0.05)),
                        "success": np.nan if attack == BUDGET else i < success.get(attack, n),
                    }
                )
    return pd.DataFrame(rows)


def summ(frame, n_boot=500, tol=0.15, **primary):
    return summarise(
        frame, n_boot, 0, primary={**PRIMARY, **primary}, grid_min_ratio=0.5, success_tolerance=tol
    )
