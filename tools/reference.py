"""docs/reference/: the committed results of a complete run of the shipped default config, and the check of them.

    ./with-venv python tools/reference.py --run /path/to/clone --wall 1:58:00 --command "..."   # write
    ./with-venv python tools/reference.py --check                                               # compare

Writing copies, from a finished run's working directory, what a reader compares their own run with (issue #28):
``results/SUMMARY.md``, every table of ``results/tables/`` (``.csv``, ``.md`` and the ``.provenance.json`` records),
every PNG figure of ``results/figures/`` and Snakemake's per-job timings (``results/benchmarks/``), and writes
``docs/reference/README.md`` with the commit, command, machine, wall time and the per-stage split. No arrays, no
checkpoints, no PDFs (the PNGs are the same figures) and no HTML report (it embeds the same PNGs again; rebuild it
with ``snakemake --report``). It refuses a run that is not complete (no SUMMARY.md), whose SUMMARY.md was not made
from ``config/config.yaml`` alone, or whose config sha256 differs from the shipped default's.

``--check`` (and ``tests/workflow/test_reference.py``) recomputes the sha256 of the shipped default config, the
schema's defaults filled in as the workflow does, and compares it with the one the reference's SUMMARY.md and every
provenance record quote, and checks that its claims.csv has the columns the summary writes today: a change to
``config/config.yaml`` or to a schema default without a new reference run fails there, so config and reference cannot
drift apart silently. It does not guard the code: a change that alters results (not only their presentation) needs a
new reference run, and the reference's README names the commits it was made from.
"""

from __future__ import annotations

import argparse
import copy
import csv
import platform
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

REFERENCE = ROOT / "docs" / "reference"
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"
SHA_LINE = re.compile(r"Config sha256 `([0-9a-f]{64})` from (.*?); git commit `([^`]+)`")


def default_config_sha256(path: Path = DEFAULT_CONFIG) -> str:
    """The sha256 the workflow quotes for a run of ``path`` alone: the file validated against the schema, which
    fills in the defaults (workflow/rules/common.smk: ``CONFIG_SHA256 = digest(config)`` after ``validate``)."""
    from pixelrobust import config as prconfig
    from pixelrobust import schema as prschema
    from pixelrobust.provenance import digest

    config = copy.deepcopy(prconfig.load_yaml(path))
    prconfig.validate(config, prschema.SCHEMA)
    return digest(config)


def summary_header(summary_md: Path) -> tuple[str, str, str]:
    """(config sha256, config files as SUMMARY.md names them, git commit) from a SUMMARY.md."""
    m = SHA_LINE.search(summary_md.read_text())
    if not m:
        raise SystemExit(
            f"{summary_md}: no 'Config sha256 ... git commit ...' line: not a pixelrobust SUMMARY.md"
        )
    return m.group(1), m.group(2), m.group(3)


def provenance_hashes(folder: Path) -> dict[str, set[str]]:
    """Every config sha256 quoted anywhere in each provenance record under ``folder`` (inputs included)."""
    found = {}
    for p in sorted(folder.rglob("*.provenance.json")):
        found[str(p.relative_to(folder))] = set(
            re.findall(r'"config_sha256": "([0-9a-f]{64})"', p.read_text())
        )
    return found


def check(
    reference: Path = REFERENCE, config: Path = DEFAULT_CONFIG, want: str | None = None
) -> list[str]:
    """Problems with the committed reference (empty: it was made by a config identical to the shipped default).
    ``want``: the expected sha256 (default: that of ``config`` with the schema's defaults)."""
    from pixelrobust.summary import CLAIM_COLUMNS

    problems = []
    summary = reference / "SUMMARY.md"
    if not summary.exists():
        return [f"{summary} is missing: run tools/reference.py --run on a finished default run"]
    want = want or default_config_sha256(config)
    sha, files, _ = summary_header(summary)
    if sha != want:
        problems.append(
            f"{summary} quotes config sha256 {sha}, the shipped {config} (with the schema's "
            f"defaults) hashes to {want}: the default config changed after the reference run; rerun it "
            "(docs/reference/README.md says how) or undo the change"
        )
    if files != "`config/config.yaml`":
        problems.append(f"{summary} was made from {files}, not from config/config.yaml alone")
    for name, hashes in provenance_hashes(reference).items():
        if hashes != {want}:
            problems.append(f"{reference / name} quotes config sha256 {sorted(hashes)}, not {want}")
    claims = reference / "tables" / "claims.csv"
    header = claims.read_text().split("\n", 1)[0].split(",") if claims.exists() else []
    if header != CLAIM_COLUMNS:
        problems.append(
            f"{claims} has columns {header}, the summary writes {CLAIM_COLUMNS}: rerun the summary rule on the "
            "reference run (snakemake --forcerun summary) and copy it again"
        )
    return problems


def benchmark_split(benchmarks: Path) -> list[tuple[str, int, float, float]]:
    """(stage, jobs, summed job wall seconds, summed job CPU seconds) from Snakemake's benchmark files, staged as the
    run's own estimate stages them (:func:`pixelrobust.cost.stage_of`)."""
    from pixelrobust.cost import stage_of

    acc: dict[str, list[float]] = {}
    for tsv in sorted(benchmarks.rglob("*.tsv")):
        rule = (
            tsv.relative_to(benchmarks).parts[1]
            if tsv.relative_to(benchmarks).parts[0] == "rules"
            else tsv.stem
        )
        with tsv.open() as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows:
            continue
        a = acc.setdefault(stage_of(rule.removesuffix(".tsv")), [0, 0.0, 0.0])
        a[0] += 1
        a[1] += float(rows[-1]["s"])
        a[2] += float(rows[-1].get("cpu_time") or "nan")
    return [(s, int(v[0]), v[1], v[2]) for s, v in acc.items()]


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def write(
    run: Path,
    wall: str,
    command: str,
    machine: str,
    started: str,
    estimate: str,
    force: bool,
    notes: str = "",
) -> None:
    """Copy the run into docs/reference/ and write its README (module doc). ``started``: the run's start, ISO 8601
    UTC; files older than it are refused as left over from another run."""
    from datetime import datetime

    since = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() if started else None
    results = run / "results"
    summary = results / "SUMMARY.md"
    if not summary.exists():
        raise SystemExit(
            f"{summary} is missing: the run is not complete (rerun it with --keep-going, then this)"
        )
    want = default_config_sha256()
    sha, files, commit = summary_header(summary)
    if files != "`config/config.yaml`" or sha != want:
        raise SystemExit(
            f"{summary}: config {files}, sha256 {sha}; the shipped default hashes to {want}: only a run of the "
            "unchanged config/config.yaml is a reference"
        )
    if REFERENCE.exists():
        if not force:
            raise SystemExit(f"{REFERENCE} exists: pass --force to replace it")
        shutil.rmtree(REFERENCE)
    (REFERENCE / "tables").mkdir(parents=True)
    (REFERENCE / "figures").mkdir()
    shutil.copy2(summary, REFERENCE / "SUMMARY.md")
    tables = [
        p
        for p in sorted((results / "tables").iterdir())
        if p.suffix in (".csv", ".md") or p.name.endswith(".provenance.json")
    ]
    figures = sorted((results / "figures").glob("*.png"))
    # the per-image rows that the P1 and defence verdicts are computed from (a referee could not recompute them
    # from the tables alone); masked PGD's and the synthesis's per-image tables are among the tables already
    per_image = sorted((results / "p1" / "claims").glob("*/*.csv")) + sorted(
        (results / "p3" / "defense").glob("*/*/*.csv")
    )
    if since is not None:  # a table or figure older than the run is left over from another run
        stale = [str(p) for p in [*tables, *figures, *per_image] if p.stat().st_mtime < since]
        if stale:
            shutil.rmtree(REFERENCE)
            raise SystemExit(
                f"{len(stale)} files under {results} are older than the run's start ({stale[:3]} ...): left over "
                "from another run; delete them (or run in a fresh clone) and rerun"
            )
    for p in tables:
        shutil.copy2(p, REFERENCE / "tables" / p.name)
    for p in figures:
        shutil.copy2(p, REFERENCE / "figures" / p.name)
    for p in per_image:
        dest = REFERENCE / "per_image" / p.relative_to(results)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    shutil.copytree(results / "benchmarks", REFERENCE / "benchmarks")
    split = benchmark_split(REFERENCE / "benchmarks")
    size = sum(p.stat().st_size for p in REFERENCE.rglob("*") if p.is_file())
    lines = [
        "# Reference run of the default config",
        "",
        "What `./with-venv snakemake --cores all --resources gpu=1` (README command (1)) produces on a 2-core CPU: "
        "a complete run of the shipped `config/config.yaml`, copied here by `tools/reference.py` (no arrays, no "
        "checkpoints; the PNG figures, not the PDFs; no HTML report, which embeds the same figures). "
        "`tests/workflow/test_reference.py` fails when the shipped default config (with the schema's defaults) no "
        "longer hashes to the sha256 this run quotes.",
        "",
        f"- commit of SUMMARY.md: `{commit}` (every file's provenance record names the commit that wrote it)",
        f"- config: `config/config.yaml`, sha256 `{sha}`",
        f"- command: `{command}`",
        f"- machine: {machine}",
        f"- started: {started}; measured wall time **{wall}** (h:mm:ss, the whole command, `/usr/bin/time`)",
        f"- the run's own estimate at its start: {estimate}",
        f"- here: {size / 1e6:.1f} MB",
        "",
        "Read `SUMMARY.md` first (claim by claim, did it hold), then `tables/claims.csv`; `per_image/` holds the "
        "per-image rows the P1 and defence verdicts are computed from. Every job's timing is in "
        "`benchmarks/` (Snakemake's `benchmark:` files: wall `s`, `cpu_time`, memory); per stage:",
        "",
        "| stage | jobs | summed job wall | summed job CPU |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s} | {n} | {_hms(w)} | {_hms(c)} |" for s, n, w, c in split]
    lines += [
        "",
        "Every compute rule claims the one `gpu` token (`--resources gpu=1`), so the compute jobs ran one at a time "
        "with the config's 2 threads each; only local table and figure jobs overlapped them. To compare a run of "
        "yours with this one: same config, then `diff` your "
        "`results/tables/claims.csv` with `tables/claims.csv` here (the seeds are fixed; bf16 kernels and thread "
        "counts can change a search path on other CPUs, docs/p1.md, never a reported answer's validity).",
        "",
    ]
    if notes:
        lines += ["## Notes", "", Path(notes).read_text().strip(), ""]
    (REFERENCE / "README.md").write_text("\n".join(lines))
    print(f"wrote {REFERENCE} ({size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--check",
        action="store_true",
        help="compare docs/reference/ with the shipped default config",
    )
    ap.add_argument("--run", type=Path, help="working directory of a finished default run")
    ap.add_argument("--wall", help="measured wall time of the run, h:mm:ss")
    ap.add_argument(
        "--command", default="./with-venv snakemake --cores all --resources gpu=1 --keep-going"
    )
    ap.add_argument("--machine", default=f"{platform.node()}, {platform.machine()}")
    ap.add_argument(
        "--started", default="", help="the run's start, ISO 8601 UTC (older files are refused)"
    )
    ap.add_argument("--estimate", default="")
    ap.add_argument("--force", action="store_true", help="replace an existing docs/reference/")
    ap.add_argument(
        "--notes", default="", help="a Markdown file appended to the README as its Notes"
    )
    a = ap.parse_args(argv)
    if a.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            return 1
        print("docs/reference/ matches the shipped default config")
        return 0
    if not a.run or not a.wall:
        ap.error("--run and --wall are needed to write the reference (or --check)")
    write(a.run, a.wall, a.command, a.machine, a.started, a.estimate, a.force, a.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
