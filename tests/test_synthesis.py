"""The synthesis (four maps compared) and SUMMARY.md's claim verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pixelrobust import data, summary, synthesis
from pixelrobust.io import save_npz


@pytest.fixture(scope="module")
def cifar(prepared):
    split = data.load_split(prepared / "data" / "cifar10", "test", 0, 16)
    return split


def test_compare_pair_on_known_maps():
    rng = np.random.default_rng(0)
    a = rng.random((8, 8))
    everywhere = np.ones((8, 8), bool)
    same = synthesis.compare_pair(a, a, everywhere, 10)
    assert same["spearman"] == pytest.approx(1) and same["iou_topk"] == 1 and same["n_pixels"] == 64
    flipped = synthesis.compare_pair(a, -a, everywhere, 10)
    assert flipped["spearman"] == pytest.approx(-1) and flipped["iou_topk"] == 0
    # only the given pixels count: NaN outside them is fine, inside it is an error
    grid = np.zeros((8, 8), bool)
    grid[1::2, 1::2] = True
    sparse = np.where(grid, a, np.nan)
    on_grid = synthesis.compare_pair(sparse, a, grid, 25)
    assert on_grid["spearman"] == pytest.approx(1) and on_grid["n_pixels"] == 16
    with pytest.raises(FloatingPointError, match="NaN"):
        synthesis.compare_pair(sparse, a, everywhere, 25)


def test_chance_iou_matches_random_sets():
    rng = np.random.default_rng(1)
    n, k = 1024, 10
    ious = []
    for _ in range(2000):
        ma, mb = np.zeros(n, bool), np.zeros(n, bool)
        ma[rng.choice(n, n * k // 100, replace=False)] = True
        mb[rng.choice(n, n * k // 100, replace=False)] = True
        ious.append((ma & mb).sum() / (ma | mb).sum())
    assert np.mean(ious) == pytest.approx(synthesis.chance_iou(k), rel=0.05)


def test_image_maps_on_real_images(cifar, resnet20):
    ok = []
    for i in range(len(cifar.images)):
        with torch.no_grad():
            if resnet20(cifar.images[i : i + 1]).argmax(1).item() == cifar.labels[i].item():
                ok.append(i)
    x, y = cifar.images[ok[:4]], cifar.labels[ok[:4]]
    ball = {"size": 8, "stride": 8, "steps": 3, "max_iter": 1500}
    small = synthesis.image_maps(resnet20, x, y, epsilon=1e-5, ball=ball, batch_size=4)
    large = synthesis.image_maps(resnet20, x, y, epsilon=1e-2, ball=ball, batch_size=4)
    for maps in (small, large):
        for key in ("ssim_ball", "gradcam_pp", "input_gradient"):
            assert maps[key].shape == (4, 32, 32) and np.isfinite(maps[key]).all()
        assert maps["gradcam_pp"].min() >= 0 and maps["gradcam_pp"].max() <= 1 and (maps["input_gradient"] >= 0).all()
    # a larger SSIM ball changes the image more; the other maps do not depend on it
    assert large["ssim_ball"].mean() > 10 * small["ssim_ball"].mean() > 0
    np.testing.assert_array_equal(small["input_gradient"], large["input_gradient"])
    assert large["ssim_success"].sum() >= small["ssim_success"].sum()


def test_run_maps_refuses_maps_of_other_images(prepared, tmp_path):
    fake = tmp_path / "chunk-0.npz"
    save_npz(fake, ids=np.array(["not-an-id"] * 2), searched=np.ones((2, 32, 32), bool), drop=np.zeros((2, 32, 32), np.float32))
    spec = {"name": "resnet20_cifar10", "dataset": "cifar10"}
    with pytest.raises(ValueError, match="rerun onepixel_search"):
        synthesis.run_maps(spec, prepared / "weights" / "resnet20_cifar10.pt", prepared / "data" / "cifar10", [str(fake)],
                           [(0, 2)], tmp_path / "out.npz", n_images=None, epsilon=1e-4, ball={}, batch_size=2, device="cpu")
    assert not (tmp_path / "out.npz").exists()


def test_summarise_gives_intervals_around_the_mean():
    rows = [{"dataset": "cifar10", "model": "m", "image_id": str(i), "map_a": "onepixel", "map_b": "gradcam_pp",
             "spearman": 0.2 + 0.01 * (i % 5), "iou_topk": 0.1 + 0.01 * (i % 3), "n_pixels": 1024} for i in range(30)]
    table = synthesis.summarise(pd.DataFrame(rows), 10, n_boot=500, seed=0)
    assert list(table.columns) == synthesis.TABLE_COLUMNS and len(table) == 1
    r = table.iloc[0]
    assert r.ci_low < r.spearman < r.ci_high and r.iou_ci_low < r.iou_topk < r.iou_ci_high and r.n_images == 30


# ---- SUMMARY.md --------------------------------------------------------------------------------


def test_search_share_is_the_expected_share_of_regions_searched():
    rng = np.random.default_rng(2)
    for R, v in [(16, 1), (16, 3), (10, 10), (5, 2)]:
        marked = np.zeros(R, bool)
        marked[:v] = True
        needed = [np.argmax(rng.permutation(marked)) + 1 for _ in range(20000)]
        assert np.mean(needed) / R == pytest.approx(summary.search_share(np.array([R]), np.array([v]))[0], rel=0.02)


def regions_frame(v_per_image: list[int], R: int = 10) -> pd.DataFrame:
    rows = []
    for i, v in enumerate(v_per_image):
        rows += [{"dataset": "cifar10", "model": "m", "image_id": str(i), "region_id": r, "n_searched": 5,
                  "n_vulnerable": int(r < v)} for r in range(R)]
    return pd.DataFrame(rows)


def summary_row(n, rho=(0.0, -0.1, 0.1)) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": "cifar10", "model": "m", "n_images": n, "exhaustive_success": 0.5,
                          "median_vulnerable_pixels": 3.0, "spearman_occlusion": rho[0], "spearman_occlusion_ci_low": rho[1],
                          "spearman_occlusion_ci_high": rho[2], "spearman_cam": 0.0, "spearman_cam_ci_low": -0.1,
                          "spearman_cam_ci_high": 0.1}])


def test_p1_verdicts_follow_the_numbers():
    scattered = summary.p1_claims(summary_row(20, (0.3, 0.1, 0.5)), regions_frame([5] * 20), 500, 0)
    assert [r["verdict"] for r in scattered] == ["held", "held", "held"]
    single = summary.p1_claims(summary_row(20), regions_frame([1] * 20), 500, 0)
    assert [r["verdict"] for r in single] == ["not held", "not held", "not held"]
    few = summary.p1_claims(summary_row(3), regions_frame([5] * 3), 500, 0)
    assert {r["verdict"] for r in few} == {"too few images"}
    assert "0.18 of its regions" in scattered[0]["evidence"]  # (10 + 1) / (5 + 1) / 10


def test_p3_verdicts_follow_the_numbers():
    def masked(top, bottom, n=50):
        return pd.DataFrame([{"dataset": "cifar10", "model": "m", "mask": mask, "k_percent": k, "n_images": n, "top1": t}
                             for k, t_top, t_bot in zip((5, 25, 100), top, bottom)
                             for mask, t in (("top", t_top), ("bottom", t_bot), ("random", (t_top + t_bot) / 2))])

    assert summary.p3_ordering(masked([0.5, 0.1, 0.0], [0.8, 0.4, 0.0]), "L-inf")[0]["verdict"] == "held"
    assert summary.p3_ordering(masked([0.5, 0.5, 0.0], [0.8, 0.4, 0.0]), "L-inf")[0]["verdict"] == "not held"
    assert summary.p3_ordering(masked([0.5, 0.1, 0.0], [0.8, 0.4, 0.0], n=4), "L-inf")[0]["verdict"] == "too few images"
    sweep = pd.DataFrame({"dataset": "cifar10", "model": "m", "lambda": [0, 0.5, 1], "top1": [0.9, 0.8, 0.6],
                          "iou": [0.14, 0.5, 1.0]})
    detail = pd.DataFrame({"model": ["m"], "chance_iou": [1 / 7], "n_images": [100]})
    assert summary.p3_iou(sweep, detail)[0]["verdict"] == "held"
    assert summary.p3_iou(sweep.assign(iou=[0.14, 0.13, 0.12]), detail)[0]["verdict"] == "not held"


def test_render_lists_every_claim_and_the_config():
    claims = pd.DataFrame([summary._row("P1", "c1", "cifar10", "m", "held", 20, "e1"),
                           summary._row("P3", "c3", "cifar10", "m", "too few images", 2, "e3")], columns=summary.CLAIM_COLUMNS)
    text = summary.render(claims, {"onepixel_summary": "x", "masked_pgd": "y"}, config_sha256="abc", configfiles=["c.yaml"],
                          config_yaml="seed: 7\n", git_commit="deadbeef")
    assert "### c1" in text and "**held**" in text and "**too few images**" in text and "seed: 7" in text
    assert "Not run: `ssim.model`" in text and "Not run: `synthesis.models`" in text and "`c.yaml`" in text
