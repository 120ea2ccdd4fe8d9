"""The synthesis (ours, pixelrobust.synthesis): the four "where" maps compared pairwise and against the
permutation null, on known maps and real images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pixelrobust import data, summary, synthesis
from pixelrobust.io import save_npz
from pixelrobust.maps import chance_iou


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
        assert (
            maps["gradcam_pp"].min() >= 0
            and maps["gradcam_pp"].max() <= 1
            and (maps["input_gradient"] >= 0).all()
        )
    # a larger SSIM ball changes the image more; the other maps do not depend on it
    assert large["ssim_ball"].mean() > 10 * small["ssim_ball"].mean() > 0
    np.testing.assert_array_equal(small["input_gradient"], large["input_gradient"])
    assert large["ssim_success"].sum() >= small["ssim_success"].sum()


def test_four_maps_refuses_maps_of_other_images(prepared, tmp_path):
    fake = tmp_path / "chunk-0.npz"
    save_npz(
        fake,
        ids=np.array(["not-an-id"] * 2),
        searched=np.ones((2, 32, 32), bool),
        drop=np.zeros((2, 32, 32), np.float32),
    )
    spec = {"name": "resnet20_cifar10", "dataset": "cifar10"}
    with pytest.raises(ValueError, match="rerun onepixel_search"):
        synthesis.four_maps(
            data=prepared / "data" / "cifar10",
            weights=prepared / "weights" / "resnet20_cifar10.pt",
            maps=[str(fake)],
            out={"npz": tmp_path / "out.npz"},
            spec=spec,
            bounds=[(0, 2)],
            n_images=None,
            epsilon=1e-4,
            ball={},
            p2_map="energy",
            batch_size=2,
            device="cpu",
        )
    assert not (tmp_path / "out.npz").exists()


def test_summarise_gives_intervals_around_the_mean():
    rows = [
        {
            "dataset": "cifar10",
            "model": "m",
            "image_id": str(i),
            "map_a": "onepixel",
            "map_b": "gradcam_pp",
            "spearman": 0.2 + 0.01 * (i % 5),
            "iou_topk": 0.1 + 0.01 * (i % 3),
            "n_pixels": 1024,
            "spearman_null": 0.15 + 0.01 * (i % 2),
            "iou_null": 0.1,
            "null_pairs": 29,
        }
        for i in range(30)
    ]
    table = synthesis.summarise(pd.DataFrame(rows), 10, n_boot=500, seed=0)
    assert list(table.columns) == synthesis.TABLE_COLUMNS and len(table) == 1
    r = table.iloc[0]
    assert (
        r.ci_low < r.spearman < r.ci_high
        and r.iou_ci_low < r.iou_topk < r.iou_ci_high
        and r.n_images == 30
    )
    # the excess is the per-image difference: its mean is the difference of the means
    assert r.spearman_excess == pytest.approx(
        r.spearman - r.spearman_null
    ) and r.iou_excess == pytest.approx(r.iou_topk - 0.1)
    assert (
        r.spearman_excess_ci_low < r.spearman_excess < r.spearman_excess_ci_high
        and r.null_pairs == 29
    )
    # chance IoU of two independent random top-10 % sets: q^2 / (2q - q^2) = q / (2 - q), q = 0.1
    assert r.chance_iou == pytest.approx(0.1 / 1.9)


def test_agreement_matrices_hold_every_pairing():
    rng = np.random.default_rng(3)
    a, b = rng.random((5, 8, 8)), rng.random((5, 8, 8))
    b[2] = a[2] + 0.01 * rng.random((8, 8))  # one image whose two maps agree
    a[4, :4] = 0.5  # ties
    everywhere = np.ones((8, 8), bool)
    rho, ov = synthesis.agreement_matrices(a.reshape(5, -1), b.reshape(5, -1), 20)
    for i in range(5):
        for j in range(5):
            ref = synthesis.compare_pair(a[i], b[j], everywhere, 20)
            assert rho[i, j] == pytest.approx(ref["spearman"], abs=1e-12) and ov[
                i, j
            ] == pytest.approx(ref["iou_topk"])
    assert rho[2, 2] > 0.9
    flat = synthesis.agreement_matrices(np.ones((2, 64)), b.reshape(5, -1)[:2], 20)[0]
    assert np.isnan(flat).all()
    with pytest.raises(FloatingPointError):
        synthesis.agreement_matrices(np.full((2, 64), np.nan), b.reshape(5, -1)[:2], 20)


def test_compare_images_null_is_the_mean_over_the_other_images():
    rng = np.random.default_rng(4)
    n = 6
    maps = {m: rng.random((n, 8, 8)) for m in synthesis.MAPS}
    searched = np.zeros((n, 8, 8), bool)
    searched[:, ::2, ::2] = True
    maps["onepixel"] = np.where(searched, maps["onepixel"], np.nan)
    d = synthesis.compare_images(maps, searched, 25).set_index(["image", "map_a", "map_b"])
    assert len(d) == n * len(synthesis.PAIRS) and (d.null_pairs == n - 1).all()
    for a, b in (("onepixel", "gradcam_pp"), ("ssim_ball", "input_gradient")):
        pixels = searched[0] if a == "onepixel" else np.ones((8, 8), bool)
        for i in range(n):
            others = [
                synthesis.compare_pair(maps[a][i], maps[b][j], pixels, 25)
                for j in range(n)
                if j != i
            ]
            own = synthesis.compare_pair(maps[a][i], maps[b][i], pixels, 25)
            r = d.loc[(i, a, b)]
            assert r.spearman == pytest.approx(own["spearman"]) and r.iou_topk == pytest.approx(
                own["iou_topk"]
            )
            assert r.spearman_null == pytest.approx(np.mean([o["spearman"] for o in others]))
            assert r.iou_null == pytest.approx(np.mean([o["iou_topk"] for o in others]))
            assert r.n_pixels == pixels.sum()


@pytest.fixture(scope="module")
def cifar_maps(prepared, resnet20):
    """Grad-CAM++ and the input gradient of the first 60 correctly classified CIFAR-10 test images."""
    from pixelrobust.cam import gradcam_pp
    from pixelrobust.gradients import input_gradients

    split = data.load_split(prepared / "data" / "cifar10", "test", 0, 80)
    with torch.no_grad():
        ok = (resnet20(split.images).argmax(1) == split.labels).nonzero()[:, 0][:60]
    x, y = split.images[ok], split.labels[ok]
    return {
        "gradcam_pp": gradcam_pp(resnet20, x, y, 64),
        "input_gradient": input_gradients(resnet20, x, y).abs().mean(1).numpy(),
    }


def finding(per_image: pd.DataFrame) -> dict:
    per_image = per_image.assign(
        dataset="cifar10", model="resnet20_cifar10", image_id=per_image.image.astype(str)
    )
    table = synthesis.summarise(per_image[per_image.map_a == "gradcam_pp"], 10, n_boot=1000, seed=0)
    return summary.synthesis_findings(table)[0]


def test_real_maps_beat_the_permutation_null_and_shuffled_maps_do_not(cifar_maps):
    n = len(cifar_maps["gradcam_pp"])
    assert n >= 50
    flat = {m: np.zeros((n, 32, 32)) for m in ("onepixel", "ssim_ball")}
    searched = np.ones((n, 32, 32), bool)
    real = synthesis.compare_images({**cifar_maps, **flat}, searched, 10)
    pair = real[real.map_a == "gradcam_pp"]
    # Grad-CAM++ and the input gradient share a centre bias: other images' maps already agree well beyond
    # uniform random sets, and the same image's maps agree more than that
    assert pair.iou_null.mean() > 1.5 * chance_iou(0.1, 0.1) and pair.spearman_null.mean() > 0.2
    same = finding(real)
    assert same["control_value"] == pytest.approx(pair.iou_null.mean())
    assert (
        "Spearman" in same["evidence"] and "held" in same["evidence"].split("Spearman")[1]
    )  # rho's excess is positive
    # shuffled: each image's input gradient replaced by another image's (a derangement); the same test must
    # not find agreement beyond the null
    perm = np.roll(np.arange(n), 7)
    shuffled = synthesis.compare_images(
        {**cifar_maps, "input_gradient": cifar_maps["input_gradient"][perm], **flat}, searched, 10
    )
    other = finding(shuffled)
    assert other["verdict"] != "held" and other["ci_low"] < 0 < other["ci_high"]
    assert "inconclusive" in other["evidence"].split("Spearman")[1]


def test_synthesis_summary_counts_only_images_with_a_finite_excess():
    """Images whose null is NaN drop out of the intervals, so they must not count towards the minimum-images gate."""
    rows = [
        {
            "dataset": "d",
            "model": "m",
            "map_a": "onepixel",
            "map_b": "ssim_ball",
            "image": i,
            "spearman": 0.5,
            "iou_topk": 0.3,
            "spearman_null": 0.1 if i < 8 else np.nan,
            "iou_null": 0.1 if i < 9 else np.nan,
            "n_pixels": 64,
            "null_pairs": 11,
        }
        for i in range(12)
    ]
    t = synthesis.summarise(pd.DataFrame(rows), 10, n_boot=200, seed=0)
    assert (
        int(t.n_images.iloc[0]) == 8
    )  # 8 finite Spearman excesses, 9 finite IoU excesses: the smaller
    assert summary.synthesis_findings(t)[0]["verdict"] == "too few images"
    # the row's observed and control values are means over the images its effect is computed on
    rows[0]["spearman"], rows[11]["spearman"] = (
        0.9,
        np.nan,
    )  # image 0 paired, image 11 not (its null is NaN)
    t = synthesis.summarise(pd.DataFrame(rows), 10, n_boot=200, seed=0).iloc[0]
    assert t.spearman - t.spearman_null == pytest.approx(t.spearman_excess)
    assert t.iou_topk - t.iou_null == pytest.approx(t.iou_excess)
