"""The robust-vs-standard study (ours, pixelrobust.robust_compare) on planted inputs whose answers follow from
first principles: identical maps agree perfectly and beyond other images', independent maps do not, a model
planted with fewer vulnerable pixels is found to have fewer, and swapping the two models flips each verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.robust import H, W, p1_maps, rng, synth
from pixelrobust import robust_compare as rc
from pixelrobust.stats import boot_mean, two_level_boot

N_BOOT = 500


# ---- agreement against the permutation null ----------------------------------------------------


def agree(a, b, u=None, k=10):
    """The agreement row of maps ``a`` (standard) and ``b`` (robust), decided against the untrained maps ``u``."""
    ref = None if u is None else [rc.per_image_agreement(a, u, k)]
    return rc.agreement_row(
        "s", "maps", rc.per_image_agreement(a, b, k), k, N_BOOT, rng(), "20 images", ref
    )


def test_identical_maps_agree_beyond_an_untrained_reference():
    a = rng(1).random((20, 64))
    per = rc.per_image_agreement(a, a.copy(), 10)
    assert np.allclose(per.spearman, 1) and np.allclose(per.iou_topk, 1)
    # independent uniform maps of other images: rho about 0, top-10 % IoU about the chance level 0.1/1.9
    assert abs(per.spearman_null.mean()) < 0.1 and per.iou_null.mean() < 0.15
    row = agree(
        a, a.copy(), rng(9).random((20, 64))
    )  # the untrained maps: unrelated to the standard's
    assert row["verdict"] == "held" and row["n_images"] == 20 and row["ci_low"] > 0.5
    assert row["control"] == rc.REFERENCE
    # without a same-run reference the row has numbers but no verdict
    bare = agree(a, a.copy())
    assert (
        bare["verdict"] == "descriptive"
        and "no untrained model" in bare["evidence"]
        and bare["ci_low"] > 0.5
    )


def test_maps_sharing_only_image_content_pass_the_null_but_not_the_reference():
    """R4's finding: every model's map of an image is the image's content plus the model's own noise. The
    robust model's maps beat the permutation null (they share the content), but an untrained model's maps share
    it just as much, so "agree beyond the reference" is not held; agreement beyond the content (the robust
    maps carry part of the standard model's own noise) is."""
    g = rng(11)
    content = g.random((20, 64))
    std = content + g.random((20, 64))
    rob, unt = content + g.random((20, 64)), content + g.random((20, 64))
    per = rc.per_image_agreement(std, rob, 10)
    excess = (per.spearman - per.spearman_null).mean()
    assert excess > 0.3  # the permutation null alone would call this agreement
    assert agree(std, rob, unt)["verdict"] in ("inconclusive", "not held")
    shared = (
        content + 0.5 * (std - content) + 0.5 * g.random((20, 64))
    )  # half the standard model's own noise
    assert agree(std, shared, unt)["verdict"] == "held"


def test_agreement_needs_both_measures():
    """The top-10 % pixels of the robust map are the standard's but the other 90 % are in reverse order: the
    top-k IoU is 1 (held) and the Spearman far below the reference's (not held), so the claim is not held."""
    a = rng(12).random((20, 100))
    b = -a.copy()
    for i in range(20):
        top = np.argsort(a[i])[-10:]
        b[i, top] = 10 + a[i, top]
    row = agree(a, b, rng(13).random((20, 100)))
    assert "IoU" in row["evidence"] and row["evidence"].count("held") >= 2
    assert (
        row["evidence"].split("difference of excesses")[1].split("),")[1].strip().startswith("held")
    )
    assert row["verdict"] == "not held" and row["statistic"].startswith("Spearman")


def test_maps_matched_to_the_wrong_image_flip_the_verdict():
    """The robust model's map of image i is the standard model's map of image i+1: each image's own pair is
    unrelated while one of its 'other images' pairs is identical, so the excess is negative, below the untrained
    reference's (here maps sharing the images' content, excess clearly positive): not held."""
    a = rng(4).random((20, 64))
    row = agree(a, np.roll(a, -1, axis=0), a + 0.5 * rng(14).random((20, 64)))
    assert row["verdict"] == "not held" and row["ci_high"] < 0


def test_one_image_has_no_null():
    a = rng(5).random((1, 16))
    per = rc.per_image_agreement(a, a, 10)
    assert np.isnan(per.spearman_null[0]) and np.isnan(per.iou_null[0])
    assert agree(a, a, rng(6).random((1, 16)))["verdict"] == "too few images"


def test_reference_must_cover_the_same_images():
    a = rng(5).random((20, 16))
    with pytest.raises(ValueError, match="same images"):
        rc.agreement_row(
            "s",
            "m",
            rc.per_image_agreement(a, a, 10),
            10,
            N_BOOT,
            rng(),
            "",
            [rc.per_image_agreement(a[:5], a[:5], 10)],
        )


def test_flat_maps_count_for_neither_measure():
    """8 of 40 images have a flat map in both models (every pixel equal): its top-k set would be a fixed tie
    order, so its own IoU 1. Both measures are NaN there, the flat maps leave the other images' null, and
    independent maps are not found to agree."""
    g = rng(15)
    a, b = g.random((40, 64)), g.random((40, 64))
    a[:8], b[:8] = 0.5, 0.25
    per = rc.per_image_agreement(a, b, 10)
    assert per.iloc[:8].isna().all().all() and per.iloc[8:].notna().all().all()
    # image 8's null: its map against the 31 other non-flat robust maps only
    rho, ov = rc.agreement_matrices(a[8:], b[8:], 10)
    assert per.iou_null[8] == pytest.approx(np.delete(ov[0], 0).mean())
    row = agree(a, b, g.random((40, 64)))
    assert row["n_images"] == 32 and row["verdict"] != "held"
    assert agree(a, b)["n_images"] == 32


# ---- P1 ----------------------------------------------------------------------------------------


def by_comparison(rows):
    return {r["comparison"]: r for r in rows}


def test_p1_a_model_planted_with_fewer_vulnerable_pixels_has_fewer_and_swapping_flips():
    n = 20
    std = p1_maps(n, [6] * n, seed=1)  # every image breakable, 6 of 64 pixels
    rob = p1_maps(n, [1] * 4 + [0] * 16, seed=2)  # 4 images breakable, one pixel each
    rows, maps = rc.p1_rows(std, rob, k_percent=10, border=0.25, n_boot=N_BOOT, rng=rng())
    r = by_comparison(rows)
    brk, pix = r["breakable by one pixel"], r["vulnerable pixels per image"]
    assert (brk["standard_value"], brk["robust_value"], brk["n_images"]) == (1.0, 0.2, 20)
    assert brk["effect"] == pytest.approx(0.8) and brk["verdict"] == "held"
    assert pix["effect"] == pytest.approx(6 / 64 - 4 / 20 / 64) and pix["verdict"] == "held"
    # the mean maps: share of images with each pixel vulnerable
    np.testing.assert_allclose(maps["p1_standard"].sum(), 6) and np.testing.assert_allclose(
        maps["p1_robust"].sum(), 0.2
    )
    swapped = by_comparison(
        rc.p1_rows(rob, std, k_percent=10, border=0.25, n_boot=N_BOOT, rng=rng())[0]
    )
    assert swapped["breakable by one pixel"]["verdict"] == "not held"
    assert swapped["vulnerable pixels per image"]["verdict"] == "not held"


def test_p1_pairs_only_images_both_classify_correctly():
    correct_std = np.array([True] * 15 + [False] * 5)
    correct_rob = np.array([False] * 3 + [True] * 17)
    std = p1_maps(20, [3] * 20, correct=correct_std, seed=3)
    rob = p1_maps(20, [3] * 20, correct=correct_rob, seed=4)
    r = by_comparison(rc.p1_rows(std, rob, k_percent=10, border=0.25, n_boot=N_BOOT, rng=rng())[0])
    assert r["breakable by one pixel"]["n_images"] == 12  # images 3..14
    assert "12 of 20 test images" in r["breakable by one pixel"]["evidence"]


def test_p1_identical_maps_agree_and_centre_placement_is_found():
    std = p1_maps(20, [5] * 20, where="centre", seed=5)
    r = by_comparison(
        rc.p1_rows(
            std,
            {k: v.copy() for k, v in std.items()},
            k_percent=10,
            border=0.25,
            n_boot=N_BOOT,
            rng=rng(),
        )[0]
    )
    drop = r["one-pixel drop maps: agreement between the models"]
    sets = r["vulnerable pixel sets: overlap between the models"]
    # no untrained model's one-pixel maps in a run: numbers, no verdict
    assert drop["verdict"] == sets["verdict"] == "descriptive" and sets["observed"] == 1.0
    assert drop["ci_low"] > 0 and "no untrained model" in drop["evidence"] + sets["evidence"]
    # every vulnerable pixel in the centre (16 of 64 pixels with border 0.25 of 8 = 2): share 1 against 0.25
    centre = r["centre share of the standard model's vulnerable pixels"]
    assert (
        centre["observed"] == 1.0
        and centre["control_value"] == pytest.approx(16 / 64)
        and centre["verdict"] == "held"
    )
    assert (
        r["centre share: standard minus robust"]["effect"] == 0
        and r["centre share: standard minus robust"]["verdict"] == "descriptive"
    )
    border = p1_maps(20, [5] * 20, where="border", seed=6)
    r = by_comparison(
        rc.p1_rows(border, border, k_percent=10, border=0.25, n_boot=N_BOOT, rng=rng())[0]
    )
    assert r["centre share of the robust model's vulnerable pixels"]["observed"] == 0.0
    assert r["centre share of the robust model's vulnerable pixels"]["verdict"] == "not held"


def test_centre_share_difference_is_standard_minus_robust():
    """Standard: every vulnerable pixel in the centre (share 1); robust: every one in the border (share 0)."""
    std = p1_maps(12, [3] * 12, where="centre", seed=21)
    rob = p1_maps(12, [3] * 12, where="border", seed=22)
    r = by_comparison(rc.p1_rows(std, rob, k_percent=10, border=0.25, n_boot=N_BOOT, rng=rng())[0])
    d = r["centre share: standard minus robust"]
    assert (d["standard_value"], d["robust_value"], d["effect"]) == (1.0, 0.0, 1.0)


def test_centre_base_is_the_centre_share_of_the_searched_pixels():
    """Only the centre's 16 pixels and 16 border pixels are searched: uniformly placed vulnerable pixels would
    be in the centre half the time (16 of 32), not 16 of 64."""
    std = p1_maps(12, [3] * 12, where="centre", seed=23)
    centre = rc.centre_mask(H, W, 0.25)
    border_pix = np.flatnonzero(~centre.ravel())[:16]
    searched = centre.copy()
    searched.ravel()[border_pix] = True
    std["searched"] = np.broadcast_to(searched, std["searched"].shape).copy()
    r = by_comparison(rc.p1_rows(std, std, k_percent=10, border=0.25, n_boot=N_BOOT, rng=rng())[0])
    assert r["centre share of the standard model's vulnerable pixels"][
        "control_value"
    ] == pytest.approx(0.5)


def test_only_pixels_both_models_searched_count():
    """The robust model searched only the centre (16 of 64 pixels); the standard model's vulnerable pixels in
    the border lie outside what both searched, so its vulnerable share is 0 of 16, not 3 of 64."""
    std = p1_maps(12, [3] * 12, where="border", seed=24)
    rob = p1_maps(12, [0] * 12, seed=25)
    rob["searched"][:] = rc.centre_mask(H, W, 0.25)
    r = by_comparison(rc.p1_rows(std, rob, k_percent=10, border=0.25, n_boot=N_BOOT, rng=rng())[0])
    pix = r["vulnerable pixels per image"]
    assert pix["standard_value"] == 0.0 and "of 16 searched" in pix["evidence"]
    assert r["breakable by one pixel"]["standard_value"] == 0.0


def test_vulnerable_set_null_leaves_the_image_itself_out():
    """Image i is vulnerable at pixel i only, in both models: own IoU 1, every other image's set disjoint, so
    the null is exactly 0 (with the image itself it would be 1/12)."""
    n = 12
    vul = np.zeros((n, H, W), bool)
    for i in range(n):
        vul[i].ravel()[i] = True
    maps = {
        "ids": np.array([str(i) for i in range(n)]),
        "vulnerable": vul,
        "drop": np.where(vul, 1.0, 0.1 + 0.01 * np.arange(H * W).reshape(H, W)).astype(np.float32),
        "searched": np.ones((n, H, W), bool),
    }
    r = by_comparison(
        rc.p1_rows(maps, maps, k_percent=10, border=0.25, n_boot=N_BOOT, rng=rng())[0]
    )
    sets = r["vulnerable pixel sets: overlap between the models"]
    assert (sets["observed"], sets["control_value"], sets["effect"], sets["n_images"]) == (
        1.0,
        0.0,
        1.0,
        n,
    )


def test_centre_mask_is_the_inner_square():
    m = rc.centre_mask(32, 32, 0.125)
    assert m.sum() == 24 * 24 and m[4, 4] and not m[3, 10] and not m[28, 10]


# ---- masked PGD ----------------------------------------------------------------------------------


def masked_rows(model, top, bottom, k=5.0):
    return pd.DataFrame(
        [
            {
                "dataset": "cifar10",
                "model": model,
                "norm": "linf",
                "mask": m,
                "k_percent": k,
                "image_id": str(i),
                "correct": int(v),
                "loss": 0.0,
            }
            for m, vals in (("top", top), ("bottom", bottom))
            for i, v in enumerate(vals)
        ]
    )


def test_masked_pgd_ordering_per_model_and_its_difference():
    n = 20
    images = pd.concat(
        [
            masked_rows("std", [0] * n, [1] * n),
            masked_rows("rob", [0] * 10 + [1] * 10, [0] * 10 + [1] * 10),
            masked_rows("std", [0] * n, [0] * n, k=100.0),
            masked_rows("rob", [0] * n, [0] * n, k=100.0),
            masked_rows("std", [0] * n, [1] * n, k=50.0),
        ]
    )
    r = by_comparison(rc.masked_pgd_rows(images, "std", "rob", max_k=25, n_boot=N_BOOT, rng=rng()))
    assert set(r) == {
        "linf ordering at k 5 %: standard model",
        "linf ordering at k 5 %: robust model",
        "linf ordering at k 5 %: standard minus robust",
    }  # k 50 > max_k and k 100 are left out
    s, b, d = (
        r[f"linf ordering at k 5 %: {x}"]
        for x in ("standard model", "robust model", "standard minus robust")
    )
    # per model: P3's ordering restated, descriptive (P3's claim is decided over k in the claims table)
    assert (
        s["effect"] == 1.0
        and s["verdict"] == "descriptive"
        and s["n_images"] == 20
        and s["ci_low"] > 0
    )
    assert (
        b["effect"] == 0.0
        and b["verdict"] == "descriptive"
        and "every pixel (k 100 %) 0.00" in b["evidence"]
    )
    # standard: (1 - 0) / (1 - 0) = 1; robust: (0.5 - 0.5) / (0.5 - 0) = 0
    assert d["effect"] == 1.0 and d["verdict"] == "descriptive" and d["ci_low"] > 0
    assert (d["standard_value"], d["robust_value"]) == (1.0, 0.0)
    swapped = by_comparison(
        rc.masked_pgd_rows(images, "rob", "std", max_k=25, n_boot=N_BOOT, rng=rng())
    )
    assert swapped["linf ordering at k 5 %: standard minus robust"]["effect"] == -1.0


def test_masked_pgd_difference_is_in_units_of_each_models_attack_strength():
    """Standard: top 0, bottom 1, every pixel 0 (ordering 1 of a gap of 1). Robust: top 0.5, bottom 1, every
    pixel 0.5: PGD leaves half the images correct even unmasked, and the top mask is as strong as attacking
    every pixel, so its normalised ordering is 1 too. Raw effects (1 and 0.5) would differ by 0.5."""
    n = 20
    half = [0] * 10 + [1] * 10
    images = pd.concat(
        [
            masked_rows("std", [0] * n, [1] * n),
            masked_rows("rob", half, [1] * n),
            masked_rows("std", [0] * n, [0] * n, k=100.0),
            masked_rows("rob", half, half, k=100.0),
        ]
    )
    r = by_comparison(rc.masked_pgd_rows(images, "std", "rob", max_k=25, n_boot=N_BOOT, rng=rng()))
    assert r["linf ordering at k 5 %: robust model"]["effect"] == 0.5
    d = r["linf ordering at k 5 %: standard minus robust"]
    assert (d["standard_value"], d["robust_value"], d["effect"]) == (1.0, 1.0, 0.0)
    assert "standard 0.00, robust 0.50" in d["evidence"]
    assert rc.normalised_ordering(np.ones(4), np.ones(4), np.ones(4)) != rc.normalised_ordering(
        np.ones(4), np.ones(4), np.ones(4)
    )  # no gap between the bottom mask and the full attack: NaN
    # without the full-image attack in the run, the difference is not computed
    no_full = by_comparison(
        rc.masked_pgd_rows(
            images[images.k_percent < 100], "std", "rob", max_k=25, n_boot=N_BOOT, rng=rng()
        )
    )
    assert np.isnan(no_full["linf ordering at k 5 %: standard minus robust"]["effect"])


def test_masked_pgd_needs_both_models():
    with pytest.raises(ValueError, match="masked_pgd.models"):
        rc.masked_pgd_rows(
            masked_rows("std", [0] * 3, [1] * 3), "std", "rob", max_k=25, n_boot=N_BOOT, rng=rng()
        )


# ---- synthesis files and the whole pair --------------------------------------------------------------


def test_synthesis_rows_pair_images_by_id():
    g = rng(7).random((20, H, W))
    za = synth([str(i) for i in range(20)], {"gradcam_pp": g}, seed=10)
    # the robust file holds images 5..24: 15 shared, its Grad-CAM++ equal to the standard's on them
    gb_cam = np.concatenate([g[5:], rng(8).random((5, H, W))])
    zb = synth([str(i) for i in range(5, 25)], {"gradcam_pp": gb_cam}, seed=20)
    r = by_comparison(
        rc.synthesis_rows(
            za,
            zb,
            maps=rc.SYNTHESIS_MAPS,
            section="synthesis",
            k_percent=10,
            n_boot=N_BOOT,
            rng=rng(),
            # the untrained copy's Grad-CAM++ of the standard file's 20 images: unrelated maps
            reference=[{"gradcam_pp": rng(9).random((20, H, W))}],
        )
    )
    cam = r["Grad-CAM++ maps: agreement between the models"]
    assert (
        cam["n_images"] == 15
        and cam["verdict"] == "held"
        and "15 images in both" in cam["evidence"]
    )
    # no untrained SSIM-ball maps (an attack per image): descriptive; the one-pixel drop map is P1's row
    assert r["P2 SSIM-ball δ maps: agreement between the models"]["verdict"] == "descriptive"
    assert set(r) == {
        "Grad-CAM++ maps: agreement between the models",
        "P2 SSIM-ball δ maps: agreement between the models",
    }


def test_compare_pair_writes_every_section(tmp_path):
    n = 12
    std, rob = p1_maps(n, [4] * n, seed=1), p1_maps(n, [2] * n, seed=2)
    ids = [str(i) for i in range(n)]
    za, zb = synth(ids, {}, seed=1), synth(ids, {}, seed=30)
    grads = (
        {"dataset_map": rng(1).random((H, W)), "n_images": 64, "split": "train"},
        {"dataset_map": rng(2).random((H, W)), "n_images": 64, "split": "train"},
    )
    masked = pd.concat([masked_rows("s", [0] * n, [1] * n), masked_rows("r", [0] * n, [0] * n)])
    table, maps = rc.compare_pair(
        "s",
        "r",
        "cifar10",
        p1=(std, rob),
        masked=masked,
        gradients=grads,
        synthesis=(za, zb),
        reference=[
            {
                "input_gradient": za["input_gradient"].copy(),
                "gradcam_pp": rng(3).random((n, H, W)),
            }
        ],
        k_percent=10,
        border=0.25,
        max_k=25,
        n_boot=200,
        seed=0,
    )
    assert list(table.columns) == rc.TABLE_COLUMNS
    # the one-pixel drop maps are compared once (P1), not again in the synthesis section
    assert table.comparison.str.contains("drop maps").sum() == 1
    # an untrained copy whose gradient maps equal the standard's: the robust maps cannot agree beyond it
    grad = table[
        table.comparison == "per-image input-gradient maps: agreement between the models"
    ].iloc[0]
    assert grad["verdict"] == "not held" and grad["control"] == rc.REFERENCE
    mean = table[table.comparison == "mean of the per-image gradient maps: Spearman"].iloc[0]
    assert mean["control_value"] == pytest.approx(1.0) and np.isnan(mean["effect"])
    assert set(table.section) == set(rc.SECTIONS.values()) and (table.standard == "s").all()
    assert table.verdict.isin(
        ["held", "not held", "inconclusive", "too few images", "descriptive"]
    ).all()
    assert set(maps) == {"p1_standard", "p1_robust", "gradient_standard", "gradient_robust"}
    # the mean per-image gradient map of the synthesis images
    np.testing.assert_allclose(maps["gradient_standard"], za["input_gradient"].mean(0), rtol=1e-6)
    only_p1, _ = rc.compare_pair(
        "s", "r", "cifar10", p1=(std, rob), k_percent=10, border=0.25, max_k=25, n_boot=200, seed=0
    )
    assert set(only_p1.section) == {rc.SECTIONS["onepixel"]}


def test_the_null_is_the_mean_over_the_other_images_only():
    """Three images whose maps are a ramp, its reverse and the ramp again: image 0's own Spearman is 1, and
    against the other images' maps -1 (image 1) and +1 (image 2), so its null is 0 (the diagonal left out)."""
    ramp = np.arange(8.0)
    a = np.stack([ramp, ramp[::-1], ramp])
    per = rc.per_image_agreement(a, a.copy(), 25)
    np.testing.assert_allclose(per.spearman, [1, 1, 1])
    np.testing.assert_allclose(per.spearman_null, [0, -1, 0])
    # top-25 % (2 of 8 pixels): the ramp's top is {6, 7}, the reverse's {0, 1}: IoU 0 with it, 1 with the ramp
    np.testing.assert_allclose(per.iou_null, [0.5, 0, 0.5])


def test_p1_with_no_image_both_models_break():
    """The robust model breaks on none of the images: the overlap and the robust centre share have no image
    (numbers NaN, too few images); the breakable difference is still decided."""
    std, rob = p1_maps(12, [3] * 12, seed=8), p1_maps(12, [0] * 12, seed=9)
    r = by_comparison(rc.p1_rows(std, rob, k_percent=10, border=0.25, n_boot=N_BOOT, rng=rng())[0])
    sets = r["vulnerable pixel sets: overlap between the models"]
    assert sets["n_images"] == 0 and sets["verdict"] == "descriptive" and np.isnan(sets["effect"])
    assert r["centre share of the robust model's vulnerable pixels"]["n_images"] == 0
    assert (
        r["breakable by one pixel"]["effect"] == 1.0
        and r["breakable by one pixel"]["verdict"] == "held"
    )


# ---- the fixes of the R4 review: the untrained reference, the claim tally, the figure, the config warning ----


def synthesis_job(tmp_path, x, y, seeds):
    """``robust_compare``'s arguments but seeds and copies for a pair "s", "r" compared on synthesis files only,
    written to ``tmp_path`` (planted maps from ``seeds``, images ``x`` with labels ``y``), and the two files."""
    from pixelrobust.io import save_npz

    ids = [str(i) for i in range(len(x))]
    zs = {}
    for name, seed in zip(("s", "r"), seeds):
        zs[name] = synth(ids, {}, seed=seed)
        save_npz(tmp_path / f"{name}.npz", **zs[name], image=x, label=y)
    kw = dict(
        inputs={"synthesis_s": tmp_path / "s.npz", "synthesis_r": tmp_path / "r.npz"},
        out={"csv": tmp_path / "t.csv", "md": tmp_path / "t.md", "maps": [tmp_path / "m.npz"]},
        pairs=[{"standard": "s", "robust": "r"}],
        models=["s", "r"],
        datasets={"s": "cifar10", "r": "cifar10"},
        stages=["synthesis"],
        topk_percent=10,
        border=0.25,
        max_k=25,
        n_boot=200,
    )
    return kw, zs


def test_untrained_copy_is_seeded_and_its_maps_are_computed_per_image(tmp_path):
    """The untrained copy of the EhanW ResNet-20's architecture (an entry-point model: no weights read): the same
    seed gives the same maps, another seed other maps, and the caller's random state is left alone;
    robust_compare then decides the gradient and Grad-CAM++ rows against it."""
    import torch

    from pixelrobust import models

    spec = models.resolve_spec("resnet20_ehanw_standard", {})
    g = rng(30)
    n = 12
    x, y = (
        g.random((n, 3, H, W)).astype(np.float32),
        g.integers(0, 10, n),
    )  # 8×8: the planted maps' size
    state = torch.random.get_rng_state()
    m1, m2, m3 = (rc.untrained_copy(spec, s) for s in (7, 7, 8))
    assert torch.equal(torch.random.get_rng_state(), state)
    r1, r2, r3 = (rc.reference_maps(m, x, y) for m in (m1, m2, m3))
    assert r1["input_gradient"].shape == r1["gradcam_pp"].shape == (n, H, W)
    np.testing.assert_array_equal(r1["input_gradient"], r2["input_gradient"])
    assert not np.allclose(r1["input_gradient"], r3["input_gradient"])
    kw, _ = synthesis_job(tmp_path, x, y, (40, 41))

    def compare(**specs):
        return rc.robust_compare(**kw, seed=0, untrained_copies=1, **specs)

    table = compare(specs={"s": spec})
    decided = table[table.control == rc.REFERENCE]
    assert set(decided.comparison) == {
        "per-image input-gradient maps: agreement between the models",
        "Grad-CAM++ maps: agreement between the models",
    }
    without = compare(specs=None)
    assert (without.verdict == "descriptive").all()


def test_the_pairs_robust_models_are_left_out_of_the_claim_tally(tmp_path):
    from pixelrobust import summary

    rows = pd.DataFrame(
        [
            {
                "dataset": "cifar10",
                "model": m,
                "map_a": "P1 one-pixel drop",
                "map_b": "P3 input gradient",
                "statistic": "x",
                "n_images": 20,
                "verdict": "held",
            }
            for m in ("std", "rob")
        ]
    )
    assert summary.robust_models(
        {"robust_compare": {"pairs": [{"standard": "std", "robust": "rob"}]}}
    ) == ["rob"]
    assert summary.robust_models({}) == []
    import unittest.mock as mock

    with mock.patch.object(
        summary,
        "synthesis_findings",
        lambda t: [
            {c: (r["model"] if c == "model" else "") for c in summary.CLAIM_COLUMNS}
            for _, r in t.iterrows()
        ],
    ):
        path = tmp_path / "synthesis.csv"
        rows.to_csv(path, index=False)
        kw = dict(ssim_model=None, ssim_dataset=None, n_boot=100, seed=0)
        assert list(summary.claims_table({"synthesis": path}, **kw).model) == ["std", "rob"]
        assert list(
            summary.claims_table({"synthesis": path}, exclude_models=["rob"], **kw).model
        ) == ["std"]


# ---- several untrained copies: the reference must not hang on one seed ------------------------------------

# three 4-pixel maps of the standard model whose Spearman correlations follow by hand: a0 against a1 is -1 (one
# order reversed), a0 against a2 is 0.8 (two neighbours swapped: sum d² = 2, 1 - 6·2/(4·15)), a1 against a2 is -0.8
# (sum d² = 18); at k 25 % the top-k set is the largest pixel: 3, 0 and 2.
A3 = np.array([[1.0, 2, 3, 4], [4, 3, 2, 1], [1, 2, 4, 3]])


def test_the_reference_is_the_mean_of_the_copies_agreements():
    """Copy 1 is the standard model itself (own Spearman 1, IoU 1; nulls -0.1, -0.9, 0 and 0), copy 2 holds
    each image's neighbour's map (own -1, -0.8, 0.8 and IoU 0; nulls 0.9, 0, 0.1 and IoU 0.5): per image the
    reference is the mean of the two copies' values, and the row's control the mean of their excesses."""
    t1 = rc.per_image_agreement(A3, A3.copy(), 25)
    t2 = rc.per_image_agreement(A3, np.roll(A3, -1, axis=0), 25)
    np.testing.assert_allclose(t1.spearman_null, [-0.1, -0.9, 0.0], atol=1e-12)
    np.testing.assert_allclose(t2.spearman, [-1.0, -0.8, 0.8], atol=1e-12)
    ref = rc.mean_reference([t1, t2])
    np.testing.assert_allclose(ref.spearman, [0.0, 0.1, 0.9], atol=1e-12)
    np.testing.assert_allclose(ref.spearman_null, [0.4, -0.45, 0.05], atol=1e-12)
    np.testing.assert_allclose(ref.iou_topk, [0.5] * 3)
    np.testing.assert_allclose(ref.iou_null, [0.25] * 3)
    # a copy counts for an image only where its agreement and its null are both defined (a flat map)
    t3 = t2.copy()
    t3.loc[1, ["spearman", "iou_topk"]] = np.nan
    t3.loc[2, "spearman_null"] = np.nan
    ref3 = rc.mean_reference([t1, t3])
    assert ref3.spearman[1] == 1.0 and ref3.spearman_null[1] == pytest.approx(-0.9)
    assert ref3.spearman[2] == 1.0 and ref3.spearman_null[2] == pytest.approx(0.0)
    assert ref3.iou_topk[2] == 0.5  # the other measure of image 2 keeps both copies
    # the robust maps equal the standard's: Spearman excess 1 - null; the reference's excess -0.4, 0.55, 0.85
    row = rc.agreement_row(
        "s",
        "maps",
        rc.per_image_agreement(A3, A3.copy(), 25),
        25,
        N_BOOT,
        rng(),
        "3 images",
        [t1, t2],
    )
    assert row["verdict"] == "too few images" and row["statistic"].startswith(
        ("Spearman", "top-25")
    )
    exc = "Spearman" if row["statistic"].startswith("Spearman") else "IoU"
    want = np.mean([-0.4, 0.55, 0.85]) if exc == "Spearman" else 0.25
    assert row["control_value"] == pytest.approx(want)
    assert "mean over 2 untrained copies" in row["evidence"]
    one = rc.agreement_row(
        "s", "maps", rc.per_image_agreement(A3, A3.copy(), 25), 25, N_BOOT, rng(), "3 images", [t1]
    )
    assert "one untrained copy" in one["evidence"]
    with pytest.raises(TypeError, match="one entry per untrained copy"):
        rc.agreement_row("s", "m", t1, 25, N_BOOT, rng(), "", t1)  # one copy's table alone: refused
    with pytest.raises(ValueError, match="same images"):
        rc.mean_reference([t1, t2.iloc[:2]])


def test_every_copy_counts_and_the_evidence_gives_their_spread():
    """20 images; copy 1 shares the standard model's maps exactly, copies 2 to 10 are unrelated: with copy 1
    alone the robust maps (standard plus noise) cannot agree beyond it (not held); averaged over the ten
    copies the reference's excess is a tenth of copy 1's and the robust maps agree beyond it (held, even with
    the copies resampled: a replicate rarely draws copy 1 more than three times of ten). The evidence lists
    each copy's excess and that 9 of 10 single copies give the averaged verdict."""
    g = rng(40)
    a = g.random((20, 64))
    b = a + 0.3 * g.random((20, 64))
    per = rc.per_image_agreement(a, b, 10)
    untrained = (a.copy(), *(g.random((20, 64)) for _ in range(9)))
    tabs = [rc.per_image_agreement(a, u, 10) for u in untrained]
    alone = rc.agreement_row("s", "maps", per, 10, N_BOOT, rng(), "20 images", tabs[:1])
    avg = rc.agreement_row("s", "maps", per, 10, N_BOOT, rng(), "20 images", tabs)
    assert alone["verdict"] == "not held" and avg["verdict"] == "held"
    ex = [(t.spearman - t.spearman_null).mean() for t in tabs]
    assert ex[0] > 0.9 and max(abs(e) for e in ex[1:]) < 0.1
    if avg["statistic"].startswith("Spearman"):
        assert avg["control_value"] == pytest.approx(np.mean(ex))
    assert "mean over 10 untrained copies" in avg["evidence"]
    assert "9 of 10 single copies give the averaged verdict" in avg["evidence"]
    # with no flat map each one-copy Spearman effect is the robust excess minus that copy's mean excess, so the
    # copies' spread of the averaged effect is the s.d. of their excesses over √10
    assert f"{np.std(ex, ddof=1) / np.sqrt(10):.3f} (Spearman)" in avg["evidence"]
    assert "not held 1" in avg["evidence"] and "held 9" in avg["evidence"]


def test_untrained_seeds_depend_on_the_job_seed_the_standard_model_and_the_copy_only():
    from pixelrobust.runtime import derive_seed

    s = rc.untrained_seeds(10, "s", 3)
    assert s == [derive_seed(10, "untrained", "s", c) for c in range(3)] and len(set(s)) == 3
    # the first K copies are the same whatever K; another model or job seed gives other copies
    assert rc.untrained_seeds(10, "s", 5)[:3] == s
    assert not set(s) & set(rc.untrained_seeds(10, "t", 3) + rc.untrained_seeds(11, "s", 3))
    for bad in (0, -2, 2.5, True, None):
        with pytest.raises(ValueError, match="robust_compare.untrained_copies"):
            rc.untrained_seeds(10, "s", bad)


def test_a_pairs_copies_and_rows_do_not_depend_on_the_other_pairs(tmp_path, caplog):
    """Adding an unrelated pair (configured first) leaves pair s-r's untrained copies (seeds in the log) and its
    rows unchanged: the seeds come from the job seed, the standard model's name and the copy, not the pair's
    position or the number of pairs."""
    import logging

    from pixelrobust import models
    from pixelrobust.io import save_npz

    spec = models.resolve_spec("resnet20_ehanw_standard", {})
    g = rng(33)
    n = 10
    x, y = g.random((n, 3, H, W)).astype(np.float32), g.integers(0, 10, n)
    kw, _ = synthesis_job(tmp_path, x, y, (60, 61))
    kw.update(specs={"s": spec}, seed=3, untrained_copies=2)
    ids = [str(i) for i in range(n)]
    for name, seed in (("s2", 62), ("r2", 63)):
        save_npz(tmp_path / f"{name}.npz", **synth(ids, {}, seed=seed), image=x, label=y)
        kw["inputs"][f"synthesis_{name}"] = tmp_path / f"{name}.npz"

    def run(pairs):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pixelrobust"):
            table = rc.robust_compare(
                **{
                    **kw,
                    "pairs": pairs,
                    "models": [m for p in pairs for m in (p["standard"], p["robust"])],
                    "datasets": dict.fromkeys(("s", "r", "s2", "r2"), "cifar10"),
                    "specs": {"s": spec, "s2": spec},
                    "out": {
                        **kw["out"],
                        "maps": [tmp_path / f"m{i}.npz" for i in range(len(pairs))],
                    },
                }
            )
        seeds = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith("s: reference maps")
        ]
        return table[table.standard == "s"].reset_index(drop=True), seeds

    one, seeds1 = run([{"standard": "s", "robust": "r"}])
    two, seeds2 = run([{"standard": "s2", "robust": "r2"}, {"standard": "s", "robust": "r"}])
    assert seeds1 == seeds2 and str(rc.untrained_seeds(3, "s", 2)) in seeds1[0]
    pd.testing.assert_frame_equal(one, two)


def test_robust_compare_builds_and_averages_every_untrained_copy(tmp_path):
    """robust_compare with untrained_copies 3 builds three copies of the standard model (seeds
    ``untrained_seeds(5, "s", 3)`` at job seed 5), each giving other maps, and decides the input-gradient row against the per-image
    mean of the three copies' agreements; the mean-map row's reference is the mean of the three Spearmans."""
    from pixelrobust import models

    spec = models.resolve_spec("resnet20_ehanw_standard", {})
    g = rng(31)
    n = 12
    x, y = g.random((n, 3, H, W)).astype(np.float32), g.integers(0, 10, n)
    kw, zs = synthesis_job(tmp_path, x, y, (50, 51))
    kw.update(specs={"s": spec}, seed=5)
    table = rc.robust_compare(**kw, untrained_copies=3).set_index("comparison")
    a = zs["s"]["input_gradient"].reshape(n, -1).astype(float)
    us = [
        rc.reference_maps(rc.untrained_copy(spec, s), x, y)["input_gradient"].reshape(n, -1)
        for s in rc.untrained_seeds(5, "s", 3)
    ]
    assert not np.allclose(us[0], us[1]) and not np.allclose(us[1], us[2])
    tabs = [rc.per_image_agreement(a, u.astype(float), 10) for u in us]
    grad = table.loc["per-image input-gradient maps: agreement between the models"]
    assert "mean over 3 untrained copies" in grad.evidence
    measure = "spearman" if grad.statistic.startswith("Spearman") else "iou_topk"
    null = "spearman_null" if measure == "spearman" else "iou_null"
    # per image, the mean over the copies of their excess over the null
    excess = np.mean([t[measure] - t[null] for t in tabs], axis=0)
    assert grad.control_value == pytest.approx(excess.mean())
    mean_row = table.loc["mean of the per-image gradient maps: Spearman"]
    want = np.mean([rc._spearman(a.mean(0), u.mean(0)) for u in us])
    assert (
        mean_row.control_value == pytest.approx(want) and "3 untrained copies" in mean_row.evidence
    )
    with pytest.raises(ValueError, match="robust_compare.untrained_copies"):
        rc.robust_compare(**kw, untrained_copies=0)


def test_the_interval_resamples_the_copies_as_well_as_the_images():
    """Four untrained copies that disagree strongly: two share the robust pair's excess minus 0.10, two minus
    −0.06 (per image, both measures), with little image noise. The per-image mean reference gives an effect of
    +0.02 that an images-only bootstrap pins down (interval well above 0); drawing the copies too, a replicate
    draws all four from one side with chance 2/16 > 2.5 %, whose effect is +0.10 or −0.06, so the two-level
    interval reaches both and the row is inconclusive, not held."""
    g = rng(40)
    n = 40
    noise = g.normal(0, 0.002, n)
    excess = 0.3 + noise

    def table(ex):
        return pd.DataFrame(
            {"spearman": ex + 0.1, "iou_topk": ex + 0.1, "spearman_null": 0.1, "iou_null": 0.1}
        )

    copies = [
        table(excess - 0.10),
        table(excess - 0.10),
        table(excess + 0.06),
        table(excess + 0.06),
    ]
    own = excess
    c = np.stack([excess - 0.10, excess - 0.10, excess + 0.06, excess + 0.06])
    est, lo, hi = two_level_boot(own, c, 2000, rng(1))
    _, ilo, ihi = boot_mean(own - c.mean(0), 2000, rng(1))  # images only
    assert est == pytest.approx(0.02) and ilo > 0.015 and ihi < 0.025
    assert lo < -0.05 and hi > 0.09
    row = rc.agreement_row("s", "maps", table(excess), 10, 2000, rng(), f"{n} images", copies)
    assert row["effect"] == pytest.approx(0.02) and row["ci_low"] < -0.05 and row["ci_high"] > 0.09
    assert row["verdict"] == "inconclusive"
    # one copy: the copies drawn are always that copy, the images-only bootstrap of the differences
    one = own - 0.10 + g.normal(0, 0.01, n)
    e1, lo1, hi1 = two_level_boot(own, one[None], 2000, rng(2))
    _, blo, bhi = boot_mean(own - one, 2000, rng(2))
    assert e1 == pytest.approx(np.mean(own - one)) and lo1 < e1 < hi1
    assert hi1 - lo1 == pytest.approx(bhi - blo, rel=0.2)
    # a copy undefined on an image (NaN) drops out of that image's reference only
    c2 = c.copy()
    c2[2:, 0] = np.nan
    assert two_level_boot(own, c2, 10, rng())[0] == pytest.approx(
        np.mean(np.r_[own[0] - c2[:2, 0].mean(), own[1:] - c[:, 1:].mean(0)])
    )
