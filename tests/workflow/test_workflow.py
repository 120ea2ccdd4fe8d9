"""The workflow through Snakemake itself: the tiny config end to end, dry runs, lint, format."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import DEFAULT, REPO, TINY, snakemake
from pixelrobust import data, evaluate, models

pytestmark = pytest.mark.workflow


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run."""
    counts, inside = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            inside = True
            continue
        if inside:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
                counts[parts[0]] = int(parts[1])
            elif counts:
                break
    return counts


def test_tiny_config_end_to_end(tiny_run, mirror):
    table = pd.read_csv(tiny_run / "results" / "tables" / "clean_accuracy.csv")
    assert list(table.columns) == ["model", "dataset", "n_images", "top1", "top5"]
    assert table.model.tolist() == [
        "resnet20_cifar10",
        "resnet56_cifar10",
        "resnet56_cifar100",
        "mobilenet_v2_imagenet",
        "resnet20_ehanw_standard",
        "resnet20_ehanw_pgd",
    ]  # with robust_compare's pair
    assert table.n_images.tolist() == [64] * 6
    assert ((table.top1 >= 0) & (table.top1 <= table.top5) & (table.top5 <= 1)).all()
    assert (
        (tiny_run / "results" / "tables" / "clean_accuracy.md")
        .read_text()
        .startswith("| model | dataset |")
    )
    # two chunks of 32 per model, each with its log and benchmark
    for model in table.model:
        for chunk in (0, 1):
            assert (
                tiny_run / "results" / "clean_accuracy" / model / f"chunk-{chunk}.csv"
            ).is_file()
            assert (
                tiny_run / "results" / "logs" / "clean_accuracy_chunk" / model / f"{chunk}.log"
            ).is_file()
            assert (
                tiny_run
                / "results"
                / "benchmarks"
                / "rules"
                / "clean_accuracy_chunk"
                / model
                / f"{chunk}.tsv"
            ).is_file()


def test_tiny_p1_outputs(tiny_run, redraw):
    tables = tiny_run / "results" / "tables"
    success = pd.read_csv(tables / "onepixel_success.csv")
    assert {"dataset", "model", "method", "scope", "n_images", "success_rate"} <= set(
        success.columns
    )
    assert set(success.scope) == {"whole-image", "region", "random-subset"} and set(
        success.method
    ) == {"exhaustive", "de"}
    assert success.success_rate.between(0, 1).all()
    regions = pd.read_csv(tables / "onepixel_regions.csv")
    assert list(regions.columns[:8]) == [
        "dataset",
        "model",
        "image_id",
        "region_id",
        "n_pixels",
        "n_vulnerable",
        "semantic_occlusion",
        "semantic_cam",
    ]
    assert (regions.n_vulnerable <= regions.n_pixels).all() and regions.semantic_cam.between(
        0, 1
    ).all()
    images = pd.read_csv(tables / "onepixel_images.csv")
    ok = images[images.correct]
    # the exhaustive whole-image rate is the share of searched images with a vulnerable pixel
    for model, d in ok.groupby("model"):
        row = success[
            (success.model == model)
            & (success.method == "exhaustive")
            & (success.scope == "whole-image")
        ].iloc[0]
        assert row.n_images == len(d) and row.success_rate == pytest.approx(
            (d.n_vulnerable > 0).mean(), abs=1e-4
        )
    # regions add up to the image's vulnerable pixels
    per_image = regions.groupby(["model", "image_id"]).n_vulnerable.sum()
    for _, r in ok.iterrows():
        assert per_image[(r.model, r.image_id)] == r.n_vulnerable
    summary = pd.read_csv(tables / "onepixel_summary.csv")
    assert (summary.de_outside_region == 0).all() and "published_anchor" in summary
    # the claims at the tiny config's 16 SLIC segments (primary) and its sensitivity count 8, from the same maps
    claims = pd.read_csv(tables / "onepixel_claims.csv")
    assert set(claims.n_segments) == {8, 16} and set(claims[claims.primary].n_segments) == {16}
    assert set(claims.verdict) == {"too few images"}  # 1-2 images per model
    per_image = pd.read_csv(tiny_run / "results" / "p1" / "onepixel_claim_images.csv")
    prim = per_image[per_image.primary].set_index(["model", "image_id"])
    for _, r in ok.iterrows():
        assert prim.loc[(r.model, r.image_id), "n_vulnerable"] == r.n_vulnerable
    # the figures show what these tables hold: each is drawn again from the run's own inputs and checked panel by
    # panel (values and positions; the PNG: a picture of that Figure, not blank) -- conftest.redraw
    assert claims.effect.notna().any()  # the right-hand panels have effects to draw
    redraw(tiny_run, "p1_region_semantics")
    for model in (
        summary.model
    ):  # the searched images (at most 12), their SLIC boundaries and vulnerable pixels
        shown = redraw(tiny_run, f"p1_vulnerability_grid_{model}")["panels"]
        n = min(12, int(ok.model.eq(model).sum()))
        assert shown == (
            min(6, n) * -(-n // 6) if n else 1
        )  # rows of 6; no image: a labelled note only


def test_tiny_p3_outputs(tiny_run, redraw):
    t = tiny_run / "results" / "tables"
    for name in ("masked_pgd", "masked_pgd_l2"):
        table = pd.read_csv(t / f"{name}.csv")
        assert list(table.columns) == ["dataset", "model", "mask", "k_percent", "n_images", "top1"]
        # tiny: 4 models (two of them robust_compare's pair) x 6 masks x k in (5, 25, 100); 16 CIFAR-10, 2 ImageNet images
        assert len(table) == 4 * 6 * 3 and set(table.k_percent) == {5, 25, 100}
        assert dict(zip(table.model, table.n_images)) == {
            "resnet20_cifar10": 16,
            "mobilenet_v2_imagenet": 2,
            "resnet20_ehanw_standard": 16,
            "resnet20_ehanw_pgd": 16,
        }
        assert table.top1.between(0, 1).all()
        if (
            name == "masked_pgd"
        ):  # L-inf PGD on every pixel breaks at least as many images as on 5 % of them
            acc = table.set_index(["model", "mask", "k_percent"]).top1.unstack()
            assert (acc[100.0] <= acc[5.0]).all(), (
                acc
            )  # (k = 100 equals unmasked PGD: tests/unit/test_masked_pgd.py)
    per_image = pd.read_csv(t / "masked_pgd_images.csv")
    assert list(per_image.columns) == [
        "dataset",
        "model",
        "norm",
        "mask",
        "k_percent",
        "image_id",
        "correct",
        "loss",
    ]
    top1 = (
        per_image[per_image.norm == "linf"].groupby(["model", "mask", "k_percent"]).correct.mean()
    )
    linf = pd.read_csv(t / "masked_pgd.csv").set_index(["model", "mask", "k_percent"]).top1
    pd.testing.assert_series_equal(top1.sort_index(), linf.sort_index(), check_names=False)
    sweep = pd.read_csv(t / "prm_lambda_sweep.csv")
    assert list(sweep.columns) == ["dataset", "model", "prm", "lambda", "top1", "iou", "image_iou"]
    assert sweep.prm.unique().tolist() == [
        "trained",
        "untrained",
        "fill_only",
    ]  # tiny: a residual PRM and its controls
    for _, g in sweep.groupby("prm"):
        assert g["lambda"].tolist() == [0, 0.5, 1] and g.iou.iloc[-1] == 1.0 == g.image_iou.iloc[-1]
    detail = pd.read_csv(t / "prm_lambda_sweep_detail.csv")
    assert (
        detail.chance_iou.iloc[0] == pytest.approx(1 / 7, abs=1e-4)
        and (detail.n_images == 32).all()
    )
    assert len(pd.read_csv(t / "prm_lambda_sweep_images.csv")) == 3 * 3 * 32  # prm x lambda x image
    history = pd.read_csv(
        tiny_run / "results" / "p3" / "prm" / "resnet20_cifar10" / "s2-r0" / "history.csv"
    )
    assert history.step.tolist() == [1, 2, 3, 4]
    assert not (
        tiny_run / "results" / "p3" / "prm" / "resnet20_cifar10" / "s2-r0" / "resume.pt"
    ).exists()
    with np.load(tiny_run / "results" / "p3" / "gradients" / "mobilenet_v2_imagenet.npz") as z:
        assert (
            z["dataset_map"].shape == z["architecture_map"].shape == (224, 224)
            and int(z["n_images"]) == 4
        )
    # the figures, drawn again from the run's inputs and checked panel by panel against them (conftest.redraw)
    assert (
        redraw(tiny_run, "p3_gradient_maps")["panels"] == 4 * 2
    )  # per model: the dataset and architecture map
    for norm in ("linf", "l2"):  # one panel of curves per model
        assert (
            redraw(tiny_run, f"p3_masked_pgd_{norm}")["panels"]
            == linf.index.get_level_values("model").nunique()
        )
    assert (
        redraw(tiny_run, "p3_prm_training_resnet20_cifar10")["panels"] == 3
    )  # loss, terms, batch top-1
    n_lambda = sweep[sweep.prm == "trained"][
        "lambda"
    ].nunique()  # the curves above, a map per λ below
    assert redraw(tiny_run, "p3_prm_lambda_resnet20_cifar10")["panels"] == 1 + n_lambda


def test_tiny_defense_table_fills_every_cell(tiny_run, redraw):
    from pixelrobust.defense_eval import ATTACKS, CONTROLS, DEFENSES, TABLE_COLUMNS

    table = pd.read_csv(tiny_run / "results" / "tables" / "defense.csv")
    assert list(table.columns) == TABLE_COLUMNS
    # per dataset: (none + 4 defences) x (clean + 5 attacks) x 2 protocols, plus the controls: transfer_none
    # (gray-box, 5 attacks), prm_shift_only (clean + 5 attacks, in both protocols) and prm_on_classifier (gray-box,
    # 5 attacks); no cell missing
    assert len(table) == 3 * (5 * 6 * 2 + 5 + 6 * 2 + 5) and not table.top1.isna().any()
    assert set(table.dataset) == {"cifar10", "cifar100", "imagenet"}
    assert set(table.defense) == set(DEFENSES) | set(CONTROLS) and set(table.attack) == {
        "clean",
        *ATTACKS,
    }
    assert dict(zip(table.dataset, table.n_images)) == {"cifar10": 2, "cifar100": 2, "imagenet": 1}
    assert table.top1.between(0, 1).all() and (table.seconds >= 0).all()
    # counts pool images x draws: 2 draws of every randomised defence, 1 of the deterministic rows
    det = table.defense.isin(["none", "transfer_none"])
    assert (
        (table.n == table.n_images * table.draws).all()
        and (table[det].draws == 1).all()
        and (table[~det].draws == 2).all()
    )
    assert ((table.ci_low <= table.top1) & (table.top1 <= table.ci_high)).all()
    prm = table[
        (table.defense == "stochastic_prm")
        & (table.protocol == "graybox")
        & (table.attack != "clean")
    ]
    assert (
        prm.reference == "transfer_none"
    ).all()  # the PRM row is compared on the images crafted on its stand-in
    sat = pd.read_csv(tiny_run / "results" / "tables" / "defense_saturation.csv")
    assert set(sat.restart.astype(str)) == {"0", "1", "best"} and set(sat.step) == {1, 2}
    md = (tiny_run / "results" / "tables" / "defense.md").read_text()
    assert md.count("## graybox") == 3 and md.count("## adaptive") == 3
    # the stochastic PRM drew from its pool: both tiny PRMs of each model, trained on their own lattices
    from pixelrobust.prm import load_prm

    for model in ("resnet20_cifar10", "resnet56_cifar100", "mobilenet_v2_imagenet"):
        lattices = [
            load_prm(tiny_run / "results" / "p3" / "prm" / model / v / "prm.pt")[0].lattice
            for v in ("s2-r0", "k2_s4-r0")
        ]
        assert lattices == ["s2", "k2_s4"]
        log = (tiny_run / "results" / "logs" / "defense_eval" / model / "pgd" / "0.log").read_text()
        assert "stochastic PRM pool: 2 PRMs" in log and "k2_s4-r0/prm.pt" in log
    # a heatmap per protocol and model, each cell the table's top-1 (drawn again from defense.csv; conftest.redraw)
    assert (
        redraw(tiny_run, "p3_defense")["panels"] == table.model.nunique() * table.protocol.nunique()
    )


def test_tiny_p2_outputs(tiny_run, redraw):
    from pixelrobust.map_compare import BUDGET, BUDGET_MAPS, COMPARISON_COLUMNS, MAPS
    from pixelrobust.ssim_study import CHECK_COLUMNS, TABLE_COLUMNS

    t = tiny_run / "results" / "tables"
    attack = pd.read_csv(t / "ssim_attack.csv")
    assert list(attack.columns) == TABLE_COLUMNS
    assert attack.attack.tolist() == ["ssim_ball"] * 2 + ["pgd_linf"] * 2 + ["pgd_l2"] * 2
    assert attack[attack.attack == "ssim_ball"].epsilon.tolist() == [0.0003, 0.001]
    assert (
        (attack.n_images == 2).all()
        and attack.success_rate.between(0, 1).all()
        and attack.mean_ssim.between(0, 1).all()
    )
    ssim = attack[attack.attack == "ssim_ball"]
    assert (ssim.mean_l2.diff().dropna() > 0).all()  # a larger ball, a larger perturbation
    comparison = pd.read_csv(t / "ssim_cam_comparison.csv", dtype={"image_id": str})
    # per image: three attacks × the maps, and the SSIM ball's budget map (the model-free control) for its maps
    assert list(comparison.columns) == COMPARISON_COLUMNS and len(comparison) == 2 * (
        3 * len(MAPS) + len(BUDGET_MAPS)
    )
    assert set(comparison.attack) == {"ssim_ball", "pgd_linf", "pgd_l2", BUDGET}
    assert comparison.mass_in_topk.between(0, 1).all()
    attacked = comparison[comparison.attack != BUDGET]
    assert (attacked.grid_ratio > 0).all() and attacked.pearson.between(
        -1, 1
    ).all()  # the grid diagnostic: every P2 table
    assert (
        attacked.success.isin([True, False]).all()
        and comparison[comparison.attack == BUDGET].grid_ratio.isna().all()
    )
    summary = pd.read_csv(t / "ssim_cam_summary.csv", keep_default_na=False)
    assert set(summary.verdict[summary.baseline != ""]) == {"too few images (< 10)"}
    assert summary[summary.metric == "success_rate"].attack.tolist() == [
        "ssim_ball",
        "pgd_linf",
        "pgd_l2",
    ]
    check = pd.read_csv(t / "ssim_solver_check.csv")
    assert list(check.columns) == CHECK_COLUMNS and check.solver.tolist() == ["admm", "clarabel"]
    assert (
        (check.max_violation <= 1e-4).all()
        and (check.gap_to_reference <= 0.01).all()
        and (check.image_size == 32).all()
    )
    # the figures, drawn again from the run's inputs and checked panel by panel against them (conftest.redraw)
    assert (
        redraw(tiny_run, "p2_ssim_sweep")["panels"] == attack.attack.nunique()
    )  # curves against ε per attack
    # tiny: compare.examples 2 images (one per SSIM chunk: chunk_size 1) x 3 attacks, rows of image, three maps,
    # CAM, CAM + top-k
    assert redraw(tiny_run, "p2_cam_grid")["panels"] == 6 * 2 * attacked.attack.nunique()
    # per metric: a box per attack and map at its quartiles (pointing_hit: points at the hit rate); the grid ratio
    from pixelrobust.map_compare import METRICS

    assert redraw(tiny_run, "p2_cam_distributions")["panels"] == len(METRICS) + 2


def test_tiny_synthesis_outputs(tiny_run, redraw):
    from pixelrobust.synthesis import IMAGE_COLUMNS, MAPS, PAIRS, TABLE_COLUMNS

    t = tiny_run / "results" / "tables"
    table = pd.read_csv(t / "synthesis.csv")
    assert list(table.columns) == TABLE_COLUMNS  # the fixed names first
    assert table.columns[:8].tolist() == [
        "dataset",
        "model",
        "map_a",
        "map_b",
        "spearman",
        "iou_topk",
        "ci_low",
        "ci_high",
    ]
    assert set(zip(table.map_a, table.map_b)) == set(PAIRS) and len(table) == 4 * len(
        PAIRS
    )  # 2 models + the pair
    assert table.spearman.between(-1, 1).all() and table.iou_topk.between(0, 1).all()
    # the images are the ones P1 searched (its correctly classified ones), on the pixels it searched
    images = pd.read_csv(t / "onepixel_images.csv")
    searched = images[images.correct].groupby("model").size()
    per_image = pd.read_csv(t / "synthesis_images.csv", dtype={"image_id": str})
    finite = per_image.assign(
        ok=lambda f: (
            np.isfinite(f.spearman - f.spearman_null) & np.isfinite(f.iou_topk - f.iou_null)
        )
    )
    for r in table.itertuples():
        # the images the verdict rests on: those P1 searched with a finite excess over the null
        assert (
            r.n_images
            == finite[
                (finite.model == r.model) & (finite.map_a == r.map_a) & (finite.map_b == r.map_b)
            ].ok.sum()
        )
        assert r.n_images <= searched[r.model]
        if "onepixel" in (r.map_a, r.map_b):
            assert r.n_pixels == (
                32 * 32 if r.dataset == "cifar10" else 8 * 8
            )  # tiny: the ImageNet grid is 8x8
    assert list(per_image.columns) == IMAGE_COLUMNS
    mean = per_image.groupby(["model", "map_a", "map_b"]).iou_topk.mean()
    for r in table.itertuples():
        assert r.iou_topk == pytest.approx(mean[r.model, r.map_a, r.map_b], abs=1e-4)
    with np.load(tiny_run / "results" / "synthesis" / "resnet20_cifar10.npz") as z:
        assert all(z[m].shape == (searched["resnet20_cifar10"], 32, 32) for m in MAPS)
    # the figures, drawn again from the run's inputs and checked panel by panel against them (conftest.redraw)
    models = list(dict.fromkeys(table.model))
    # tiny: synthesis.examples 1 image per model, a row each: the image and its four maps
    assert redraw(tiny_run, "synthesis_maps")["panels"] == (1 + len(MAPS)) * len(models)
    # a matrix per model: Spearman excess below the diagonal, IoU excess above (NaN where a model has no null)
    assert table[["spearman_excess", "iou_excess"]].notna().any(axis=None)
    assert redraw(tiny_run, "synthesis_matrix")["panels"] == len(models)


def test_tiny_robust_compare_outputs(tiny_run, redraw):
    """Robust vs standard (ours): the tiny config's pair through P1, masked PGD, the gradient maps and the
    synthesis, compared on the same images (2 P1 images: numbers without a verdict)."""
    from pixelrobust.robust_compare import SECTIONS, TABLE_COLUMNS

    t = tiny_run / "results" / "tables"
    table = pd.read_csv(t / "robust_compare.csv")
    assert list(table.columns) == TABLE_COLUMNS and set(table.section) == set(SECTIONS.values())
    assert set(zip(table.standard, table.robust)) == {
        ("resnet20_ehanw_standard", "resnet20_ehanw_pgd")
    }
    assert set(table[table.n_images < 10].verdict) <= {
        "too few images",
        "descriptive",
    }  # P1: 2 images; masked PGD: 16
    images = pd.read_csv(t / "onepixel_images.csv", dtype={"image_id": str})
    ok = images[images.correct.astype(bool)].groupby("model").image_id.apply(set)
    both = ok["resnet20_ehanw_standard"] & ok["resnet20_ehanw_pgd"]
    brk = table.set_index("comparison").loc["breakable by one pixel"]
    assert brk.n_images == len(both) and f"{len(both)} of 2 test images" in brk.evidence
    per_image = images[images.image_id.isin(both)].set_index(["model", "image_id"]).n_vulnerable
    assert brk.standard_value == pytest.approx(
        np.mean([per_image["resnet20_ehanw_standard", i] > 0 for i in both])
    )
    assert brk.robust_value == pytest.approx(
        np.mean([per_image["resnet20_ehanw_pgd", i] > 0 for i in both])
    )
    masked = table[table.section == SECTIONS["masked_pgd"]]
    assert (masked.n_images == 16).all() and len(
        masked
    ) == 2 * 2 * 3  # 2 norms x k 5, 25 x (each model, difference)
    with np.load(
        tiny_run / "results" / "robust_compare" / "resnet20_ehanw_standard__resnet20_ehanw_pgd.npz"
    ) as z:
        assert z["p1_standard"].shape == z["gradient_robust"].shape == (32, 32)
    assert (
        redraw(tiny_run, "robust_compare")["panels"] == 4 + 1
    )  # the four mean maps and the effects
    text = (tiny_run / "results" / "SUMMARY.md").read_text()
    assert (
        "## Robust vs standard (ours)" in text
        and "### resnet20_ehanw_standard (standard) vs resnet20_ehanw_pgd" in text
    )


def test_tiny_summary_states_every_claim(tiny_run):
    from pixelrobust.summary import CLAIM_COLUMNS

    claims = pd.read_csv(tiny_run / "results" / "tables" / "claims.csv")
    assert list(claims.columns) == CLAIM_COLUMNS
    assert set(claims.paper) == {"P1", "P2", "P3", "Synthesis"}
    assert claims.verdict.isin(["held", "not held", "inconclusive", "too few images"]).all()
    # P1's three claims for each of its models but the robust_compare pair's robust one (left out of the
    # papers' tally: 3 built-in + the pair's standard model), P2's one, P3's ordering (2 norms), IoU, defence
    assert (claims.paper == "P1").sum() == 4 * 3 and (claims.paper == "P2").sum() == 1
    assert "resnet20_ehanw_pgd" not in set(claims.model)
    assert (claims.paper == "Synthesis").sum() == 3 * 6
    assert claims[claims.n_images < 10].verdict.eq("too few images").all()
    text = (tiny_run / "results" / "SUMMARY.md").read_text()
    for claim in claims.claim.unique():
        assert f"### {claim}" in text
    assert "config/tiny.yaml" in text and "## Config" in text and "synthesis:" in text


def test_report_embeds_every_figure(tiny_run):
    from pixelrobust.report import FRONT_PAGE_HEADING, entry_bytes, read_front_page, read_report

    results, categories = read_report(tiny_run / "results" / "report.html")
    assert {"P1", "P2", "P3", "Synthesis", "Robust vs standard (ours)"} <= set(categories)
    figures = sorted((tiny_run / "results" / "figures").glob("*.png"))
    assert len(figures) >= 15
    for png in figures:
        key = f"results/figures/{png.name}"
        assert key in results, f"{png.name} is not in the report"
        assert entry_bytes(results[key]) == png.read_bytes() and results[key]["caption"].strip()
    for key in ("results/SUMMARY.md", "results/tables/synthesis.csv", "results/tables/claims.csv"):
        assert entry_bytes(results[key]) == (tiny_run / key).read_bytes()
    assert (
        results["results/figures/p1_vulnerability_grid_resnet20_cifar10.png"]["labels"]["model"]
        == "resnet20_cifar10"
    )
    # the front page opens on SUMMARY's verdict table: one row per claim of claims.csv, with its verdict
    front = read_front_page(tiny_run / "results" / "report.html")
    claims = pd.read_csv(tiny_run / "results" / "tables" / "claims.csv")
    assert front.index(FRONT_PAGE_HEADING) < front.index("<table")
    assert front.count("<tr>") >= len(claims) + 1 and f"{len(claims)} claim rows" in front
    for verdict, n in claims.verdict.value_counts().items():
        assert f"{n} {verdict}" in front


def test_report_before_the_summary_opens_without_a_verdict_table(tiny_run, mirror, tmp_path):
    """snakemake --report on a partial target, before rule summary wrote the front page, still builds."""
    from pixelrobust.report import FRONT_PAGE_HEADING, read_front_page

    page = tiny_run / "results" / "report" / "front_page.rst"
    aside = tmp_path / "front_page.rst"
    page.rename(aside)
    try:
        snakemake(
            [
                *TINY,
                "--report",
                str(tmp_path / "partial.html"),
                "results/tables/clean_accuracy.csv",
            ],
            tiny_run,
            mirror,
        )
    finally:
        aside.rename(page)
    front = read_front_page(tmp_path / "partial.html")
    assert "before rule" in front and FRONT_PAGE_HEADING not in front


def test_every_summary_table_has_markdown(tiny_run):
    """Summary tables come as CSV and Markdown; per-image and detail tables (and claims, whose
    Markdown is SUMMARY.md) as CSV only."""
    detail = {
        "onepixel_de_runs",
        "onepixel_images",
        "onepixel_regions",
        "ssim_cam_comparison",
        "synthesis_images",
        "prm_lambda_sweep_detail",
        "prm_lambda_sweep_images",
        "masked_pgd_images",
        "claims",
    }
    tables = sorted((tiny_run / "results" / "tables").glob("*.csv"))
    summaries = {
        "clean_accuracy",
        "onepixel_success",
        "onepixel_summary",
        "masked_pgd",
        "masked_pgd_l2",
        "prm_lambda_sweep",
        "defense",
        "ssim_attack",
        "ssim_matched",
        "ssim_solver_check",
        "ssim_cam_summary",
        "synthesis",
    }
    assert summaries <= {t.stem for t in tables}
    for csv in tables:
        if csv.stem in detail:
            continue
        md = csv.with_suffix(".md")
        assert md.is_file(), f"{csv.name} has no Markdown twin"
        if csv.stem != "defense":  # defense.md is one grid per protocol and model
            assert md.read_text().count("\n|") - 1 == len(pd.read_csv(csv)), md.name


def test_every_table_records_its_provenance(tiny_run):
    import json

    from pixelrobust.provenance import git_commit

    t = tiny_run / "results" / "tables"
    expected_jobs = {  # tiny config: compute jobs merged into each table
        "clean_accuracy": {
            "clean_accuracy_chunk": 12
        },  # 6 models (robust_compare's pair among them) x 2 chunks
        "onepixel": {"segment": 9, "onepixel_search": 9, "onepixel_claim_images": 9},
        "masked_pgd": {"masked_pgd": 4, "gradient_map": 4},
        "prm_lambda_sweep": {"prm_sweep": 1, "train_prm": 1},
        "defense": {"defense_eval": 18, "train_prm": 6},  # a pool of two PRMs per model
        "ssim_attack": {"attack_ssim": 2},
        "ssim_cam_comparison": {"cam": 2},
        "synthesis": {"four_maps": 4},
    }
    for table, jobs in expected_jobs.items():
        rec = json.loads((t / f"{table}.provenance.json").read_text())
        assert len(rec["config_sha256"]) == 64 and rec["git_commit"] == git_commit()
        assert rec["packages"]["torch"] == torch.__version__.split("+")[0] and rec["devices"] == [
            "cpu"
        ]
        counts = {}
        for job in rec["inputs"]:
            counts[job["rule"]] = counts.get(job["rule"], 0) + 1
            assert job["device"] == "cpu" and job["threads"] == 1 and isinstance(job["seed"], int)
            assert len(job["params_sha256"]) == 64 and job["wildcards"]["model"]
        assert counts == jobs, table
        first = [j for j in rec["inputs"] if j["rule"] == next(iter(jobs))]
        if table in ("defense", "masked_pgd", "ssim_attack", "ssim_cam_comparison"):
            # randomness drawn per image from (job seed, image id, ...): the defence's draws, PGD's random starts;
            # so the job seed is per model (results must not depend on chunking): one seed per model, different
            # between models
            per_model = {}
            for j in first:
                per_model.setdefault(j["wildcards"]["model"], set()).add(j["seed"])
            assert all(len(v) == 1 for v in per_model.values()), per_model
            assert len({next(iter(v)) for v in per_model.values()}) == len(per_model), (
                "per-model seeds must differ"
            )
            continue
        seeds = [j["seed"] for j in first]
        assert len(set(seeds)) == len(seeds), "per-job seeds must differ"
    # the claims (SUMMARY.md) embed the records of every table they read
    rec = json.loads((t / "claims.provenance.json").read_text())
    assert (
        rec["rule"] == "summary" and len(rec["config_sha256"]) == 64 and rec["devices"] == ["cpu"]
    )
    assert (
        rec["git_commit"] == git_commit()
        and rec["packages"]["torch"] == torch.__version__.split("+")[0]
    )
    assert sorted(j["rule"] for j in rec["inputs"]) == [
        "clean_accuracy",
        "compare_maps",
        "defense_tables",
        "masked_pgd_tables",
        "onepixel_tables",
        "prm_tables",
        "robust_compare",
        "synthesis_tables",
    ]


def test_workflow_numbers_equal_the_library(tiny_run):
    """The table holds what the library computes directly on the same 64 images."""
    table = pd.read_csv(tiny_run / "results" / "tables" / "clean_accuracy.csv").set_index("model")
    spec = models.resolve_spec("resnet20_cifar10", {})
    split = data.load_split(tiny_run / "resources" / "data" / "cifar10", "test", 0, 64)
    model = models.build_model(spec, tiny_run / "resources" / "weights" / "resnet20_cifar10.pt")
    preds = evaluate.prediction_table(
        evaluate.predict(model, split.images), split.labels, split.ids
    )
    assert table.loc["resnet20_cifar10", "top1"] == pytest.approx(preds.top1.mean(), abs=1e-4)
    chunks = pd.concat(
        [
            pd.read_csv(
                tiny_run / "results" / "clean_accuracy" / "resnet20_cifar10" / f"chunk-{c}.csv"
            )
            for c in (0, 1)
        ]
    )
    assert chunks.image_id.tolist() == split.ids and chunks.pred.tolist() == preds.pred.tolist()


def test_rerun_is_a_no_op(tiny_run, mirror):
    proc = snakemake([*TINY, "-n"], tiny_run, mirror)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def planned_jobs(configfile, mirror_counts) -> dict[str, int]:
    """The jobs per rule a dry run of ``configfile`` must plan on the mirror, derived from the config's sizes
    and the mirror's image counts (first principles: chunks = ceil(min(n_images, available) / chunk_size)),
    so the test follows a resized default config instead of pinning its numbers."""
    from helpers import SCHEMA
    from pixelrobust import config as prconfig

    cfg = prconfig.load_yaml(configfile)
    prconfig.validate(cfg, SCHEMA)
    ds = {name: spec["dataset"] for name, spec in prconfig.check(cfg).items()}

    def chunks(model, n, size):
        have = mirror_counts[ds[model]]["test"]
        return -(-(have if n is None else min(n, have)) // size)

    def per_chunk(section):
        sec = cfg[section]
        return sum(chunks(m, sec["n_images"][ds[m]], sec["chunk_size"]) for m in sec["models"])

    op, mp, pr, de, ss = (cfg[k] for k in ("onepixel", "masked_pgd", "prm", "defense_eval", "ssim"))
    models = (
        list(cfg["models"])
        if cfg["clean_accuracy"]["models"] is None
        else cfg["clean_accuracy"]["models"]
    )
    pool = de["defense_settings"]["stochastic_prm"]["pool"]
    prms = {(m, f"{pr['lattice']}-r0") for m in pr["models"]} | {
        (m, f"{lattice}-r{r}")
        for m in de["models"]
        for lattice in pool["lattices"]
        for r in range(pool["replicates"])
    }
    ssim_chunks = chunks(ss["model"], ss["n_images"][ds[ss["model"]]], ss["chunk_size"])
    return {
        "prepare_dataset": len(set(ds.values())),
        "get_weights": len(ds),
        "clean_accuracy_chunk": sum(
            chunks(m, cfg["clean_accuracy"]["n_images"], cfg["chunk_size"]) for m in models
        ),
        "clean_accuracy": 1,
        "segment": per_chunk("onepixel"),
        "onepixel_search": per_chunk("onepixel"),
        "onepixel_claim_images": per_chunk("onepixel"),
        "onepixel_tables": 1,
        "p1_vulnerability_grid": len(op["models"]),
        "p1_region_semantics": 1,
        "all": 1,
        "gradient_map": len(cfg["gradients"]["models"]),
        "masked_pgd": per_chunk("masked_pgd"),
        "masked_pgd_tables": 1,
        "p3_gradient_maps": 1,
        "p3_masked_pgd": len([n for n in ("linf", "l2") if mp.get(n)]),
        "prm_sweep": len(pr["models"]),
        "prm_tables": 1,
        "p3_prm_training": len(pr["models"]),
        "p3_prm_lambda": len(pr["models"]),
        "train_prm": len(prms),  # the sweep's PRM and each defended model's pool, one training each
        "defense_eval": per_chunk("defense_eval") * (1 + len(de["attacks"])),  # clean + each attack
        "defense_tables": 1,
        "p3_defense": 1,
        "attack_ssim": ssim_chunks,
        "ssim_tables": 1,
        "cam": ssim_chunks,
        "compare_maps": 1,
        "ssim_solver_check": 1,
        "p2_ssim_sweep": 1,
        "p2_cam_grid": 1,
        "p2_cam_distributions": 1,
        "four_maps": len(cfg["synthesis"]["models"]),
        "synthesis_tables": 1,
        "synthesis_maps": 1,
        "synthesis_matrix": 1,
        "summary": 1,
        "html_report": 1,
    }


def test_default_config_dry_run_with_mirror(mirror, mirror_counts, tmp_path):
    proc = snakemake([*DEFAULT, "-n"], tmp_path, mirror)
    counts = job_counts(proc.stdout)
    assert counts == planned_jobs(REPO / "config" / "config.yaml", mirror_counts)
    # and so does the GPU sizing, which keeps every stage's models (config/gpu.yaml)
    proc = snakemake(["--configfile", str(REPO / "config" / "gpu.yaml"), "-n"], tmp_path, mirror)
    assert job_counts(proc.stdout) == planned_jobs(REPO / "config" / "gpu.yaml", mirror_counts)


def test_paper_config_dry_run_plans_the_authors_prm_pool(mirror, tmp_path):
    proc = snakemake(["--configfile", str(REPO / "config" / "paper.yaml"), "-n"], tmp_path, mirror)
    counts = job_counts(proc.stdout)
    # the random ACE's pool: 6 lattices x 5 seeds for each of the 3 defended models; the λ sweeps'
    # PRMs (s2-r0 of the same 3 models) are among them
    assert counts["train_prm"] == 3 * 6 * 5 and counts["prm_sweep"] == 3
    planned = set(re.findall(r"results/p3/prm/(\w+)/([\w]+-r\d+)/prm\.pt", proc.stdout))
    assert len(planned) == 90 and ("mobilenet_v2_imagenet", "k2_s4-r4") in planned


def test_default_config_dry_run_downloads_without_mirror(tmp_path):
    proc = snakemake([*DEFAULT, "-n"], tmp_path, None)
    counts = job_counts(proc.stdout)
    # 2 CIFAR tarballs + ImageNet sample zip + class index + 4 weight files; 10000/10000/1000 images
    assert counts["download"] == 8 and counts["prepare_dataset"] == 3 and counts["get_weights"] == 4
    official = {"cifar10": {"test": 10000}, "cifar100": {"test": 10000}, "imagenet": {"test": 1000}}
    planned = planned_jobs(REPO / "config" / "config.yaml", official)
    assert {k: counts[k] for k in planned} == planned
    assert "cifar-10-python.tar.gz" in proc.stdout and "mobilenet_v2-b0353104.pth" in proc.stdout


def test_bad_config_is_rejected_naming_the_key(mirror, tmp_path):
    proc = snakemake([*DEFAULT, "-n", "--config", "chunk_size=0"], tmp_path, mirror, check=False)
    assert proc.returncode != 0 and "0 is less than the minimum of 1" in proc.stdout + proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nbatchsize: 12\n")
    proc = snakemake(["-n", "--configfile", str(bad)], tmp_path, mirror, check=False)
    assert proc.returncode != 0 and "'batchsize' was unexpected" in proc.stdout + proc.stderr


def test_missing_mirror_is_reported(tmp_path):
    proc = snakemake([*DEFAULT, "-n"], tmp_path, tmp_path / "no-such-mirror", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "no-such-mirror" in out and "PIXELROBUST_MIRROR" in out


def test_lint_is_clean(mirror, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PIXELROBUST_MIRROR": str(mirror)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    """ruff (pinned in the test extra and requirements.lock; [tool.ruff] in pyproject.toml) finds nothing to
    lint or reformat."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "src", "tests", "bench", "tools", "examples"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"ruff {' '.join(command)}:\n" + proc.stdout[-5000:] + proc.stderr
