"""pixelrobust.ssim_study (P2): the PGD budget matched to the SSIM ball's success rate."""

from __future__ import annotations

import pandas as pd
import pytest

from pixelrobust.ssim_study import match_pgd
from pixelrobust.ssim_study import summarise as summarise_attacks


def test_pgd_budget_matched_to_the_ssim_success():
    per_image = pd.DataFrame(
        [
            {
                "attack": "ssim_ball",
                "epsilon": 0.001,
                "success": s,
                "ssim": 0.9,
                "l2": 1.0,
                "linf": 0.1,
            }
            for s in (1, 1, 0, 0)
        ]
        + [
            {"attack": "pgd_linf", "epsilon": e, "success": s, "ssim": 0.99, "l2": 1.0, "linf": e}
            for e, succ in ((0.001, (0, 0, 0, 1)), (0.002, (1, 1, 0, 0)), (0.004, (1, 1, 1, 1)))
            for s in succ
        ]
        + [
            {"attack": "pgd_l2", "epsilon": e, "success": s, "ssim": 0.99, "l2": e, "linf": 0.1}
            for e, succ in ((0.5, (1, 1, 1, 0)), (1.0, (1, 1, 1, 1)))
            for s in succ
        ]
    )
    table = summarise_attacks(per_image)
    assert table.attack.tolist()[:1] == ["ssim_ball"] and set(table.n_images) == {4}
    m = match_pgd(table, 0.001).set_index("attack")
    assert m.loc["pgd_linf", "epsilon"] == 0.002 and m.loc["pgd_l2", "epsilon"] == 0.5
    with pytest.raises(ValueError, match="compare.epsilon"):
        match_pgd(table, 0.01)
