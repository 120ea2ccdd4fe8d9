"""P2's maps: the perturbation's maps against Grad-CAM++, the grid diagnostic, the summary and P2's verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers.p2 import PRIMARY, comparison_frame, summ
from pixelrobust import synthesis
from pixelrobust.errors import ConfigError
from pixelrobust.gradients import loss_gradient
from pixelrobust.map_compare import (
    BUDGET,
    GRID_ARTEFACT,
    GRID_NONE,
    GRID_OK,
    MAPS,
    SUCCESS_OK,
    budget_map,
    change_maps,
    check_primary,
    compare_chunk,
    compare_one,
    constraint_window_map,
    grid_ratio,
    grid_verdict,
    local_texture,
    summarise,
    window_dissimilarity,
)
from pixelrobust.maps import iou, top_k_mask
from pixelrobust.ssim_ball import (
    SSIMBall,
    SSIMBallProblem,
    solve_admm,
    window_factors,
)
from pixelrobust.ssim_study import run_pgd


def test_window_dissimilarity_is_ssim_on_every_sliding_window(imagenet):
    """The box-filter version against the SSIM ball's own per-window factors (gathered windows) at stride 1."""
    x = F.interpolate(imagenet[0][:1], size=(24, 24), mode="area").double()
    y = (
        x
        + 0.05
        * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ).clamp(0, 1)
    d = window_dissimilarity(x[0], y[0], 6)
    lum, cs = window_factors(x, y, 6, 1)
    assert d.shape == (19, 19)
    np.testing.assert_allclose(d.ravel(), (1 - lum * cs).mean(1)[0].numpy(), rtol=1e-9, atol=1e-12)
    assert window_dissimilarity(x[0], x[0], 6).max() == pytest.approx(0, abs=1e-12)


def test_grid_ratio_separates_block_seams_from_noise():
    rng = np.random.default_rng(0)
    # one value per window: windows on the grid (multiples of 8) carry 1 %, the others 100 %
    d = np.ones((41, 41))
    d[::8, ::8] = 0.01
    assert grid_ratio(d, 8) == pytest.approx(0.01)
    assert math.isnan(grid_ratio(d, 1))  # stride 1: every window is constrained, nothing straddles
    assert math.isnan(grid_ratio(np.zeros((9, 9)), 4))
    # a perturbation that ignores the grid: i.i.d. noise on a real-valued image
    x = torch.from_numpy(rng.random((3, 64, 64)))
    adv = (x + torch.from_numpy(rng.normal(0, 0.01, (3, 64, 64)))).clamp(0, 1)
    assert grid_ratio(window_dissimilarity(x, adv, 8), 8) == pytest.approx(1, abs=0.1)
    # a perturbation constant on each 8×8 block with a different constant per block: it keeps every
    # aligned window's structure and breaks the structure of every window that straddles two blocks
    # (on a smooth image, as P2's flat regions: the step between blocks then dominates the window's structure)
    smooth = 0.5 + 0.02 * torch.from_numpy(rng.random((3, 64, 64)))
    shift = (
        torch.from_numpy(rng.normal(0, 0.02, (3, 8, 8)))
        .repeat_interleave(8, 1)
        .repeat_interleave(8, 2)
    )
    assert grid_ratio(window_dissimilarity(smooth, smooth + shift, 8), 8) < 0.2


def test_constraint_window_map_and_texture():
    x = torch.zeros(3, 16, 16, dtype=torch.float64) + 0.5
    adv = x.clone()
    adv[:, :8, :8] += (
        0.1  # only the top-left disjoint window changes (its mean: the luminance factor)
    )
    m = constraint_window_map(x, adv, 8, 8)
    assert m[:8, :8].min() > 0 and m[:8, 8:].max() == 0 and m[8:].max() == 0
    assert np.ptp(m[:8, :8]) == pytest.approx(
        0, abs=1e-15
    )  # one window: the same value on its pixels
    lum = (2 * 0.5 * 0.6 + 1e-4) / (
        0.25 + 0.36 + 1e-4
    )  # SSIM's luminance factor (C1 = 0.01²); structure unchanged
    assert m[0, 0] == pytest.approx(1 - lum, rel=1e-9)
    # texture: the 7×7 standard deviation is 0 on a flat image and on a two-level image grows towards the edge
    assert local_texture(x).max() == pytest.approx(0, abs=1e-7)
    step = x.clone()
    step[:, :, 8:] = 0.9
    t = local_texture(step)
    assert t[:, 7].min() > t[:, 2].max() and t[:, 0].max() == pytest.approx(0, abs=1e-7)


def test_compare_metrics_on_known_maps():
    rng = np.random.default_rng(0)
    cam = rng.random((20, 20))
    same = compare_one(cam, cam, 10, texture=cam)
    assert (
        same["pearson"] == pytest.approx(1)
        and same["spearman"] == pytest.approx(1)
        and same["texture_spearman"] == pytest.approx(1)
    )
    assert same["iou_topk"] == 1 and same["pointing_hit"]
    top = top_k_mask(cam, 10, ties="shuffled", at_least_one=True)  # compare_one's rule
    assert top.sum() == 40
    assert same["mass_in_topk"] == pytest.approx(cam[top].sum() / cam.sum())
    # a change map that lives outside the CAM's top region
    change = np.where(top, 0.0, 1.0)
    change[np.unravel_index(np.argmax(np.where(top, -1, rng.random((20, 20)))), change.shape)] = 2.0
    far = compare_one(change, cam, 10)
    assert (
        far["iou_topk"] == 0
        and not far["pointing_hit"]
        and far["mass_in_topk"] == 0
        and "texture_spearman" not in far
    )
    uniform = compare_one(np.ones((20, 20)), cam, 10)
    assert uniform["mass_in_topk"] == pytest.approx(0.1) and np.isnan(uniform["spearman"])
    # ties (‖δ‖² of L∞ PGD is nearly constant) are not broken by position: the top 10 % of a constant
    # 224×224 map spreads over the image instead of filling its first 22 rows
    rows = np.nonzero(top_k_mask(np.ones((224, 224)), 10, ties="shuffled", at_least_one=True))[0]
    assert len(rows) == 5018 and rows.max() > 200 and 100 < rows.mean() < 124


def test_disjoint_windows_put_the_change_on_their_seams_and_overlapping_ones_do_not(
    imagenet, mobilenet
):
    """The layout decision in small: one attack step (the margin gradient of real images, 32×32 centre crop)
    solved on disjoint 8×8 windows and on 8×8 windows at stride 4."""
    x, y = imagenet
    g = loss_gradient(mobilenet, x[:2], y[:2])
    crop = (
        slice(None),
        slice(None),
        slice(96, 128),
        slice(96, 128),
    )  # the centre 32×32 of the 224×224 images
    xs, gs = x[:2][crop].double(), g[crop].double()
    ratios = {}
    for stride in (8, 4):
        sol = solve_admm(SSIMBallProblem(xs, gs, 1e-4, 8, stride), tol=5e-3)
        ratios[stride] = [
            grid_ratio(window_dissimilarity(xs[i], xs[i] + sol.delta[i], 8), stride)
            for i in range(2)
        ]
    assert max(ratios[8]) < 0.2, (
        ratios
    )  # disjoint: aligned windows sit at ε, straddling ones far above
    assert min(ratios[4]) > 0.5, ratios


def test_grid_diagnostic_flags_the_disjoint_ssim_ball_on_real_images_not_pgd(imagenet, mobilenet):
    x, y = imagenet
    adv = SSIMBall(mobilenet, 1e-5, size=8, stride=8, steps=1).run(x[:2], y[:2])["adv"]
    pgd = run_pgd(
        mobilenet,
        x[:2],
        y[:2],
        {"linf": {"steps": 3, "alpha_factor": 0.25, "random_start": True}},
        "linf",
        0.125 / 255,
        0,
        2,
        ["0", "1"],
    )
    for i in range(2):
        maps, ssim_ratio = change_maps(x[i], adv[i], size=8, stride=8)
        _, pgd_ratio = change_maps(x[i], pgd[i], size=8, stride=8)
        assert ssim_ratio < 0.1 and 0.8 < pgd_ratio < 1.25, (ssim_ratio, pgd_ratio)
        assert set(maps) == set(MAPS) and all(m.shape == (224, 224) for m in maps.values())
        # the SSIM ball meets its bound in every window: the constraint-window map is flat at about 1 - (1 - ε)²
        assert (
            maps["window_ssim"].max() <= 2e-5 * (1 + 1e-3)
            and np.quantile(maps["window_ssim"], 0.05) > 1.9e-5
        )
        assert maps["energy"].sum() == pytest.approx(float(((adv[i] - x[i]).double() ** 2).sum()))


def test_summary_verdicts_grid_rows_and_the_primary_rows():
    s = summ(comparison_frame(30, 1.0))
    paired = s[s.baseline != ""].set_index(["map", "metric", "baseline"])
    assert (
        paired.loc[("energy", "mass_in_topk", "pgd_linf"), "verdict"]
        == "SSIM ball more aligned with the CAM"
    )
    assert paired.loc[("energy", "mass_in_topk", "pgd_linf"), "mean"] == pytest.approx(0.2)
    assert paired.loc[("energy", "spearman", "pgd_linf"), "verdict"] == "no clear difference"
    assert (
        paired.loc[("energy", "pointing_hit", "pgd_l2"), "verdict"]
        == "SSIM ball more aligned with the CAM"
    )
    # the primary metric of the primary map: three attacks and the budget map, three paired differences (two PGD, budget)
    assert s.primary.sum() == 4 + 3
    assert paired.loc[("energy", "mass_in_topk", BUDGET), "mean"] == pytest.approx(0.18)
    assert (
        "sliding_ssim",
        "mass_in_topk",
        BUDGET,
    ) not in paired.index  # no budget for the 7×7 sliding map
    rates = s[s.metric == "success_rate"].set_index("attack")
    assert list(rates.index) == ["ssim_ball", "pgd_linf", "pgd_l2"] and (rates["mean"] == 1).all()
    assert (rates.verdict.iloc[1:] == SUCCESS_OK).all()
    assert rates.ci_low.iloc[0] == pytest.approx(0.8865, abs=1e-3)  # Wilson interval of 30/30
    grid = s[s.metric == "grid_ratio"].set_index("attack")
    assert (grid.verdict == GRID_OK).all() and grid.loc["ssim_ball", "mean"] == pytest.approx(
        1, abs=0.05
    )
    assert np.allclose(s[s.metric == "texture_spearman"]["mean"], 0.3)
    flagged = summ(comparison_frame(30, 0.02))
    grid = flagged[flagged.metric == "grid_ratio"].set_index("attack")
    assert (
        grid.loc["ssim_ball", "verdict"] == GRID_ARTEFACT
        and grid.loc["pgd_linf", "verdict"] == GRID_OK
    )
    g = grid.loc["ssim_ball"]
    assert (
        g["mean"] == pytest.approx(0.02, rel=0.05) and g.ci_low < g["mean"] < g.ci_high
    )  # the geometric mean's interval
    stride1 = summ(comparison_frame(30, 1.0).assign(grid_ratio=np.nan), 200)
    assert set(stride1[stride1.metric == "grid_ratio"].verdict) == {GRID_NONE}
    few = summ(comparison_frame(6, 1.0), 200)
    assert set(few[few.baseline != ""].verdict) == {"too few images (< 10)"}
    with pytest.raises(ConfigError, match="primary.map"):
        summarise(
            comparison_frame(6, 1.0),
            200,
            0,
            primary={**PRIMARY, "map": "sliding"},
            grid_min_ratio=0.5,
            success_tolerance=0.15,
        )


def test_budget_map_from_first_principles():
    """One 2×2 window (n = 4), one channel: the largest-energy point of the window's SSIM set sits on both
    bounds (luminance and structure factor exactly 1 − ε, computed here from SSIM's formula) and its
    energy, spread over the 4 pixels, is the budget map."""
    eps, c1, c2 = 0.01, 0.01**2, 0.03**2
    v = np.array([0.2, 0.4, 0.6, 0.8])
    mu, xt = v.mean(), v - v.mean()
    k = eps / (1 - eps)
    r = math.sqrt(xt @ xt * (2 * eps - eps**2) / (1 - eps) ** 2 + eps * 3 * c2 / (1 - eps))
    s = math.sqrt(mu**2 * (2 * eps - eps**2) / (1 - eps) ** 2 + eps * c1 / (1 - eps))
    delta = (
        k * xt + r * xt / np.linalg.norm(xt) + (k * mu + s)
    )  # furthest point along x̃, largest mean
    y = v + delta
    lum = (2 * mu * y.mean() + c1) / (mu**2 + y.mean() ** 2 + c1)
    yt = y - y.mean()
    struct = (2 * xt @ yt + 3 * c2) / (
        xt @ xt + yt @ yt + 3 * c2
    )  # sample covariance: the (n − 1) factors cancel
    assert lum == pytest.approx(1 - eps, abs=1e-12) and struct == pytest.approx(1 - eps, abs=1e-12)
    x = torch.tensor(v, dtype=torch.float64).view(1, 2, 2)
    m = budget_map(x, eps, 2, 2)
    assert m.shape == (2, 2) and np.allclose(m, (delta @ delta) / 4, rtol=1e-12)
    # no larger energy in the set: random feasible points (scaled onto the set's boundary) stay below it
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = rng.normal(size=4)
        pd_ = d - d.mean()
        t = min(r / max(np.linalg.norm(pd_), 1e-12), 1.0)
        cand = k * xt + t * pd_ * r / max(np.linalg.norm(pd_), 1e-12) + k * mu + rng.uniform(-s, s)
        assert cand @ cand <= delta @ delta + 1e-15
    # without the luminance bound, the structure term only; channels are summed; overlapping windows averaged
    assert np.allclose(
        budget_map(x, eps, 2, 2, luminance=False), (k * np.linalg.norm(xt) + r) ** 2 / 4
    )
    assert np.allclose(budget_map(torch.cat([x, x]), eps, 2, 2), 2 * m)
    wide = torch.tensor(
        [[[0.2, 0.4, 0.1], [0.6, 0.8, 0.9]]], dtype=torch.float64
    )  # windows at columns 0 and 1 (stride 1)
    b = budget_map(wide, eps, 2, 1)
    left, right = (
        budget_map(wide[..., :2], eps, 2, 2)[0, 0],
        budget_map(wide[..., 1:], eps, 2, 2)[0, 0],
    )
    assert (
        b[0, 0] == pytest.approx(left)
        and b[0, 2] == pytest.approx(right)
        and b[1, 1] == pytest.approx((left + right) / 2)
    )
    assert np.allclose(budget_map(x, eps, 2, 2, name="window_ssim"), 1 - (1 - eps) ** 2)


def test_a_listed_baseline_that_is_missing_is_an_error():
    frame = comparison_frame(30, 1.0)
    with pytest.raises(ValueError, match=r"ssim.compare.primary.baselines lists \['pgd_l2'\]"):
        summ(frame[frame.attack != "pgd_l2"])


def test_grid_ratios_of_zero_stay_in_the_geometric_mean():
    frame = comparison_frame(30, 1.0)
    zero = (frame.attack == "ssim_ball") & frame.image_id.isin([f"i{i}" for i in range(15)])
    frame.loc[zero, "grid_ratio"] = (
        0.0  # half the images: no change at all on the constraint's own windows
    )
    g = summ(frame)
    g = g[(g.metric == "grid_ratio") & (g.attack == "ssim_ball")].iloc[0]
    assert g.n_images == 30 and g["mean"] < 0.01 and g.verdict == GRID_ARTEFACT


def test_compare_chunk_measures_against_the_clean_cam():
    """A hand-built ``cam`` file: 8×8 image, δ = 0.1 on three pixels of the clean CAM's top 10 % (6 of 64
    pixels) and on one pixel outside it; the adversarial CAM's top pixels are elsewhere."""
    x = torch.full((3, 8, 8), 0.5, dtype=torch.float32)
    cam_clean = np.zeros((1, 8, 8), np.float32)
    cam_clean[0, 0, :6] = 1.0  # top 10 % (round(6.4) = 6 pixels): the first six of row 0
    cam_adv = np.zeros((1, 8, 8), np.float32)
    cam_adv[0, 7, :6] = 1.0
    adv = x.clone()
    for r, c in ((0, 0), (0, 2), (0, 4), (7, 7)):
        adv[0, r, c] += 0.1
    npz = {
        "image_id": np.array(["a"]),
        "label": np.array([3]),
        "cam_clean": cam_clean,
        "adv_ssim_ball": adv.numpy()[None],
        "pred_ssim_ball": np.array([5]),
        "cam_ssim_ball": cam_adv,
    }
    rows = pd.DataFrame(compare_chunk(npz, x[None], 10, size=4, stride=4, epsilon=1e-3))
    energy = rows[(rows.attack == "ssim_ball") & (rows["map"] == "energy")].iloc[0]
    assert energy.mass_in_topk == pytest.approx(3 / 4)  # against the adversarial CAM it would be 0
    assert energy.pointing_hit and energy.success == True  # noqa: E712 (pred 5 ≠ label 3)
    assert set(rows.attack) == {"ssim_ball", BUDGET} and len(rows) == len(MAPS) + 2
    budget = rows[(rows.attack == BUDGET) & (rows["map"] == "energy")].iloc[0]
    assert budget.mass_in_topk == pytest.approx(
        6 / 64
    )  # a flat image: the budget is the same everywhere


# ---- added for mutation testing (docs/development.md, "Mutation testing") ------------------------------------


def _ssim_dissimilarity(x: np.ndarray, y: np.ndarray, k1: float, k2: float) -> float:
    """1 − SSIM of one window (C×h×w), channels averaged: the textbook formula with the sample covariance."""
    out = []
    for a, b in zip(x.reshape(len(x), -1), y.reshape(len(y), -1)):
        mx, my = a.mean(), b.mean()
        vx, vy, cxy = a.var(ddof=1), b.var(ddof=1), np.cov(a, b)[0, 1]
        lum = (2 * mx * my + k1**2) / (mx**2 + my**2 + k1**2)
        cs = (2 * cxy + k2**2) / (vx + vy + k2**2)
        out.append(1 - lum * cs)
    return float(np.mean(out))


def _aligned_ratio(d: np.ndarray, stride: int) -> float:
    aligned = np.zeros(d.shape, bool)
    aligned[::stride, ::stride] = True
    return d[aligned].mean() / d[~aligned].mean()


def test_maps_use_the_ssim_constants_they_are_given():
    # 16×16 images, 8×8 windows: the constraint windows are the 4 disjoint blocks, the sliding ones all 81 positions
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.uniform(0.2, 0.8, (3, 16, 16)))
    adv = (x + torch.from_numpy(rng.normal(0, 0.05, (3, 16, 16)))).clamp(0, 1)
    xn, an = x.numpy(), adv.numpy()
    ratios = []
    for k1, k2 in ((0.01, 0.03), (0.2, 0.5)):
        sliding = np.array(
            [
                [
                    _ssim_dissimilarity(
                        xn[:, r : r + 8, c : c + 8], an[:, r : r + 8, c : c + 8], k1, k2
                    )
                    for c in range(9)
                ]
                for r in range(9)
            ]
        )
        blocks = np.kron(
            sliding[::8, ::8], np.ones((8, 8))
        )  # each pixel: its one constraint window
        if (k1, k2) == (0.01, 0.03):  # SSIM's standard constants are the defaults
            np.testing.assert_allclose(constraint_window_map(x, adv, 8, 8), blocks, rtol=1e-9)
            np.testing.assert_allclose(window_dissimilarity(x, adv, 8), sliding, rtol=1e-9)
        np.testing.assert_allclose(constraint_window_map(x, adv, 8, 8, k1, k2), blocks, rtol=1e-9)
        np.testing.assert_allclose(window_dissimilarity(x, adv, 8, k1, k2), sliding, rtol=1e-9)
        maps, ratio = change_maps(x, adv, size=8, stride=8, k1=k1, k2=k2)
        np.testing.assert_allclose(maps["window_ssim"], blocks, rtol=1e-9)
        if (k1, k2) == (0.01, 0.03):
            default_maps, default_ratio = change_maps(x, adv, size=8, stride=8)
            np.testing.assert_allclose(default_maps["window_ssim"], blocks, rtol=1e-9)
            assert default_ratio == pytest.approx(ratio, rel=1e-12)
        np.testing.assert_allclose(
            maps["energy"], ((an - xn) ** 2).sum(0), rtol=1e-12
        )  # ‖δ‖² per pixel
        # overlapping windows (stride 4: starts 0, 4, 8 on each axis): each pixel the mean over the windows holding it
        starts = (0, 4, 8)
        acc, count = np.zeros((16, 16)), np.zeros((16, 16))
        for r in starts:
            for c in starts:
                acc[r : r + 8, c : c + 8] += sliding[r, c]
                count[r : r + 8, c : c + 8] += 1
        np.testing.assert_allclose(
            constraint_window_map(x, adv, 8, 4, k1, k2), acc / count, rtol=1e-9
        )
        assert grid_ratio(sliding, 2) == pytest.approx(
            _aligned_ratio(sliding, 2), rel=1e-12
        )  # stride 2 is a grid too
        aligned = sliding[::8, ::8].mean()
        others = (sliding.sum() - sliding[::8, ::8].sum()) / (81 - 4)
        assert ratio == pytest.approx(aligned / others, rel=1e-9)
        ratios.append(ratio)
    assert ratios[0] != pytest.approx(ratios[1], rel=1e-3)  # the constants matter here


def test_sliding_ssim_map_is_zero_for_no_change():
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (3, 16, 16)))
    maps, _ = change_maps(x, x.clone(), size=8, stride=8)
    for name in MAPS:
        assert np.abs(maps[name]).max() == pytest.approx(0, abs=1e-12), name
    adv = (x + 0.1).clamp(0, 1)
    maps, _ = change_maps(x, adv, size=8, stride=8)
    assert 0 < maps["sliding_ssim"].mean() < 1  # 1 − SSIM of a small change: above 0, below 1


def test_compare_one_on_maps_whose_range_is_exactly_one():
    # a flat-map guard must test for a range of 0, not of 1: maps in [0, 1] often span exactly 1
    a = np.linspace(0, 1, 16).reshape(4, 4)
    b = a**2
    out = compare_one(a, b, 25, texture=b)
    assert out["pearson"] == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert out["spearman"] == pytest.approx(1) and out["texture_spearman"] == pytest.approx(1)
    out = compare_one(b, a, 25)
    assert out["pearson"] == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1]) and out[
        "spearman"
    ] == pytest.approx(1)


def test_budget_map_refuses_an_unknown_map_by_name():
    with pytest.raises(
        ValueError, match=r"no budget for map 'sliding_ssim'; use one of energy, window_ssim"
    ):
        budget_map(torch.zeros(3, 16, 16), 0.1, 8, 8, name="sliding_ssim")


def test_grid_verdict_and_primary_settings():
    assert (
        grid_verdict(0.5, 0.5) == GRID_OK and grid_verdict(0.49, 0.5) == GRID_ARTEFACT
    )  # "below" the floor
    assert grid_verdict(float("nan"), 0.5) == GRID_NONE
    good = {"map": "energy", "metric": "mass_in_topk", "baselines": ["pgd_linf"]}
    assert check_primary(good) is good
    with pytest.raises(
        ConfigError,
        match=r"ssim\.compare\.primary\.map is 'edges'; use one of energy, window_ssim, sliding_ssim",
    ):
        check_primary({**good, "map": "edges"})
    with pytest.raises(
        ConfigError,
        match=r"ssim\.compare\.primary\.metric is 'auc'; use one of pearson, spearman, iou_topk",
    ):
        check_primary({**good, "metric": "auc"})
    with pytest.raises(
        ConfigError,
        match=r"ssim\.compare\.primary\.baselines is empty; name the PGD baselines \(pgd_linf, pgd_l2\) "
        r"the SSIM ball is compared with",
    ):
        check_primary({**good, "baselines": []})


def test_callers_shuffle_ties_and_keep_at_least_one_pixel():
    """compare_one, synthesis.compare_pair and synthesis.agreement_matrices take top-k sets with ties
    in a shuffled order (not pixel order) and at least one pixel. A constant map against one that grows
    row by row: shuffled ties spread the constant map's top 10 % over the image, so it meets the last
    rows (the other top set) about as often as chance, q / (2 - q) = 0.053; pixel-order ties would take
    the first rows and meet nothing (IoU 0)."""
    flat, rows = np.ones((224, 224)), np.repeat(np.arange(224.0), 224).reshape(224, 224)
    assert (
        iou(top_k_mask(flat, 10, ties="pixel_order"), top_k_mask(rows, 10, ties="pixel_order")) == 0
    )
    one = compare_one(flat, rows, 10)["iou_topk"]
    pair = synthesis.compare_pair(flat, rows, np.ones((224, 224), bool), 10)["iou_topk"]
    _, matrix = synthesis.agreement_matrices(flat.reshape(1, -1), rows.reshape(1, -1), 10)
    for value in (one, pair, matrix[0, 0]):
        assert 0.03 < value < 0.08
    # at least one pixel: 1 % of 4 pixels rounds to none; the maps' single top pixels differ, so IoU 0
    # (two empty sets would give IoU 1)
    a, b = np.array([[0.0, 1.0], [0.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 0.0]])
    assert compare_one(a, b, 1)["iou_topk"] == 0.0
    assert synthesis.compare_pair(a, b, np.ones((2, 2), bool), 1)["iou_topk"] == 0.0
    assert synthesis.agreement_matrices(a.reshape(1, -1), b.reshape(1, -1), 1)[1][0, 0] == 0.0
