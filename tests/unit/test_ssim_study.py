"""pixelrobust.ssim_study (P2): the PGD budget matched to the SSIM ball's success rate."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

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


def test_run_pgd_gives_an_image_the_same_attack_in_rule_cam_as_in_rule_attack_ssim(
    resnet20, cifar_test
):
    """Rule cam reruns the PGD baselines on a subset of attack_ssim's images (those it keeps): each image's
    random start comes from its id, so the subset's adversarials are the full run's rows, not new draws."""
    from pixelrobust.ssim_study import run_pgd

    x, y, ids = cifar_test.images[:10], cifar_test.labels[:10], cifar_test.ids[:10]
    pgd = {"linf": {"steps": 2, "alpha_factor": 0.25, "random_start": True}}
    full = run_pgd(resnet20, x, y, pgd, "linf", 4 / 255, 3, 4, ids)
    sub = [7, 2, 5]
    part = run_pgd(resnet20, x[sub], y[sub], pgd, "linf", 4 / 255, 3, 4, [ids[i] for i in sub])
    torch.testing.assert_close(part, full[sub])
    with pytest.raises(ValueError, match="3 image ids for 10 images"):
        run_pgd(resnet20, x, y, pgd, "linf", 4 / 255, 3, 4, ids[:3])
