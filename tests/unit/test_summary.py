"""pixelrobust.summary: SUMMARY.md's claim verdicts from planted tables, and the report's front page."""

from __future__ import annotations

import functools
import re

import numpy as np
import pandas as pd
import pytest
from docutils.core import publish_parts

from helpers.p2 import comparison_frame, summ
from helpers.robust import p1_maps
from pixelrobust import robust_compare as rc
from pixelrobust import stats, summary
from pixelrobust.defense_eval import TABLE_COLUMNS
from pixelrobust.map_compare import BUDGET, GRID_ARTEFACT, SUCCESS_DIFFERS
from pixelrobust.report import FRONT_PAGE_HEADING
from pixelrobust.stats import newcombe_diff_ci
from pixelrobust.summary import CLAIM_COLUMNS, front_page, p3_defense

# ----------------------------------------------------------------------------------------------
# The report's front page (summary.front_page): the verdict table, rendered as reStructuredText.
# ----------------------------------------------------------------------------------------------


def _claims():
    rows = [
        (
            "P1",
            "searching *only* some pixels is enough",
            "cifar10",
            "resnet20_cifar10",
            "inconclusive",
            56,
            "retention_excess",
            0.052,
            -0.010,
            0.111,
            "random_order",
        ),
        (
            "P2",
            "perturbations change the CAM's regions | top_k",
            "imagenet",
            "mobilenet_v2_imagenet",
            "not held",
            11,
            "iou_vs_l2",
            -0.212,
            -0.331,
            -0.117,
            "l2_pgd",
        ),
        (
            "P3",
            "1. the stochastic PRM defends against `pgd` [graybox]",
            "cifar10",
            "resnet20_cifar10",
            "held",
            200,
            "top1_gain",
            0.30,
            0.21,
            0.40,
            "",
        ),
        (
            "P3",
            "- ordering",
            "cifar10",
            "resnet56_cifar10",
            "too few images",
            3,
            "",
            np.nan,
            np.nan,
            np.nan,
            "",
        ),
    ]
    # texts docutils would read as markup at the start of a cell or inside it (user-chosen model and dataset
    # names reach the page too): enumerations, section underlines, directives, roles, substitutions, targets
    odd = [
        "A. Smith",
        "a) first",
        "(i) x",
        "I. x",
        "R. A. Fisher",
        "====",
        "~~~~",
        "ends with::",
        ".. include:: x",
        ":math:`x`",
        "|sub|",
        "word_",
        "\\back\\slash",
        "ünïcode ✓",
        "{{ jinja }}",
        "* star",
        ">>> prompt",
        "#. auto",
    ]
    rows += [
        ("P3", text, "cifar10", "m", "inconclusive", 12, "", 0.0, -0.1, 0.1, "") for text in odd
    ]
    return pd.DataFrame(
        [
            {
                **dict.fromkeys(CLAIM_COLUMNS, ""),
                "paper": p,
                "claim": c,
                "dataset": d,
                "model": m,
                "verdict": v,
                "n_images": n,
                "statistic": st,
                "effect": e,
                "ci_low": lo,
                "ci_high": hi,
                "threshold": 0.0,
                "detectable": stats.detectable_effect(lo, hi) if v == "inconclusive" else np.nan,
                "control": ctl,
                "control_value": np.nan,
                "observed": np.nan,
                "evidence": "x",
            }
            for p, c, d, m, v, n, st, e, lo, hi, ctl in rows
        ]
    )


def _html(rst: str) -> str:
    # halt at warnings: a markup character left unescaped (an unmatched * or `, a stray |) fails here
    return publish_parts(
        rst, writer="html", settings_overrides={"halt_level": 2, "report_level": 5}
    )["html_body"]


def _cells(html: str) -> list[list[str]]:
    from html.parser import HTMLParser

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.rows[-1].append(self.cell.strip())
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    parser = Rows()
    parser.feed(html)
    return parser.rows


def test_front_page_renders_every_claim_verbatim():
    claims = _claims()
    accuracy = pd.DataFrame(
        [{"model": "resnet20_cifar10", "dataset": "cifar10", "n_images": 1017, "top1": 0.9164}]
    )
    html = _html(
        front_page(
            claims,
            config_sha256="abc123",
            configfiles=["config/tiny.yaml"],
            git_commit="deadbeef",
            clean_accuracy=accuracy,
        )
    )
    assert FRONT_PAGE_HEADING in html
    rows = _cells(html)
    header = rows.index(
        ["paper", "claim", "dataset", "model", "verdict", "images", "effect (95 % CI)", "control"]
    )
    table = rows[header + 1 : header + 1 + len(claims)]
    # the claim text comes through as written: escaping must not eat or add characters
    assert [r[1] for r in table] == list(claims.claim)
    assert [r[4] for r in table] == list(claims.verdict)
    assert [int(r[5]) for r in table] == list(claims.n_images)
    # an inconclusive row adds the effect it would have held at 80 % power: threshold 0 + 1.43 x the half width
    # 0.0605 (stats.detectable_effect)
    assert (
        table[0][6]
        == "+0.052 (-0.01 to 0.111); underpowered: held needs a true effect ≥ +0.086 (80 % power)"
        and table[3][6] == "-"
    )
    assert (
        table[3][7] == "none" and table[1][7] == "l2_pgd"
    )  # no control: said so, without Markdown stars
    assert ["resnet20_cifar10", "cifar10", "1017", "0.9164"] in rows
    assert f"1 held, 1 not held, {1 + len(claims) - 4} inconclusive, 1 too few images" in html
    assert "deadbeef" in html and "abc123" in html and "config/tiny.yaml" in html


def test_front_page_escaping_is_needed():
    """Without the escaping, the same page loses characters of the claims (emphasis eats the stars, "A." or
    "- " becomes a list): so the verbatim check above tests the escaping, not luck."""
    claims = _claims()
    page = front_page(claims, config_sha256="a", configfiles=[], git_commit="b")
    raw = page.replace("- \\ ", "- ")
    for c in "*`|[]_:<>":
        raw = raw.replace("\\" + c, c)
    html = publish_parts(
        raw, writer="html", settings_overrides={"halt_level": 5, "report_level": 5}
    )["html_body"]
    rows = _cells(html)
    header = next(i for i, r in enumerate(rows) if r[:2] == ["paper", "claim"])
    shown = [r[1] if len(r) > 1 else "" for r in rows[header + 1 : header + 1 + len(claims)]]
    assert shown != list(claims.claim) and "searching only some pixels is enough" in shown


def test_front_page_without_claims_still_renders():
    html = _html(front_page(_claims().iloc[:0], config_sha256="a", configfiles=[], git_commit="b"))
    assert FRONT_PAGE_HEADING in html and "0 claim rows" in html


# ----------------------------------------------------------------------------------------------
# Claim verdicts from planted tables: the synthesis findings, P1's and P3's claims, SUMMARY.md and the
# claims table.
# ----------------------------------------------------------------------------------------------


def synthesis_table(iou_ci, rho_ci, n=30):
    """One ``synthesis.csv`` row: Grad-CAM++ against the input gradient, the excesses' intervals given."""
    return pd.DataFrame(
        [
            {
                "dataset": "cifar10",
                "model": "m",
                "map_a": "gradcam_pp",
                "map_b": "input_gradient",
                "spearman": 0.39,
                "iou_topk": 0.12,
                "ci_low": 0.35,
                "ci_high": 0.42,
                "iou_ci_low": 0.1,
                "iou_ci_high": 0.14,
                "chance_iou": 0.053,
                "n_images": n,
                "n_pixels": 1024,
                "topk_percent": 10,
                "spearman_null": 0.33,
                "iou_null": 0.11,
                "spearman_excess": sum(rho_ci) / 2,
                "spearman_excess_ci_low": rho_ci[0],
                "spearman_excess_ci_high": rho_ci[1],
                "iou_excess": sum(iou_ci) / 2,
                "iou_excess_ci_low": iou_ci[0],
                "iou_excess_ci_high": iou_ci[1],
                "null_pairs": n - 1,
            }
        ]
    )


def test_synthesis_findings_decide_on_the_excess_over_the_null():
    table = synthesis_table

    # far above uniform chance (0.12 vs 0.053) but not beyond the null: inconclusive, not held
    assert (
        summary.synthesis_findings(table((-0.002, 0.026), (0.02, 0.08)))[0]["verdict"]
        == "inconclusive"
    )
    row = summary.synthesis_findings(table((0.005, 0.02), (0.02, 0.08)))[0]
    assert (
        row["verdict"] == "held"
        and row["control_value"] == 0.11
        and row["effect"] == pytest.approx(0.0125)
    )
    assert (
        summary.synthesis_findings(table((-0.03, -0.01), (0.02, 0.08)))[0]["verdict"] == "not held"
    )
    assert (
        summary.synthesis_findings(table((0.005, 0.02), (0.02, 0.08), n=5))[0]["verdict"]
        == "too few images"
    )
    # the Spearman half decides too (intersection-union), and then it is the effect shown
    unsure = summary.synthesis_findings(table((0.005, 0.02), (-0.01, 0.03)))[0]
    assert unsure["verdict"] == "inconclusive" and unsure["statistic"].startswith("Spearman")
    assert unsure["effect"] == pytest.approx(0.01) and (unsure["ci_low"], unsure["ci_high"]) == (
        -0.01,
        0.03,
    )
    assert unsure["observed"] == 0.39 and unsure["control_value"] == 0.33
    lost = summary.synthesis_findings(table((0.005, 0.02), (-0.08, -0.02)))[0]
    assert (
        lost["verdict"] == "not held"
        and lost["effect"] == pytest.approx(-0.05)
        and lost["ci_high"] == -0.02
    )


def test_synthesis_finding_names_its_model_control_and_both_tests():
    """The row is the table's (dataset, model, pair), its control the permutation null, and its evidence quotes
    both excesses with their own verdicts (IoU held, Spearman inconclusive here)."""
    (row,) = summary.synthesis_findings(synthesis_table((0.005, 0.02), (-0.01, 0.03)))
    assert (row["paper"], row["dataset"], row["model"]) == ("Synthesis", "cifar10", "m")
    assert row["claim"] == "gradcam_pp and input_gradient maps agree beyond chance"
    assert row["control"] == "maps of the other images of the model (permutation null)"
    assert (
        "IoU 0.120 vs 0.110" in row["evidence"]
        and "excess +0.013 (+0.005 to +0.020), held" in row["evidence"]
    )
    assert (
        "Spearman 0.390 vs 0.330: excess +0.010 (-0.010 to +0.030), inconclusive" in row["evidence"]
    )
    assert "uniform random sets 0.053" in row["evidence"]


# ---- SUMMARY.md --------------------------------------------------------------------------------


SEMANTIC = {"score": "occlusion", "direction": "positive"}
RESTRICTED = {"budget": 0.25, "min_retention": 0.5, "min_effect": 0.05}


def p1_images(n: int, n_segments: int = 25, primary: bool = True, **cols) -> pd.DataFrame:
    """A constructed ``onepixel_claim_images`` table of n searched images; each column a value or a list
    cycled over the images (defaults: every image attackable, nothing else informative)."""
    from pixelrobust.vulnerability import CLAIM_IMAGE_COLUMNS

    base = {
        "dataset": "cifar10",
        "model": "m",
        "n_segments": n_segments,
        "primary": primary,
        "n_regions": 20,
        "n_searched": 1024,
        "n_vulnerable": 5,
        "n_vulnerable_regions": 2,
        "whole_success": 1,
        "restricted_regions": 5,
        "restricted_pixels": 256,
        "restricted_success": 0,
        "random_regions_success": 0.0,
        "multi_region": 0,
        "blob_multi_region": 0.0,
        "random_multi_region": 0.9,
        "rho_occlusion": 0.0,
        "rho_occlusion_control": 0.0,
        "rho_cam": 0.0,
        "rho_cam_control": 0.0,
    }
    rows = []
    for i in range(n):
        row = {**base, "image_id": f"img-{i}"}
        for k, v in cols.items():
            row[k] = v[i % len(v)] if isinstance(v, list) else v
        rows.append(row)
    return pd.DataFrame(rows, columns=CLAIM_IMAGE_COLUMNS)


def p1_verdicts(table: pd.DataFrame, semantic=SEMANTIC, restricted=RESTRICTED) -> dict:
    from pixelrobust.vulnerability import claims_table

    rows = summary.p1_claims(
        claims_table(table, semantic=semantic, restricted=restricted, n_boot=500, seed=0)
    )
    return {
        r["claim"].split()[0] if not r["claim"].startswith("a region") else "semantic": r
        for r in rows
    }


def test_p1_only_some_pixels_beats_random_regions_of_the_same_budget_and_keeps_the_successes():
    held = p1_verdicts(p1_images(30, restricted_success=1, random_regions_success=0.3))["searching"]
    assert (
        held["verdict"] == "held"
        and held["effect"] == pytest.approx(0.7)
        and held["control_value"] == pytest.approx(0.3)
    )
    assert held["ci_low"] > 0 and "cost 0.25" in held["evidence"]
    worse = p1_verdicts(p1_images(30, restricted_success=0, random_regions_success=0.6))[
        "searching"
    ]
    assert worse["verdict"] == "not held" and worse["ci_high"] < 0
    tie = p1_verdicts(p1_images(30, restricted_success=[1, 0], random_regions_success=0.5))[
        "searching"
    ]
    assert tie["verdict"] == "inconclusive"
    # beats the random subset (0 here) but keeps only 8 of 40 successes: the retention test fails it
    few = p1_verdicts(
        p1_images(40, restricted_success=[1] * 8 + [0] * 32, random_regions_success=0.0)
    )["searching"]
    assert few["ci_low"] > 0 and few["verdict"] == "not held" and "retention" in few["evidence"]
    # images no pixel breaks count: 20 unbreakable + 10 attackable ones the restricted search finds
    mixed = p1_verdicts(
        p1_images(
            30,
            whole_success=[0, 0, 1],
            restricted_success=[0, 0, 1],
            random_regions_success=[0, 0, 0.2],
        )
    )["searching"]
    assert (
        mixed["n_images"] == 30
        and mixed["observed"] == pytest.approx(1 / 3)
        and mixed["verdict"] == "held"
    )
    assert (
        p1_verdicts(p1_images(5, restricted_success=1))["searching"]["verdict"] == "too few images"
    )


def test_p1_only_some_pixels_needs_a_gain_of_at_least_min_effect():
    """A gain over random regions that is sure but tiny (0.0004: every image's random regions hit with
    probability 0.9996) is not held; the same images with the margin at 0 would be; a gain whose
    interval lies above the margin is held, and one whose interval straddles it is inconclusive."""
    tiny = p1_images(
        30, restricted_success=1, random_regions_success=[0.9992, 1.0]
    )  # gains 0.0008 and 0 alternating
    row = p1_verdicts(tiny)["searching"]
    assert (
        row["effect"] == pytest.approx(0.0004)
        and row["ci_low"] > 0
        and row["verdict"] == "not held"
    )
    assert "must exceed 0.05" in row["evidence"]
    assert (
        p1_verdicts(tiny, restricted={**RESTRICTED, "min_effect": 0.0})["searching"]["verdict"]
        == "held"
    )
    clear = p1_verdicts(p1_images(30, restricted_success=1, random_regions_success=[0.85, 0.95]))[
        "searching"
    ]
    assert clear["ci_low"] > 0.05 and clear["verdict"] == "held"
    # gains 0 and 0.1 alternating: mean 0.05, the interval straddles the margin
    edge = p1_verdicts(p1_images(30, restricted_success=1, random_regions_success=[1.0, 0.9]))[
        "searching"
    ]
    assert edge["ci_low"] < 0.05 < edge["ci_high"] and edge["verdict"] == "inconclusive"


def test_p1_scattered_is_measured_against_a_compact_blob():
    held = p1_verdicts(p1_images(20, multi_region=1, blob_multi_region=0.3))["vulnerable"]
    assert (
        held["verdict"] == "held" and held["effect"] == pytest.approx(0.7) and held["observed"] == 1
    )
    # 75 % of images in >= 2 regions, but a blob of the same size would cross a boundary as often
    same = p1_verdicts(p1_images(20, multi_region=[1, 1, 1, 0], blob_multi_region=0.75))[
        "vulnerable"
    ]
    assert same["observed"] == pytest.approx(0.75) and same["verdict"] == "inconclusive"
    less = p1_verdicts(p1_images(20, multi_region=0, blob_multi_region=0.4))["vulnerable"]
    assert less["verdict"] == "not held"
    # only attackable images count: 4 of 40
    few = p1_verdicts(
        p1_images(40, whole_success=[1] + [0] * 9, multi_region=1, blob_multi_region=0.1)
    )["vulnerable"]
    assert few["n_images"] == 4 and few["verdict"] == "too few images"


def test_p1_semantic_tests_the_declared_score_and_direction_within_images():
    noise = [0.1, -0.1, 0.05, -0.05]
    table = p1_images(
        24,
        rho_occlusion=[0.5 + e for e in noise],
        rho_occlusion_control=0.1,
        rho_cam=[-0.4 + e for e in noise],
        rho_cam_control=0.0,
    )

    def v(score, direction):
        return p1_verdicts(table, {"score": score, "direction": direction})["semantic"]

    pos = v("occlusion", "positive")
    assert (
        pos["verdict"] == "held"
        and pos["effect"] == pytest.approx(0.4)
        and pos["control_value"] == pytest.approx(0.1)
    )
    # the default declaration was made after a pilot on the first 20 images: the evidence says so
    assert "declared after a pilot on the first 20 images" in pos["evidence"]
    assert "pilot" not in v("cam", "negative")["evidence"]
    assert v("occlusion", "negative")["verdict"] == "not held"
    assert (
        v("cam", "positive")["verdict"] == "not held" and v("cam", "negative")["verdict"] == "held"
    )
    # a positive rho that its control matches is no evidence (the pooled reading would have called it held)
    matched = p1_images(
        24, rho_occlusion=[0.3 + e for e in noise], rho_occlusion_control=[0.3 - e for e in noise]
    )
    assert p1_verdicts(matched)["semantic"]["verdict"] == "inconclusive"
    # images without a defined rho are skipped and counted; unattackable ones are not units
    skipped = p1_images(
        24,
        rho_occlusion=[np.nan, 0.6, 0.4, 0.5],
        rho_occlusion_control=0.0,
        whole_success=[1, 1, 1, 1, 0, 1],
    )
    row = p1_verdicts(skipped)["semantic"]
    # images 4, 10, 16, 22 unattackable; NaN at 0, 4, 8, 12, 16, 20, of which 0, 8, 12, 20 attackable
    assert row["n_images"] == 16 and "4 attackable images skipped" in row["evidence"]
    assert p1_verdicts(p1_images(8, rho_occlusion=0.5))["semantic"]["verdict"] == "too few images"


def test_p1_claims_decide_on_the_primary_segmentation_and_quote_the_others():
    from pixelrobust.vulnerability import claims_table

    table = pd.concat(
        [
            p1_images(20, n_segments=25, multi_region=1, blob_multi_region=0.2),
            p1_images(
                20, n_segments=10, primary=False, multi_region=0, blob_multi_region=[0.1, 0.3]
            ),
            p1_images(20, n_segments=50, primary=False, multi_region=1, blob_multi_region=0.2),
        ]
    )
    claims = claims_table(table, semantic=SEMANTIC, restricted=RESTRICTED, n_boot=300, seed=1)
    assert len(claims) == 9 and claims.n_segments.tolist()[:3] == [25, 25, 25]
    rows = summary.p1_claims(claims)
    assert len(rows) == 3 and all(set(summary.CLAIM_COLUMNS) == set(r) for r in rows)
    scattered = [r for r in rows if r["claim"].startswith("vulnerable")][0]
    assert scattered["verdict"] == "held" and scattered["control"].startswith("a compact blob")
    assert (
        "sensitivity: 10 segments -0.200" in scattered["evidence"]
        and "not held" in scattered["evidence"]
    )
    assert "50 segments +0.800" in scattered["evidence"]


def masked_images(per_k: dict, n: int = 40, random=None) -> pd.DataFrame:
    """Per-image masked-PGD outcomes: ``per_k[k] = (top correct, bottom correct)``, each a 0/1 list or a count of
    correct images (the first ones)."""

    def vec(v):
        return np.asarray(v, int) if np.ndim(v) else (np.arange(n) < v).astype(int)

    rows = []
    for k, (top, bottom) in per_k.items():
        rand = vec(random[k]) if random else (vec(top) | vec(bottom))
        for mask, v in (("top", vec(top)), ("bottom", vec(bottom)), ("random", rand)):
            rows += [
                {
                    "dataset": "cifar10",
                    "model": "m",
                    "norm": "linf",
                    "mask": mask,
                    "k_percent": float(k),
                    "image_id": f"i{i}",
                    "correct": int(c),
                    "loss": 1.0 - c,
                }
                for i, c in enumerate(v)
            ]
    return pd.DataFrame(rows)


def ordering(per_k, max_k=25, **kw):
    (row,) = summary.p3_ordering(
        masked_images(per_k, **kw), "linf", n_boot=500, seed=0, max_k=max_k
    )
    return row


def test_p3_ordering_is_a_paired_test_per_k():
    # bottom-mask PGD leaves 30 of 40 images correct, top-mask PGD 10: a clear paired difference at every k
    held = ordering({5: (10, 30), 25: (2, 20)})
    assert (
        held["verdict"] == "held"
        and held["ci_low"] > 0
        and held["effect"] == pytest.approx(18 / 40)
    )  # the weaker k, 25
    # the row compares what the claim compares: observed = top mask, control = bottom mask, effect = bottom - top
    assert held["control"].startswith("bottom mask") and held["observed"] == pytest.approx(2 / 40)
    row = ordering({5: (10, 30), 25: (2, 20)}, random={5: 25, 25: 8})
    assert row["control_value"] == pytest.approx(20 / 40) and row["observed"] == pytest.approx(
        2 / 40
    )
    assert row["control_value"] - row["observed"] == pytest.approx(row["effect"])
    assert (
        "top 0.05 / random 0.20 / bottom 0.50" in row["evidence"]
    )  # the random mask stays in the evidence
    # the top mask hurts *less* at one k: not held (intersection-union over k)
    assert ordering({5: (10, 30), 25: (30, 10)})["verdict"] == "not held"
    # a difference of one image of 40 is no clear difference: inconclusive, not "not held"
    assert ordering({5: (10, 30), 25: (19, 20)})["verdict"] == "inconclusive"
    assert ordering({5: (10, 30), 25: (2, 20)}, n=6)["verdict"] == "too few images"
    # pairing: the images the top mask leaves correct (the first 15) are a subset of the bottom mask's (the first
    # 22), so 7 images differ, all one way. Paired over images that is clear (held: the exact interval excludes 0
    # as the sign test on 7 of 7 discordant pairs at 97.5 %, p = 0.016); two independent proportions, 15/40
    # against 22/40, would not be (Newcombe's interval straddles 0). With 6 of 6 (p = 0.031): inconclusive.
    row = ordering({5: (15, 22)})
    assert row["verdict"] == "held" and row["effect"] == pytest.approx(7 / 40)
    assert newcombe_diff_ci(22, 40, 15, 40)[1] < 0
    assert ordering({5: (15, 21)})["verdict"] == "inconclusive"


def test_p3_ordering_excludes_k_0_and_100_and_ties():
    # issue #24: k = 0 (both masks: the clean image) and k = 100 (both: full PGD) are the same attack, not losses
    row = ordering({0: (36, 36), 5: (10, 30), 25: (2, 20), 100: (0, 0)})
    assert row["verdict"] == "held" and "k = 0, 100 excluded" in row["evidence"]
    # saturation: at k = 50 both masks leave no image correct, a tie: no loss (never "not held"), but no
    # evidence for the order either, so the claim over every k is inconclusive (when k = 50 is among the verdict's k)
    row = ordering({5: (10, 30), 25: (2, 20), 50: (0, 0)}, max_k=50)
    assert row["verdict"] == "inconclusive" and "intersection-union over the 3 k" in row["evidence"]
    assert (
        "k 50 %: top 0.00 / random 0.00 / bottom 0.00, bottom - top +0.000 (-0.104 to 0.104) inconclusive (tied)"
        in row["evidence"]
    )
    assert (
        ordering({5: (10, 30), 25: (30, 10), 50: (0, 0)}, max_k=50)["verdict"] == "not held"
    )  # a real loss still counts
    for ks in ([100], [0], [0, 100]):
        with pytest.raises(
            ValueError, match="masked_pgd.k_percent .* no mask size strictly between 0 and 100"
        ):
            ordering({k: (0, 0) for k in ks})
    with pytest.raises(ValueError, match="lacks 'bottom', which P3's ordering compares"):
        summary.p3_ordering(
            masked_images({5: (1, 2)}).query("mask != 'bottom'"), "linf", n_boot=10, seed=0
        )


def test_p3_ordering_is_decided_on_k_up_to_verdict_max_k():
    # the default grid's k = 50 (half the image: not a minority of the pixels) is reported, not decided on;
    # a tie there (both masks saturated) no longer makes the claim inconclusive
    row = ordering({1: (20, 36), 5: (10, 30), 25: (2, 20), 50: (0, 1), 100: (0, 0)})
    assert (
        row["verdict"] == "held" and "intersection-union over the 3 k in (0, 25]" in row["evidence"]
    )
    assert (
        "k = 50 excluded (above masked_pgd.verdict_max_k 25" in row["evidence"]
        and "k 50 %" not in row["evidence"]
    )
    assert "k = 100 excluded (the same attack" in row["evidence"]
    # a loss above max_k does not count either; one at or below it does
    assert ordering({5: (10, 30), 25: (2, 20), 50: (30, 0)})["verdict"] == "held"
    assert ordering({5: (10, 30), 25: (30, 2), 50: (0, 30)})["verdict"] == "not held"
    with pytest.raises(ValueError, match=r"no mask size in \(0, masked_pgd.verdict_max_k = 25\]"):
        ordering({50: (0, 10), 100: (0, 0)})


def with_centre(per_k: dict, n: int = 40) -> pd.DataFrame:
    """:func:`masked_images` plus a ``centre`` mask: ``per_k[k] = (top, bottom, centre)`` correct counts."""
    d = masked_images({k: v[:2] for k, v in per_k.items()}, n=n)
    rows = [
        {
            **d.iloc[0].to_dict(),
            "mask": "centre",
            "k_percent": float(k),
            "image_id": f"i{i}",
            "correct": int(i < c),
            "loss": float(i >= c),
        }
        for k, (_, _, c) in per_k.items()
        for i in range(n)
    ]
    return pd.concat([d, pd.DataFrame(rows)], ignore_index=True)


def centre_row(per_k, **kw):
    (row,) = summary.p3_beyond_geometry(with_centre(per_k, **kw), "linf", n_boot=500, seed=0)
    return row


def test_p3_beyond_geometry_compares_the_top_mask_with_the_pixels_nearest_the_centre():
    # the top-gradient mask leaves 10 of 40 correct, the centre mask 30 (with_centre's loss: 1 for a broken image,
    # 0 for a correct one, so the cross-entropy difference top - centre is the share of images only top breaks):
    # the map beats geometry at every k
    row = centre_row({5: (10, 35, 30), 25: (2, 30, 20)})
    assert row["verdict"] == "held" and row["effect"] == pytest.approx(18 / 40)  # the weaker k, 25
    assert row["control"].startswith("the centre disc") and row["control_value"] == pytest.approx(
        20 / 40
    )
    assert (
        "beyond geometry" in row["claim"]
        and "top-1 top 0.05 / centre 0.50 / random 0.75 / bottom 0.75" in row["evidence"]
    )
    # the ordering itself (bottom vs top) holds on the same data: the two rows answer different questions
    assert ordering({5: (10, 35), 25: (2, 30)})["verdict"] == "held"
    # the centre mask hurts as much as the top mask at k 25: the gradient map adds nothing there
    same = centre_row({5: (10, 35, 30), 25: (2, 30, 2)})
    assert same["verdict"] == "inconclusive" and "inconclusive (tied)" in same["evidence"]
    assert np.isnan(same["detectable"])  # a tie: more images would not separate the masks
    # the centre mask hurts more at one k: not held
    assert centre_row({5: (30, 35, 10), 25: (2, 30, 20)})["verdict"] == "not held"
    # the verdict is on the attacked cross-entropy, which has no floor: both masks leave no image correct at k 25
    # (top-1 tied at 0), but the top mask's pixels raise the loss more on every image: held, not tied
    d = with_centre({5: (10, 35, 30), 25: (0, 30, 0)})
    at25 = d.k_percent == 25
    d.loc[at25 & (d["mask"] == "top"), "loss"] = 3.0 + np.arange(40) / 100
    d.loc[at25 & (d["mask"] == "centre"), "loss"] = 2.5 + np.arange(40) / 100
    (row,) = summary.p3_beyond_geometry(d, "linf", n_boot=500, seed=0)
    assert row["verdict"] == "held" and "top - centre +0.5 " in row["evidence"]
    # k 5 limits it (its interval is the wider one; both effects are 0.5): observed = 30 broken images of 40
    assert row["effect"] == pytest.approx(0.5) and row["observed"] == pytest.approx(30 / 40)
    # ... and the evidence says how much of the ordering the centre reproduces (k 5: top - bottom 25 images' loss,
    # centre - bottom 5: 20 %) and on how many images the top mask's loss is higher (k 5: 20 of 40)
    assert "the centre disc reproduces 20 % of the ordering" in row["evidence"]
    assert "higher under top on 50% of images, equal on 50%" in row["evidence"]
    # without a centre mask in the run there is no row (the ordering still has its own)
    assert summary.p3_beyond_geometry(masked_images({5: (1, 2)}), "linf", n_boot=10, seed=0) == []
    with pytest.raises(ValueError, match="lacks 'top', which the geometry control compares"):
        summary.p3_beyond_geometry(
            with_centre({5: (1, 2, 3)}).query("mask != 'top'"), "linf", n_boot=10, seed=0
        )


def test_p3_beyond_geometry_must_beat_the_architecture_map_too():
    """Beating the centre disc is not enough: a data-free mask that is not a compact disc (the architecture map's
    top, with the stride lattice) can beat the disc too; the row must beat every data-free mask of the run."""
    d = with_centre({5: (10, 35, 30), 25: (2, 30, 20)})
    arch = d[d["mask"] == "top"].assign(mask="top_arch")
    arch.loc[arch.k_percent == 25, "loss"] = (
        2.0  # the architecture mask raises the loss above the top mask's
    )
    (row,) = summary.p3_beyond_geometry(pd.concat([d, arch]), "linf", n_boot=500, seed=0)
    assert row["verdict"] == "not held" and row["control"].startswith(
        "the architecture map's top mask"
    )
    assert row["effect"] == pytest.approx(
        38 / 40 - 2.0
    )  # top's mean loss at k 25 minus the architecture mask's
    # the random mask is data-free too: one that raises the loss more than the top mask also makes it not held
    rand = d.copy()
    rand.loc[(rand["mask"] == "random") & (rand.k_percent == 5), "loss"] = 3.0
    (row,) = summary.p3_beyond_geometry(rand, "linf", n_boot=500, seed=0)
    assert row["verdict"] == "not held" and row["control"].startswith("the random mask")
    # the same architecture mask as good as the top one at k 25 but no better: a tie there, inconclusive
    arch.loc[arch.k_percent == 25, "loss"] = d.loc[
        (d["mask"] == "top") & (d.k_percent == 25), "loss"
    ].to_numpy()
    (row,) = summary.p3_beyond_geometry(pd.concat([d, arch]), "linf", n_boot=500, seed=0)
    assert (
        row["verdict"] == "inconclusive"
        and "top - top_arch +0 (-0.104 to 0.104) inconclusive (tied)" in row["evidence"]
    )


def iou_tables(
    trained,
    control,
    *,
    top1=(0.90, 0.89, 0.86, 0.70, 0.40),
    lambdas=(0, 0.1, 0.3, 0.5, 1.0),
    n=40,
    clean=0.90,
    controls=("untrained", "fill_only"),
):
    """A λ sweep with per-image IoU: ``trained``/``control`` map λ -> a per-image IoU vector (or a constant)."""
    sweep, images = [], []
    for name in ("trained", *controls):
        src = trained if name == "trained" else control
        for lam, acc in zip(lambdas, top1):
            v = np.broadcast_to(np.asarray(src(lam), float), (n,))
            sweep.append(
                {
                    "dataset": "cifar10",
                    "model": "m",
                    "prm": name,
                    "lambda": lam,
                    "top1": acc,
                    "iou": v.mean(),
                    "image_iou": v.mean(),
                    "n_images": n,
                    "clean_top1": clean,
                    "chance_iou": 1 / 7,
                }
            )
            images += [
                {
                    "dataset": "cifar10",
                    "model": "m",
                    "prm": name,
                    "lambda": lam,
                    "image_id": f"i{i}",
                    "correct": 1,
                    "iou": x,
                }
                for i, x in enumerate(v)
            ]
    return pd.DataFrame(sweep), pd.DataFrame(images)


def iou_verdict(trained, control, ceiling=0.9, **kw):
    sweep, images = iou_tables(trained, control, **kw)
    (row,) = summary.p3_iou(sweep, images, margin=0.05, n_boot=500, seed=0, ceiling=ceiling)
    return row


def test_p3_iou_beats_the_untrained_prm_within_the_accuracy_margin():
    noise = np.random.default_rng(0).normal(0, 0.05, 40)
    base = lambda lam: np.clip(1 / 7 + 0.6 * lam + noise, 0, 1) if lam < 1 else 1.0  # noqa: E731
    # λ* = 0.3: the largest λ < 1 with top-1 >= 0.90 - 0.05 (0.1: 0.89 and 0.3: 0.86 are within; 0.5: 0.70 is not)
    row = iou_verdict(lambda lam: base(lam) + (0.2 if 0 < lam < 1 else 0), base)
    assert (
        row["verdict"] == "held"
        and "lambda* 0.3" in row["evidence"]
        and row["effect"] == pytest.approx(0.2)
    )
    assert row["ci_low"] > 0 and row["control"].endswith("PRM, same images and lambda")
    assert row["observed"] - row["control_value"] == pytest.approx(
        row["effect"]
    )  # the row is self-consistent
    # the trained PRM moves the gradient *less* onto the lattice than the controls: not held
    assert (
        iou_verdict(lambda lam: base(lam) - (0.2 if 0 < lam < 1 else 0), base)["verdict"]
        == "not held"
    )
    # no better than the untrained PRM (the case: both rise with λ to 1 at λ = 1): inconclusive, never held
    assert iou_verdict(base, base)["verdict"] == "inconclusive"
    # it must beat every control: better than one, equal to the other -> not held overall
    sweep, images = iou_tables(lambda lam: base(lam) + 0.2 * (0 < lam < 1), base)
    images.loc[(images.prm == "fill_only") & (images["lambda"] == 0.3), "iou"] += 0.4
    (row,) = summary.p3_iou(sweep, images, margin=0.05, n_boot=500, seed=0)
    assert row["verdict"] == "not held" and row["control"].startswith("fill_only")


def test_p3_iou_skips_lambdas_where_the_controls_are_saturated():
    # the referee's case: top-1 stays within the margin up to λ 0.999 (what P3 wants of a PRM), but there every
    # PRM's top-k gradient pixels sit on the lattice (controls' per-image IoU 1), so trained - control is 0 by
    # construction; the trained PRM is clearly better (+0.1) wherever the controls leave room
    lambdas = (0, 0.3, 0.5, 0.9, 0.99, 0.999, 1)
    noise = np.random.default_rng(1).normal(0, 0.03, 40)
    ctrl = {0: 0.15, 0.3: 0.25, 0.5: 0.4, 0.9: 0.85, 0.99: 0.97, 0.999: 1.0, 1: 1.0}
    control = lambda lam: np.clip(ctrl[lam] + noise, 0, 1)  # noqa: E731
    better = lambda lam: np.clip(ctrl[lam] + noise + 0.1 * (0 < lam < 1), 0, 1)  # noqa: E731
    kw = dict(lambdas=lambdas, top1=(0.90,) * 7)
    row = iou_verdict(better, control, **kw)
    # λ* = 0.9: the largest λ in (0, 1) with both controls' mean per-image IoU <= 0.9 (0.99: 0.97, 0.999: 1.00)
    assert row["verdict"] == "held" and "lambda* 0.9," in row["evidence"], row["evidence"]
    assert "lambda 0.99, 0.999 within the margin but skipped" in row["evidence"]
    assert row["effect"] == pytest.approx(0.1, abs=0.01) and row["control_value"] == pytest.approx(
        0.85, abs=0.02
    )
    assert row["observed"] - row["control_value"] == pytest.approx(row["effect"])
    # λ* comes from the controls and the trained top-1 only: a trained PRM no better at 0.9 (better at 0.5) is
    # still judged at 0.9, not moved to the λ where it looks best
    partial = lambda lam: control(lam) if lam >= 0.9 else better(lam)  # noqa: E731
    row = iou_verdict(partial, control, **kw)
    assert "lambda* 0.9," in row["evidence"] and row["verdict"] == "inconclusive"
    # every acceptable λ saturated (a ceiling below every control): inconclusive, with the reason
    row = iou_verdict(better, control, ceiling=0.1, **kw)
    assert row["verdict"] == "inconclusive" and "above the ceiling 0.1" in row["evidence"]


def test_p3_iou_pairs_only_images_present_for_both():
    noise = np.random.default_rng(0).normal(0, 0.05, 40)
    base = lambda lam: np.clip(1 / 7 + 0.6 * lam + noise, 0, 1) if lam < 1 else 1.0  # noqa: E731
    sweep, images = iou_tables(lambda lam: base(lam) + 0.2 * (0 < lam < 1), base)
    # the untrained control lost 25 of the 40 images (e.g. a crashed chunk): 15 are paired with it
    lost = (images.prm == "untrained") & images.image_id.isin([f"i{i}" for i in range(25)])
    (row,) = summary.p3_iou(sweep, images[~lost], margin=0.05, n_boot=500, seed=0)
    assert row["verdict"] == "held" and row["effect"] == pytest.approx(0.2)
    assert "over 15 images" in row["evidence"] and "over 40 images" in row["evidence"]
    # 35 of 40 lost: 5 paired images are too few for a verdict, whatever the sweep's n_images says
    lost = (images.prm == "untrained") & images.image_id.isin([f"i{i}" for i in range(35)])
    (row,) = summary.p3_iou(sweep, images[~lost], margin=0.05, n_boot=500, seed=0)
    assert row["verdict"] == "too few images" and row["n_images"] == 5


def test_p3_iou_never_decides_at_lambda_1_and_needs_accuracy():
    # λ = 1 is within the margin and the trained PRM's IoU is higher there, lower everywhere else: λ = 1 is not λ*
    jitter = np.random.default_rng(1).normal(0, 0.01, 40)
    row = iou_verdict(
        lambda lam: 0.9 if lam == 1 else 0.1 + jitter,
        lambda lam: 0.2 if lam < 1 else 0.5,
        top1=(0.90, 0.90, 0.90, 0.90, 0.90),
    )
    assert "lambda* 0.5" in row["evidence"] and row["verdict"] == "not held"
    # every λ in (0, 1) costs more than the margin: no λ to test at -> inconclusive, with the reason
    row = iou_verdict(lambda lam: 0.9, lambda lam: 0.1, top1=(0.90, 0.80, 0.70, 0.60, 0.50))
    assert row["verdict"] == "inconclusive" and "no lambda in (0, 1) keeps" in row["evidence"]
    assert iou_verdict(lambda lam: 0.9, lambda lam: 0.1, n=5)["verdict"] == "too few images"
    sweep, images = iou_tables(lambda lam: 0.9, lambda lam: 0.1, controls=())
    with pytest.raises(ValueError, match="no untrained control"):
        summary.p3_iou(sweep, images, margin=0.05, n_boot=10, seed=0)


def test_render_lists_every_claim_and_the_config():
    claims = pd.DataFrame(
        [
            summary._row("P1", "c1", "cifar10", "m", "held", 20, "e1"),
            summary._row("P3", "c3", "cifar10", "m", "too few images", 2, "e3"),
        ],
        columns=summary.CLAIM_COLUMNS,
    )
    text = summary.render(
        claims,
        {"onepixel_summary": "x", "masked_pgd": "y"},
        config_sha256="abc",
        configfiles=["c.yaml"],
        config_yaml="seed: 7\n",
        git_commit="deadbeef",
    )
    assert (
        "### c1" in text
        and "**held**" in text
        and "**too few images**" in text
        and "seed: 7" in text
    )
    assert (
        "Not run: `ssim.model`" in text
        and "Not run: `synthesis.models`" in text
        and "`c.yaml`" in text
    )
    assert (
        "docs/sources.md" in text.split("| verdict | claims |")[0]
    )  # the sources line, above the counts


def defense_table_rows(effect, shift, n=30):
    """A ``defense.csv`` with one adaptive stochastic-PRM claim: its effect against ``none`` and against
    ``prm_shift_only`` given as (effect, low, high)."""
    from pixelrobust.defense_eval import TABLE_COLUMNS

    cells = [
        ("none", 0.0, "", (np.nan,) * 3, (np.nan,) * 3),
        ("prm_shift_only", 0.1, "none", (0.1, 0.0, 0.2), (np.nan,) * 3),
        ("stochastic_prm", 0.3, "none", effect, shift),
    ]
    rows = [
        {
            "dataset": "cifar10",
            "model": "m",
            "defense": d,
            "attack": "pgd",
            "protocol": "adaptive",
            "n_images": n,
            "draws": 1,
            "n": n,
            "k": int(t * n),
            "top1": t,
            "ci_low": max(t - 0.1, 0),
            "ci_high": t + 0.1,
            "clean_top1": 0.9,
            "reference": r,
            "reference_top1": 0.0,
            "effect": e[0],
            "effect_low": e[1],
            "effect_high": e[2],
            "shift_effect": s[0],
            "shift_effect_low": s[1],
            "shift_effect_high": s[2],
            "defense_rate": np.nan,
            "seconds": 1.0,
        }
        for d, t, r, e, s in cells
    ]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def test_claims_table_reads_every_stage_and_passes_its_settings(tmp_path):
    """summary.claims_table on planted tables of every stage, written to CSV as the rules write them: each stage's
    verdict comes out with its sign (a claim whose data say the opposite is not held), the P2 model and dataset
    are the ones given, and the verdict settings (ordering_max_k, iou_ceiling, defense_margin) reach their claims."""

    from pixelrobust.vulnerability import claims_table as p1_table

    def write(name, frame):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        return str(tmp_path / f"{name}.csv")

    noise = np.random.default_rng(0).normal(0, 0.05, 40)
    base = lambda lam: np.clip(1 / 7 + 0.6 * lam + noise, 0, 1) if lam < 1 else 1.0  # noqa: E731
    better = lambda lam: base(lam) + (0.2 if 0 < lam < 1 else 0)  # noqa: E731
    worse_p2 = comparison_frame(30, 1.0)
    worse_p2.loc[worse_p2.attack == "ssim_ball", "mass_in_topk"] -= 0.5

    def inputs(sign: int) -> dict:
        """sign +1: every stage's data support its claim; -1: every stage's data say the opposite."""
        sweep, images = iou_tables(better, base) if sign > 0 else iou_tables(base, better)
        return {
            "onepixel_summary": "x",
            "onepixel_claims": write(
                f"p1{sign}",
                p1_table(
                    p1_images(
                        30,
                        restricted_success=1 if sign > 0 else 0,
                        random_regions_success=0.3 if sign > 0 else 0.6,
                    ),
                    semantic=SEMANTIC,
                    restricted=RESTRICTED,
                    n_boot=300,
                    seed=0,
                ),
            ),
            "ssim_cam_summary": write(
                f"p2{sign}", summ(comparison_frame(30, 1.0) if sign > 0 else worse_p2)
            ),
            "masked_pgd_images": write(
                f"mp{sign}",
                masked_images(
                    {5: (10, 30), 25: (2, 20), 50: (30, 0)}
                    if sign > 0
                    else {5: (30, 10), 25: (20, 2)}
                ),
            ),
            "prm_lambda_sweep_detail": write(f"sw{sign}", sweep),
            "prm_lambda_sweep_images": write(f"im{sign}", images),
            "defense": write(
                f"d{sign}",
                defense_table_rows((0.3, 0.1, 0.5), (0.2, 0.1, 0.3))
                if sign > 0
                else defense_table_rows((-0.3, -0.5, -0.1), (-0.2, -0.3, -0.1)),
            ),
            "synthesis": write(
                f"s{sign}",
                synthesis_table((0.005, 0.02), (0.02, 0.08))
                if sign > 0
                else synthesis_table((-0.03, -0.01), (-0.08, -0.02)),
            ),
        }

    kw = dict(ssim_model="mobilenet_v2_imagenet", ssim_dataset="imagenet", n_boot=300, seed=0)
    held = summary.claims_table(inputs(+1), **kw)
    assert list(held.columns) == summary.CLAIM_COLUMNS
    by = {(r.paper, r.claim.split()[0]): r for r in held.itertuples()}
    searching = by["P1", "searching"]
    assert searching.verdict == "held" and searching.effect == pytest.approx(0.7)
    assert (held.paper == "P2").sum() == 1 and (held.paper == "Synthesis").sum() == 1
    p2 = held[held.paper == "P2"].iloc[0]
    assert (p2.verdict, p2.model, p2.dataset) == (
        "held",
        "mobilenet_v2_imagenet",
        "imagenet",
    ) and p2.effect > 0
    p3 = held[held.paper == "P3"].set_index("claim")
    ordering = [c for c in p3.index if c.startswith("ordering: L-inf")]
    assert len(p3) == 3 and len(ordering) == 1, (
        p3.index.tolist()
    )  # the L-inf ordering, the IoU and the defence claim
    assert (p3.verdict == "held").all() and (p3.effect > 0).all(), p3[["verdict", "effect"]]
    assert (
        held[held.paper == "Synthesis"].verdict.tolist() == ["held"]
        and (held.effect[held.paper != "P1"] > 0).all()
    )
    # the same stages with data that say the opposite: not held, with a negative effect, every one
    lost = summary.claims_table(inputs(-1), **kw)
    decided = lost[lost.claim.isin(held.claim)].set_index(["paper", "claim"])
    main = decided.drop(
        index=[(p, c) for p, c in decided.index if p == "P1" and not c.startswith("searching")]
    )
    assert (main.verdict == "not held").all() and (main.effect < 0).all(), main[
        ["verdict", "effect"]
    ]
    assert len(main) == len(held) - 2  # P1's other two claims have no planted direction here
    # the settings reach their claims: k = 50 (top hurts less there) counts once the verdict's k reaches it ...
    wide = summary.claims_table(inputs(+1), **kw, ordering_max_k=50)
    assert wide.set_index("claim").loc[ordering[0], "verdict"] == "not held"
    # ... every λ above a 0.1 IoU ceiling leaves the IoU claim without a λ, and a defence margin above the
    # planted effect's interval (0.1 to 0.5 against none) makes the defence claim not held
    t = summary.claims_table(inputs(+1), **kw, iou_ceiling=0.1, defense_margin=0.6).set_index(
        "claim"
    )
    iou = [c for c in t.index if "lattice" in c or "IoU" in c]
    defends = [c for c in t.index if c.startswith("the stochastic PRM defends")]
    assert (
        len(iou) == 1
        and t.loc[iou[0], "verdict"] == "inconclusive"
        and "above the ceiling 0.1" in t.loc[iou[0], "evidence"]
    )
    assert (
        len(defends) == 1
        and t.loc[defends[0], "verdict"] == "not held"
        and "margin 0.6" in t.loc[defends[0], "evidence"]
    )
    # ... and the accuracy margin picks λ*: 0.3 at the default 0.05 (top-1 0.86 >= 0.90 - 0.05), 0.5 at 0.25
    # (0.70 >= 0.65), 0.1 at 0.02 (0.89 >= 0.88)
    for margin, lam in ((0.05, "0.3"), (0.25, "0.5"), (0.02, "0.1")):
        t = summary.claims_table(inputs(+1), **kw, iou_margin=margin).set_index("claim")
        evidence = t.loc[[c for c in t.index if "lattice" in c or "IoU" in c][0], "evidence"]
        assert f"lambda* {lam}," in evidence and f"- {margin:g} and" in evidence, evidence
    # a stage whose key is missing did not run: no row
    assert not (
        summary.claims_table({k: v for k, v in inputs(+1).items() if k != "synthesis"}, **kw).paper
        == "Synthesis"
    ).any()


# ---- P2: the SSIM-ball claim (summary.p2_claims) on planted comparisons (helpers.p2) ----------------


def test_p2_verdict_needs_the_grid_diagnostic_to_pass():
    ok = summary.p2_claims(summ(comparison_frame(30, 1.0)), "m", "imagenet")[0]
    # SSIM ball beats both baselines on the energy share; the binding (smaller) effect is against PGD L2: 0.1
    assert ok["verdict"] == "held" and ok["effect"] == pytest.approx(0.1) and ok["ci_low"] > 0
    assert ok["control"].startswith("pgd_l2") and ok["observed"] > ok["control_value"]
    artefact = summary.p2_claims(summ(comparison_frame(30, 0.02)), "m", "imagenet")[0]
    assert artefact["verdict"] == "inconclusive" and "grid artefact" in artefact["evidence"]
    worse = comparison_frame(30, 1.0)
    worse.loc[worse.attack == "ssim_ball", "mass_in_topk"] -= 0.5
    lost = summary.p2_claims(summ(worse), "m", "imagenet")[0]
    assert lost["verdict"] == "not held"
    mixed = comparison_frame(30, 1.0)
    mixed.loc[mixed.attack == "ssim_ball", "mass_in_topk"] -= (
        0.15  # beats L∞ PGD (+0.05), loses to L2 (-0.05)
    )
    assert summary.p2_claims(summ(mixed), "m", "imagenet")[0]["verdict"] == "not held"
    only_linf = summary.p2_claims(summ(mixed, baselines=["pgd_linf"]), "m", "imagenet")[0]
    # L2 PGD not listed: held (L∞ +0.05, budget map +0.03, the weaker one headlines), L2 not quoted
    assert only_linf["verdict"] == "held" and only_linf["effect"] == pytest.approx(0.03)
    assert "vs pgd_l2" not in only_linf["evidence"]


def test_p2_headline_is_the_test_that_decides():
    mixed = comparison_frame(30, 1.0)
    mixed.loc[mixed.attack == "ssim_ball", "mass_in_topk"] -= (
        0.15  # L∞ +0.05 held (lowest ci_low), L2 −0.05 not held
    )
    row = summary.p2_claims(summ(mixed), "m", "imagenet")[0]
    assert row["verdict"] == "not held" and row["control"].startswith("pgd_l2")
    assert row["effect"] == pytest.approx(-0.05) and row["ci_high"] < 0
    # the referee's case: a noisy baseline gives an inconclusive test with the lowest ci_low; the not-held test decides
    noisy = mixed.copy()
    linf = noisy.attack == "pgd_linf"
    noisy.loc[linf, "mass_in_topk"] += np.random.default_rng(1).normal(0, 1, linf.sum())
    s = summ(noisy)
    p = s[s.primary & (s.baseline != "")].set_index("baseline")
    assert p.loc["pgd_linf", "verdict"] == "no clear difference" and p.ci_low.idxmin() == "pgd_linf"
    row = summary.p2_claims(s, "m", "imagenet")[0]
    assert (
        row["verdict"] == "not held" and row["control"].startswith("pgd_l2") and row["ci_high"] < 0
    )
    worse = comparison_frame(30, 1.0)
    worse.loc[worse.attack == "ssim_ball", "mass_in_topk"] -= (
        0.5  # all three not held (L∞ −0.3, L2 −0.4, budget −0.32)
    )
    row = summary.p2_claims(summ(worse), "m", "imagenet")[0]
    assert row["control"].startswith("pgd_l2") and row["effect"] == pytest.approx(
        -0.4
    )  # the clearest: smallest ci_high


def test_p2_verdict_is_not_held_when_the_ssim_ball_equals_its_budget_map():
    frame = comparison_frame(30, 1.0)
    ball = frame[frame.attack == "ssim_ball"].set_index(["image_id", "map"]).mass_in_topk
    budget = frame.attack == BUDGET
    frame.loc[budget, "mass_in_topk"] = [
        ball[(i, m)] for i, m in zip(frame[budget].image_id, frame[budget]["map"])
    ]
    row = summary.p2_claims(summ(frame), "m", "imagenet")[
        0
    ]  # beats both PGD baselines, ties its budget map
    assert (
        row["verdict"] == "inconclusive"
        and row["control"].startswith("its budget map")
        and row["effect"] == 0
    )
    assert (
        "budget map 0." in row["evidence"]
        and "sensitivity (sliding 7x7 1 - SSIM map)" in row["evidence"]
    )
    frame.loc[budget, "mass_in_topk"] += (
        0.05  # the budget map alone is more aligned with the CAM: not held
    )
    assert summary.p2_claims(summ(frame), "m", "imagenet")[0]["verdict"] == "not held"
    with pytest.raises(ValueError, match="budget-map rows"):
        summ(frame[~budget])


def test_p2_verdict_is_withheld_when_success_rates_differ():
    row = summary.p2_claims(
        summ(comparison_frame(30, 1.0, success={"pgd_l2": 27})), "m", "imagenet"
    )[0]
    assert row["verdict"] == "held"  # 1.00 vs 0.90: within the tolerance 0.15
    assert "pgd_l2 0.90" in row["evidence"] and "ssim_ball 1.00" in row["evidence"]
    frame = comparison_frame(30, 1.0, success={"pgd_l2": 20})  # 1.00 vs 0.67: more than 0.15 apart
    s = summ(frame)
    assert (
        s[(s.metric == "success_rate") & (s.attack == "pgd_l2")].verdict.iloc[0] == SUCCESS_DIFFERS
    )
    row = summary.p2_claims(s, "m", "imagenet")[0]
    assert row["verdict"] == "inconclusive" and "success rate of pgd_l2 differs" in row["evidence"]
    assert summary.p2_claims(summ(frame, tol=0.4), "m", "imagenet")[0]["verdict"] == "held"
    # a differing success rate takes out only that PGD baseline's test: the model-free budget-map test still
    # decides, so an SSIM ball below its own budget map is not held, not hidden as inconclusive
    below = frame.copy()
    ball = (below.attack == "ssim_ball") & (below["map"] == "energy")
    below.loc[ball, "mass_in_topk"] -= (
        0.3  # now base - 0.1: below the budget map (base + 0.02) on every image
    )
    row = summary.p2_claims(summ(below), "m", "imagenet")[0]
    assert row["verdict"] == "not held" and row["control"].startswith("its budget map"), row[
        "control"
    ]


def _segment(evidence: str, start: str, end: str = "; sensitivity") -> str:
    return evidence.split(start, 1)[1].split(end, 1)[0]


def test_p2_evidence_reads_the_grid_and_sensitivity_rows_it_names():
    """The planted frame: L∞ PGD's grid ratio ~1, L2's ~1, the SSIM ball's 0.02 (an artefact); on the sliding
    map the energy shares differ by +0.2 (L∞) and +0.1 (L2) on every image. The evidence quotes exactly those
    rows, whatever the row order of the summary."""
    s = summ(comparison_frame(30, 0.02))
    for table in (s, s.iloc[::-1].reset_index(drop=True)):
        row = summary.p2_claims(table, "m", "imagenet")[0]
        assert (
            row["verdict"] == "inconclusive"
            and "verdict withheld: grid artefact" in row["evidence"]
        )
        ball, controls = _segment(
            row["evidence"], "grid diagnostic: SSIM-ball aligned/straddling 1 - SSIM ratio "
        ).split("; ")
        assert float(ball.split()[0]) == pytest.approx(0.02, rel=0.1) and ball.endswith(
            f", {GRID_ARTEFACT}"
        )
        names = [c.split()[0] for c in controls.split(", ")]
        assert sorted(names) == ["pgd_l2", "pgd_linf"]
        assert all(abs(float(c.split()[1]) - 1) < 0.1 for c in controls.split(", "))
        sens = _segment(row["evidence"], "; sensitivity (sliding 7x7 1 - SSIM map): ", "; ")
        assert sorted(re.findall(r"vs (\S+) ([+-][\d.]+) \(", sens)) == [
            ("pgd_l2", "+0.1"),
            ("pgd_linf", "+0.2"),
        ]
        # the grid artefact makes every test inconclusive, and each is quoted so
        assert (
            _segment(
                row["evidence"], "SSIM ball minus control paired over images: ", "; shares"
            ).count("), inconclusive")
            == 3
        )
    ok = summary.p2_claims(
        summ(comparison_frame(30, 1.0)).iloc[::-1].reset_index(drop=True), "m", "imagenet"
    )[0]
    assert (
        ok["verdict"] == "held"
        and "withheld" not in ok["evidence"]
        and "1 - SSIM ratio 1" in ok["evidence"]
    )


def test_p2_too_few_images_is_not_turned_into_inconclusive():
    """6 images: too few for any test; a grid artefact or a differing success rate cannot make that inconclusive."""
    for frame in (comparison_frame(6, 0.02), comparison_frame(6, 1.0, success={"pgd_l2": 2})):
        row = summary.p2_claims(summ(frame, 200), "m", "imagenet")[0]
        assert row["verdict"] == "too few images" and "withheld" not in row["evidence"]


def test_p2_success_withheld_test_is_quoted_as_inconclusive():
    row = summary.p2_claims(
        summ(comparison_frame(30, 1.0, success={"pgd_l2": 20})), "m", "imagenet"
    )[0]
    assert row["verdict"] == "inconclusive"
    detail = _segment(row["evidence"], "paired over images: ", "; shares")
    assert [x.rsplit(", ", 1)[1] for x in detail.split("; ")] == [
        "held",
        "inconclusive",
        "held",
    ]  # L∞, L2, budget


def test_p2_on_the_sliding_map_quotes_no_sensitivity_check_of_itself():
    row = summary.p2_claims(summ(comparison_frame(30, 1.0), map="sliding_ssim"), "m", "imagenet")[0]
    assert row["verdict"] == "held" and "sliding_ssim map" in row["statistic"]
    assert "sensitivity" not in row["evidence"]


def test_p2_without_a_paired_comparison_is_too_few_images():
    s = summ(comparison_frame(30, 1.0))
    (row,) = summary.p2_claims(s[s.baseline == ""], "m", "cifar10")
    assert (row["paper"], row["dataset"], row["model"], row["verdict"], row["n_images"]) == (
        "P2",
        "cifar10",
        "m",
        "too few images",
        0,
    )
    assert row["claim"] == summary.P2_CLAIM and "no paired comparison" in row["evidence"]


def test_p2_claim_without_grid_rows_says_the_diagnostic_is_missing():
    """A summary from an older or edited table without the grid-diagnostic rows still gives the claim, saying so
    (not an IndexError): the diagnostic is what withholds a window-grid artefact, so its absence is stated."""
    from pixelrobust.summary import p2_claims

    s = summ(comparison_frame(30, 1.0))
    without = s[s.metric != "grid_ratio"]
    assert len(without) < len(s)
    (row,) = p2_claims(without, "m", "imagenet")
    assert "grid diagnostic missing" in row["evidence"]


# ---- P3: p3_defense's decisions, each against a planted table whose right answer is known (mutation testing) ----


def _claim_table(
    effect,
    low,
    high,
    n=20,
    shift=(0.2, 0.1, 0.3),
    protocol="graybox",
    transfer_high=0.6,
    top1=0.5,
    gray_top1=0.9,
    transfer_top1=0.3,
):
    """One stochastic-PRM claim: its effect against the reference (``effect, low, high``) and against
    prm_shift_only (``shift``); transfer_none at 0.3 (Wilson up to ``transfer_high``) against a clean 0.9."""
    ref = "transfer_none" if protocol == "graybox" else "none"
    cells = [
        ("stochastic_prm", "clean", protocol, 0.9, "none", (-0.1, -0.2, 0.0), (np.nan,) * 3, 0.9),
        ("stochastic_prm", "pgd", protocol, top1, ref, (effect, low, high), shift, top1 + 0.1),
        ("prm_shift_only", "pgd", protocol, 0.4, ref, (0.1, 0.0, 0.2), (np.nan,) * 3, 0.6),
        ("none", "pgd", protocol, 0.0, "", (np.nan,) * 3, (np.nan,) * 3, 0.1),
    ]
    if protocol == "graybox":
        cells.append(
            (
                "transfer_none",
                "pgd",
                "graybox",
                transfer_top1,
                "none",
                (0.3, 0.1, 0.5),
                (np.nan,) * 3,
                transfer_high,
            )
        )
    else:
        cells.append(
            (
                "stochastic_prm",
                "pgd",
                "graybox",
                gray_top1,
                "transfer_none",
                (0.5, 0.3, 0.7),
                (0.5, 0.3, 0.7),
                1.0,
            )
        )
    rows = []
    for d, a, p, t1, r, (e, el, eh), (s_, sl, sh), hi in cells:
        rows.append(
            {
                "dataset": "cifar10",
                "model": "m",
                "defense": d,
                "attack": a,
                "protocol": p,
                "n_images": n,
                "draws": 2,
                "n": 2 * n,
                "k": int(t1 * 2 * n),
                "top1": t1,
                "ci_low": max(t1 - 0.2, 0),
                "ci_high": hi,
                "clean_top1": 0.9,
                "reference": r,
                "reference_top1": 0.3 if r == "transfer_none" else 0.0,
                "effect": e,
                "effect_low": el,
                "effect_high": eh,
                "shift_effect": s_,
                "shift_effect_low": sl,
                "shift_effect_high": sh,
                "defense_rate": np.nan,
                "seconds": 1.0,
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


# headline: which test's (effect, low, high) the row carries (stats.binding): the clearest failure, else the
# weakest inconclusive or held test (smallest lower bound)
@pytest.mark.parametrize(
    "effect, low, high, shift, n, verdict, headline",
    [
        (
            0.2,
            0.1,
            0.35,
            (0.2, 0.12, 0.3),
            20,
            "held",
            "transfer",
        ),  # beats the transfer control and the shift-only one
        (
            0.2,
            0.12,
            0.35,
            (0.2, 0.1, 0.3),
            20,
            "held",
            "shift",
        ),  # the same, the shift-only test the weaker
        (
            0.2,
            0.1,
            0.35,
            (0.0, -0.04, 0.04),
            20,
            "not held",
            "shift",
        ),  # no better than a random shift: below the margin
        (
            -0.2,
            -0.35,
            -0.1,
            (0.2, 0.1, 0.3),
            20,
            "not held",
            "transfer",
        ),  # worse than the undefended classifier
        (
            0.05,
            -0.1,
            0.2,
            (0.2, 0.1, 0.3),
            20,
            "inconclusive",
            "transfer",
        ),  # no clear difference is never "not held"
        (0.2, 0.1, 0.35, (0.2, 0.12, 0.3), 8, "too few images", "transfer"),
        (0.2, 0.12, 0.35, (0.2, 0.1, 0.3), 8, "too few images", "shift"),
    ],
)
def test_defence_verdict_per_attack(effect, low, high, shift, n, verdict, headline):
    rows = p3_defense(_claim_table(effect, low, high, n, shift), min_effect=0.05)
    assert (
        len(rows) == 1
    )  # one claim per (model, attack, protocol); none, controls and clean are not claims
    r = rows[0]
    assert (
        r["verdict"] == verdict and r["claim"] == "the stochastic PRM defends against pgd (graybox)"
    )
    assert (
        "clean top-1 0.90" in r["evidence"]
        and "prm_shift_only" in r["evidence"]
        and "margin 0.05" in r["evidence"]
    )
    # the headline is the test that decides, with its sign (positive = the PRM keeps more images right)
    assert (r["effect"], r["ci_low"], r["ci_high"]) == (
        (effect, low, high) if headline == "transfer" else shift
    )
    assert r["observed"] == 0.5 and (verdict != "held" or r["ci_low"] > 0.05)
    if shift[2] < 0.05:
        assert (r["control"], r["ci_low"], r["ci_high"]) == ("prm_shift_only", shift[1], shift[2])
    elif n >= 10 and verdict != "held":
        assert (r["control"], r["control_value"], r["ci_low"], r["ci_high"]) == (
            "transfer_none",
            0.3,
            low,
            high,
        )


def test_graybox_claim_without_transfer_has_no_power():
    """transfer_none's interval covers the clean top-1 (0.9): the stand-in's images did not transfer, so a
    negative effect against transfer_none restates the clean cost: inconclusive, with the reason."""
    r = p3_defense(_claim_table(-0.2, -0.35, -0.1, transfer_high=0.95), min_effect=0.05)[0]
    assert r["verdict"] == "inconclusive" and "no power" in r["evidence"]
    assert (
        p3_defense(_claim_table(-0.2, -0.35, -0.1, transfer_high=0.85), min_effect=0.05)[0][
            "verdict"
        ]
        == "not held"
    )
    # transferred, but to 0.86 against the PRM's clean 0.9: at most +0.04 to gain, under the 0.05 margin: no power
    r = p3_defense(
        _claim_table(-0.2, -0.35, -0.1, transfer_top1=0.86, transfer_high=0.88), min_effect=0.05
    )[0]
    assert r["verdict"] == "inconclusive" and "no power" in r["evidence"]
    # no power against transfer_none does not hide the shift-only test, which has its power on the same images:
    # the PRM clearly below its own random-shift component is not held
    r = p3_defense(
        _claim_table(-0.2, -0.35, -0.1, shift=(-0.2, -0.32, -0.09), transfer_high=0.95),
        min_effect=0.05,
    )[0]
    assert (
        r["verdict"] == "not held"
        and "no power" in r["evidence"]
        and r["control"] == "prm_shift_only"
    )


def test_adaptive_claim_at_the_undefended_level_is_not_held():
    """Adaptive PGD drives none to 0.00: a defence also at 0.00 has effect 0 [0, 0]; with the margin that is
    "not held" (without it the claim could never fail)."""
    table = _claim_table(
        0.0, 0.0, 0.0, shift=(0.0, 0.0, 0.0), protocol="adaptive", top1=0.0
    )  # shift-only at 0.00 too
    r = p3_defense(table, min_effect=0.05)[0]
    assert (
        r["verdict"] == "not held"
        and r["claim"] == "the stochastic PRM defends against pgd (adaptive, EOT)"
    )
    assert (
        p3_defense(
            _claim_table(0.0, 0.0, 0.0, shift=(0.0, 0.0, 0.0), protocol="adaptive", top1=0.0),
            min_effect=0.0,
        )[0]["verdict"]
        == "inconclusive"
    )


def test_adaptive_rows_name_the_eot_draws():
    """The adaptive rows say how many EOT draws the attack averaged (few draws weaken it on the randomised
    defences: a known bias of the CPU default, docs/decisions.md); gray-box rows have no EOT."""
    adaptive = _claim_table(0.2, 0.1, 0.3, protocol="adaptive", top1=0.3, gray_top1=0.4)
    assert "EOT 4 draws per attack step" in p3_defense(adaptive, eot_samples=4)[0]["evidence"]
    assert "EOT" not in p3_defense(_claim_table(0.2, 0.1, 0.3), eot_samples=4)[0]["evidence"]


def test_adaptive_weaker_than_graybox_is_flagged():
    weak = p3_defense(
        _claim_table(0.2, 0.1, 0.3, protocol="adaptive", top1=0.6, gray_top1=0.4), min_effect=0.05
    )[0]
    assert "weaker than transfer" in weak["evidence"]
    strong = p3_defense(
        _claim_table(0.2, 0.1, 0.3, protocol="adaptive", top1=0.3, gray_top1=0.4), min_effect=0.05
    )[0]
    assert "weaker than transfer" not in strong["evidence"]


def test_defence_claim_names_its_controls_and_their_values():
    """Both tests held; the shift-only one (lower bound 0.10 < 0.12) decides the headline, so the row's
    control is prm_shift_only at its own top-1 (0.4 in the table), and no "control missing" note."""
    r = p3_defense(_claim_table(0.2, 0.12, 0.35, shift=(0.2, 0.1, 0.3)), min_effect=0.05)[0]
    assert r["verdict"] == "held" and (r["dataset"], r["model"]) == ("cifar10", "m")
    assert (r["control"], r["control_value"], r["effect"], r["ci_low"], r["ci_high"]) == (
        "prm_shift_only",
        0.4,
        0.2,
        0.1,
        0.3,
    )
    assert r["statistic"].startswith("top-1 minus the shift-only randomisation's")
    assert "shift-only control missing" not in r["evidence"]
    assert "undefended on images crafted on it 0.00" in r["evidence"]  # the none row of the table
    # the reference test decides: transfer_none at its top-1 (0.3)
    r = p3_defense(_claim_table(0.2, 0.1, 0.35, shift=(0.2, 0.12, 0.3)), min_effect=0.05)[0]
    assert (r["control"], r["control_value"], r["effect"]) == ("transfer_none", 0.3, 0.2)
    assert r["statistic"].startswith("top-1 minus transfer_none's")


def test_defence_claim_without_the_shift_only_control_is_undecided():
    """A table from before prm_shift_only was run: without that test the claim cannot be held."""
    table = _claim_table(0.2, 0.12, 0.35)
    no_row = table[table.defense != "prm_shift_only"].assign(
        shift_effect=np.nan, shift_effect_low=np.nan, shift_effect_high=np.nan
    )
    no_cols = no_row.drop(columns=["shift_effect", "shift_effect_low", "shift_effect_high"])
    nan_effect = table.assign(
        shift_effect=np.nan, shift_effect_low=np.nan, shift_effect_high=np.nan
    )  # row kept
    for t in (no_row, no_cols, nan_effect):
        r = p3_defense(t, min_effect=0.05)[0]
        assert r["verdict"] == "inconclusive" and "shift-only control missing" in r["evidence"]
    assert p3_defense(None) == [] and p3_defense(table.drop(columns=["effect"])) == []


def test_defence_reference_test_uses_the_margin():
    """Against transfer_none +0.10 (+0.02 to +0.20): above 0 but not above the 0.05 margin: inconclusive,
    although the shift-only test holds; with margin 0 both hold."""
    table = _claim_table(0.1, 0.02, 0.2, shift=(0.2, 0.1, 0.3))
    r = p3_defense(table, min_effect=0.05)[0]
    assert r["verdict"] == "inconclusive" and (r["control"], r["ci_low"]) == ("transfer_none", 0.02)
    assert p3_defense(table, min_effect=0.0)[0]["verdict"] == "held"


def test_defence_without_power_keeps_each_tests_own_numbers():
    """No power against transfer_none (its interval reaches the clean 0.9), the shift-only test held: the claim
    is inconclusive, and its headline is the transfer_none test (the inconclusive one) with its own numbers."""
    r = p3_defense(
        _claim_table(-0.2, -0.35, -0.1, shift=(0.2, 0.1, 0.3), transfer_high=0.9), min_effect=0.05
    )[0]
    assert (
        r["verdict"] == "inconclusive" and "no power" in r["evidence"]
    )  # the interval touching 0.9 counts
    assert (r["control"], r["control_value"], r["effect"], r["ci_low"], r["ci_high"]) == (
        "transfer_none",
        0.3,
        -0.2,
        -0.35,
        -0.1,
    )
    # room exactly at the margin (0.9 - transfer_top1 == min_effect) is no power either
    margin = 0.9 - 0.65
    r = p3_defense(
        _claim_table(-0.5, -0.6, -0.4, shift=(0.3, 0.26, 0.35), transfer_top1=0.65),
        min_effect=margin,
    )[0]
    assert r["verdict"] == "inconclusive" and "no power" in r["evidence"]
    r = p3_defense(
        _claim_table(-0.5, -0.6, -0.4, shift=(0.3, 0.26, 0.35), transfer_top1=0.64),
        min_effect=margin,
    )[0]
    assert r["verdict"] == "not held" and "no power" not in r["evidence"]
    # the evidence quotes each test with its own numbers and verdict, and the clean cost with its sign
    ev = p3_defense(
        _claim_table(-0.2, -0.35, -0.1, shift=(0.2, 0.1, 0.3), transfer_high=0.9), min_effect=0.05
    )[0]["evidence"]
    assert "against transfer_none 0.30: -0.20 (-0.35 to -0.10), inconclusive;" in ev
    assert "against prm_shift_only 0.40: +0.20 (+0.10 to +0.30), held;" in ev
    assert ev.endswith(
        "clean top-1 0.90 against 0.00 undefended (cost +0.10, -0.00 to +0.20)"
    )  # clean effect -0.1 (-0.2, 0)
    assert "the stochastic PRM on those images" not in ev  # no prm_on_classifier row in this table
    # too few images stays too few images, with or without power
    assert (
        p3_defense(_claim_table(-0.2, -0.35, -0.1, n=8, transfer_high=0.95), min_effect=0.05)[0][
            "verdict"
        ]
        == "too few images"
    )


def test_graybox_claim_quotes_the_prm_on_the_classifiers_images():
    table = _claim_table(0.2, 0.1, 0.35)
    extra = table[table.defense == "none"].assign(defense="prm_on_classifier", top1=0.7)
    r = p3_defense(pd.concat([table, extra], ignore_index=True), min_effect=0.05)[0]
    assert (
        "undefended on images crafted on it 0.00; the stochastic PRM on those images 0.70"
        in r["evidence"]
    )


def test_adaptive_equal_to_graybox_is_not_flagged():
    same = p3_defense(
        _claim_table(0.2, 0.1, 0.3, protocol="adaptive", top1=0.4, gray_top1=0.4), min_effect=0.05
    )[0]
    assert "weaker than transfer" not in same["evidence"]


def test_defence_claims_keep_the_tables_model_order():
    a, b = _claim_table(0.2, 0.1, 0.35), _claim_table(-0.2, -0.35, -0.1)
    rows = p3_defense(
        pd.concat([a.assign(model="z"), b.assign(model="a")], ignore_index=True), min_effect=0.05
    )
    assert [(r["model"], r["verdict"]) for r in rows] == [("z", "held"), ("a", "not held")]


# ---- what a config leaves out (summary.left_out, summary.summary) --------------------------------------------


def test_summary_names_what_the_config_leaves_out():
    """A model or attack a stage leaves out loses its claim rows: SUMMARY says so under the section, so a
    smaller config (the CPU-sized default) does not drop a claim silently."""
    pair = {"standard": "a", "robust": "r"}
    config = {
        "models": {"a": {}, "b": {}, "c": {}, "r": {}},
        "robust_compare": {"pairs": [pair]},
        "onepixel": {"models": ["a"]},
        "masked_pgd": {"models": ["a", "b", "c"]},
        "prm": {"models": []},  # off: "Not run" covers it, no "left out" line
        "defense_eval": {
            "models": ["a", "b"],
            "attacks": ["pgd", "cw"],
            "attack_settings": {"onepixel": {}, "cw": {}, "pgd": {}},
        },
        "synthesis": {"models": ["a", "c"]},
    }
    got = summary.left_out(config)
    assert got == {  # the robust model r is never "left out" (it is not one of the papers' models)
        "P1": [
            "it runs the one-pixel search (`onepixel.models`) on a, not on b, c (models it defines)"
        ],
        "P3": [
            "it runs the defence table (`defense_eval.models`) on a, b, not on c (models it defines)",
            "the defence table (`defense_eval.attacks`) runs pgd, cw, not onepixel "
            "(attacks with settings in `defense_eval.attack_settings`)",
        ],
        "Synthesis": [
            "it runs the synthesis (`synthesis.models`) on a, c, not on b (models it defines)"
        ],
    }
    config["defense_eval"]["models"] = []  # no defence table: its attacks are not "left out" either
    assert "P3" not in summary.left_out(config)
    claims = pd.DataFrame(
        [summary._row("P1", "c1", "cifar10", "a", "held", 20, "e1")], columns=summary.CLAIM_COLUMNS
    )
    text = summary.render(
        claims,
        {"onepixel_summary": "x"},
        config_sha256="abc",
        configfiles=["c.yaml"],
        config_yaml="seed: 7\n",
        git_commit="deadbeef",
        absent=got,
    )
    p1 = text.split("## P1")[1].split("## P2")[0]
    assert (
        "Left out by this config: it runs the one-pixel search (`onepixel.models`) on a, not on b, c "
        "(models it defines). The claim rows of what it leaves out are absent, not failed"
        in p1
        and "### c1" in p1
    )
    assert "gpu.yaml" not in text  # no claim about what another config runs
    synthesis = text.split("## Synthesis")[1]
    assert (
        "(`synthesis.models`) on a, c, not on b" in synthesis
        and "Not run: `synthesis.models`" in synthesis
    )
    assert "Left out" not in text.split("## P2")[1].split("## P3")[0]


def test_summary_md_carries_the_left_out_note(tmp_path):
    """The rule's own entry point (``summary.summary``) writes the note into SUMMARY.md for a config that runs
    a stage on some of its models only, and none for one whose stages run every model."""
    config = {
        "models": {"a": {}, "b": {}},
        "onepixel": {"models": ["a"]},
        "masked_pgd": {"models": ["a", "b"], "verdict_max_k": 25},
        "ssim": {"model": "b"},
        "prm": {
            "models": ["a", "b"],
            "sweep": {"accuracy_margin": 0.05, "control_iou_ceiling": 0.9},
        },
        "defense_eval": {"models": [], "min_effect": 0.05},
    }

    def md(name, cfg):
        out = {"md": str(tmp_path / f"{name}.md"), "claims": str(tmp_path / f"{name}.csv")}
        summary.summary(
            inputs={}, out=out, config=cfg, config_sha256="x", configfiles=["c.yaml"],
            ssim_dataset="imagenet", n_boot=10, seed=0,
        )  # fmt: skip
        return (tmp_path / f"{name}.md").read_text()

    p1 = md("restricted", config).split("## P1")[1].split("## P2")[0]
    assert (
        "Left out by this config: it runs the one-pixel search (`onepixel.models`) on a, not on b"
        in p1
    )
    config["onepixel"]["models"] = ["a", "b"]
    assert "Left out" not in md("full", config)


# ---- the robust-vs-standard study in SUMMARY.md and on the front page (helpers.robust) ---------------------


def test_summary_and_front_page_show_the_study_apart_from_the_claims():
    from pixelrobust import summary

    std, rob = p1_maps(20, [6] * 20, seed=1), p1_maps(20, [1] * 4 + [0] * 16, seed=2)
    table, _ = rc.compare_pair(
        "s", "r", "cifar10", p1=(std, rob), k_percent=10, border=0.25, max_k=25, n_boot=200, seed=0
    )
    claims = pd.DataFrame(columns=summary.CLAIM_COLUMNS)
    text = summary.render(
        claims,
        {},
        config_sha256="x",
        configfiles=[],
        config_yaml="a: 1",
        git_commit="c",
        robust=table,
    )
    section = text[text.index("## Robust vs standard (ours)") : text.index("## Config")]
    assert (
        "not a claim of any of the three papers" in section
        and "### s (standard) vs r (robust), cifar10" in section
    )
    # one Markdown row per comparison, each with its verdict in bold
    assert section.count("\n| P1 one-pixel |") == len(table)
    assert (
        "| breakable by one pixel | the robust model can be broken by one pixel on fewer images | **held** |"
        in section
    )
    assert "Robust vs standard" not in summary.render(
        claims, {}, config_sha256="x", configfiles=[], config_yaml="a: 1", git_commit="c"
    )
    page = summary.front_page(
        claims, config_sha256="x", configfiles=[], git_commit="c", robust=table
    )
    assert "Robust vs standard (ours)" in page and page.count("breakable by one pixel") == 1


def test_inconclusive_rows_say_what_effect_the_run_could_have_held():
    # interval -0.1 to +0.1 around threshold 0: 1.43 x the half width 0.1 (stats.detectable_effect)
    row = functools.partial(summary._row, "P1")
    claims = pd.DataFrame(
        [
            row(
                "c1", "cifar10", "m", "inconclusive", 20, "e1", effect=0.0, ci_low=-0.1, ci_high=0.1
            ),
            row("c2", "cifar10", "m", "held", 20, "e2", effect=0.3, ci_low=0.2, ci_high=0.4),
            # threshold 0.05: the effect must reach 0.05 + 1.43 x 0.06 = 0.136 (not 0.086)
            row(
                "c3",
                "cifar10",
                "m",
                "inconclusive",
                20,
                "e3",
                effect=0.06,
                ci_low=0.0,
                ci_high=0.12,
                threshold=0.05,
            ),
            # withheld for another reason: its own interval lies below the threshold, so more images would not
            # decide it and no figure is given
            row(
                "c4",
                "cifar10",
                "m",
                "inconclusive",
                20,
                "e4",
                effect=-0.2,
                ci_low=-0.35,
                ci_high=-0.1,
                threshold=0.05,
            ),
            # a zero-width interval on the threshold: no spread to size
            row(
                "c5", "cifar10", "m", "inconclusive", 20, "e5", effect=0.0, ci_low=0.0, ci_high=0.0
            ),
            # an exact interval's own figure wins; inf: too few images differ
            row(
                "c6",
                "cifar10",
                "m",
                "inconclusive",
                20,
                "e6",
                effect=0.0,
                ci_low=-0.2,
                ci_high=0.2,
                detectable=float("inf"),
            ),
        ],
        columns=summary.CLAIM_COLUMNS,
    )
    det = claims.set_index("claim").detectable
    assert det["c1"] == pytest.approx(0.1429, abs=1e-3) and det["c3"] == pytest.approx(
        0.0858, abs=1e-3
    )
    assert (
        np.isnan(det["c2"]) and np.isnan(det["c4"]) and np.isnan(det["c5"]) and np.isinf(det["c6"])
    )
    assert claims.set_index("claim").threshold["c3"] == 0.05
    text = summary.render(
        claims,
        {"onepixel_summary": "x"},
        config_sha256="a",
        configfiles=[],
        config_yaml="",
        git_commit="b",
    )
    cells = {c: text.split(f"### {c}\n")[1].split("###")[0] for c in det.index}
    assert "held needs a true effect ≥ +0.14 (80 % power)" in cells["c1"]
    assert "held needs a true effect ≥ +0.14 (80 % power)" in cells["c3"]  # 0.05 + 0.086
    assert "too few images differ for any effect to be held" in cells["c6"]
    assert not any("underpowered" in cells[c] for c in ("c2", "c4", "c5"))


def test_defence_rows_carry_the_margin_and_the_exact_detectable_effect():
    """A 0/1 defence effect (one draw) gets the exact figure from its discordant images, against the margin."""
    table = defense_table_rows((0.0, -0.15, 0.2), (0.05, -0.1, 0.25), n=40)
    table["effect_discordant"] = [np.nan, np.nan, 6]
    table["shift_discordant"] = [np.nan, np.nan, 10]
    rows = summary.p3_defense(table, min_effect=0.05)
    assert len(rows) == 1
    r = rows[0]
    assert r["verdict"] == "inconclusive" and r["threshold"] == 0.05
    # the binding test is the one with the smaller lower end: against none (-0.15), 6 of 40 images differ
    assert r["ci_low"] == -0.15
    assert r["detectable"] == pytest.approx(stats.detectable_paired_binary(40, 6, 0.05))


def test_p3_ordering_quotes_the_exact_detectable_effect_of_the_k_that_limits_it():
    # k 5 held (20 images differ, all one way); k 25: 1 image differs, the exact interval straddles 0 and
    # no effect can be held with 1 of 40 differing (inf)
    row = ordering({5: (10, 30), 25: (19, 20)})
    assert row["verdict"] == "inconclusive" and np.isinf(row["detectable"])
    # a tie (both masks leave the same images correct) is saturation, not a lack of images: no figure
    row = ordering({5: (10, 30), 25: (0, 0)})
    assert row["verdict"] == "inconclusive" and np.isnan(row["detectable"])
    # 14 differing at k 25, 8 one way and 6 the other: the figure of 14 of 40
    top = np.r_[np.ones(6), np.zeros(8), np.zeros(26)]
    bottom = np.r_[np.zeros(6), np.ones(8), np.zeros(26)]
    row = ordering({5: (10, 30), 25: (top, bottom)})
    assert row["verdict"] == "inconclusive"
    assert row["detectable"] == pytest.approx(stats.detectable_paired_binary(40, 14))


def test_an_inert_attack_cannot_decide_against_the_shift_only_control():
    """The reference run's gray-box DeepFool: neither the PRM (0.77 -> 0.77) nor the shift-only randomisation
    (0.94 -> 0.93) lost more than the margin to the attack, so the PRM's lower top-1 under attack is its clean cost
    (0.17), not a failure to defend: the shift-only test is inconclusive, with the reason, and gets no figure."""
    table = defense_table_rows((0.1, 0.05, 0.15), (-0.16, -0.22, -0.11), n=100)
    extra = table.iloc[[0]].copy()  # clean rows of both
    prm_clean = extra.assign(
        defense="stochastic_prm", attack="clean", top1=0.77, k=77, reference="none"
    )
    shift_clean = extra.assign(defense="prm_shift_only", attack="clean", top1=0.94, k=94)
    table = pd.concat([table, prm_clean, shift_clean], ignore_index=True)
    table.loc[(table.defense == "stochastic_prm") & (table.attack == "pgd"), "top1"] = 0.77
    table.loc[(table.defense == "prm_shift_only") & (table.attack == "pgd"), "top1"] = 0.93
    (row,) = summary.p3_defense(table, min_effect=0.05)
    assert row["verdict"] == "inconclusive" and "attack inert" in row["evidence"]
    assert np.isnan(row["detectable"])
    # the same numbers with an attack that works on the shift-only control (0.94 -> 0.80): decided, not held
    table.loc[(table.defense == "prm_shift_only") & (table.attack == "pgd"), "top1"] = 0.80
    (row,) = summary.p3_defense(table, min_effect=0.05)
    assert row["verdict"] == "not held" and "attack inert" not in row["evidence"]
