"""The report's front page (summary.front_page): the verdict table, rendered as reStructuredText."""

from __future__ import annotations

import numpy as np
import pandas as pd
from docutils.core import publish_parts

from pixelrobust.report import FRONT_PAGE_HEADING
from pixelrobust.summary import CLAIM_COLUMNS, front_page


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
    assert table[0][6] == "+0.052 (-0.01 to 0.111)" and table[3][6] == "-"
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
