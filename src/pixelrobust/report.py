"""The HTML report (``results/report.html``) as a workflow output, and a reader that checks it.

Snakemake builds reports only from the command line (``snakemake --report``); the ``html_report``
rule runs that command for the ``all`` target with the run's own effective config, writes to a
temporary name, checks that every figure and table it should hold is embedded with its data, and
only then moves it into place. ``--report-after-run`` is not used: with ``--report`` in a profile,
Snakemake would also build the report after dry runs and fail on their missing files.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from .io import atomic_path

_BLOCK = re.compile(r"^\s*var (results|categories) = (\{.*\});\s*$", re.M)
_FRONT = re.compile(r"^\s*var workflow_desc = (\".*\");\s*$", re.M)
# The front page (workflow/report/workflow.rst including the summary rule's results/report/front_page.rst)
# opens with this heading; a report without it lost its verdict table.
FRONT_PAGE_HEADING = "Did the claims hold?"


def read_report(html: str | os.PathLike) -> tuple[dict, dict]:
    """The ``results`` (path → entry with name, labels, caption, data_uri) and ``categories`` of a report."""
    text = Path(html).read_text(encoding="utf-8", errors="replace")
    blocks = {m.group(1): json.loads(m.group(2)) for m in _BLOCK.finditer(text)}
    if set(blocks) != {"results", "categories"}:
        raise ValueError(
            f"{html} is not a Snakemake HTML report (no results/categories blocks); rebuild it with "
            "`snakemake results/report.html`"
        )
    return blocks["results"], blocks["categories"]


def read_front_page(html: str | os.PathLike) -> str:
    """The report's front page (the workflow description) as HTML; empty when the report has none."""
    m = _FRONT.search(Path(html).read_text(encoding="utf-8", errors="replace"))
    return json.loads(m.group(1)) if m else ""


def entry_bytes(entry: dict) -> bytes:
    """The embedded file of one report entry."""
    uri = entry.get("data_uri") or ""
    if ";base64," not in uri:
        return b""
    return base64.b64decode(uri.split(";base64,", 1)[1])


def check_report(html: str | os.PathLike, expected: list[str]) -> None:
    """Raise unless every path in ``expected`` is in the report with non-empty embedded data."""
    results, _ = read_report(html)
    missing = [p for p in expected if p not in results]
    empty = [p for p in expected if p in results and not entry_bytes(results[p])]
    if missing or empty:
        raise ValueError(
            f"the report {html} lacks {missing} and has no data for {empty}; check their report() annotations"
        )
    front = read_front_page(html)
    if FRONT_PAGE_HEADING not in front or "<table" not in front:
        raise ValueError(
            f"the report {html} has no front page with the verdict table; workflow/Snakefile's `report:` "
            "must name workflow/report/workflow.rst, which includes results/report/front_page.rst"
        )


def build_report(
    snakefile: str | os.PathLike,
    workdir: str | os.PathLike,
    config: dict,
    out: str | os.PathLike,
    expected: list[str],
    log: str | os.PathLike,
    target: str = "all",
) -> None:
    """Run ``snakemake --report`` for ``target`` with ``config`` and move the checked report to ``out``."""
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out, suffix=".html") as part:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(snakefile),
            "--directory",
            str(workdir),
            "--configfile",
            str(cfg),
            "--nolock",
            "--report",
            str(Path(part).resolve()),
            target,
        ]
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
        Path(log).write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(
                f"snakemake --report failed ({proc.returncode}); see {log}:\n{proc.stderr[-3000:]}"
            )
        check_report(part, expected)


__all__ = [
    "FRONT_PAGE_HEADING",
    "build_report",
    "check_report",
    "entry_bytes",
    "read_front_page",
    "read_report",
]
