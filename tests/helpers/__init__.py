"""Plain helpers the tests import (fixtures live in the conftest.py files): the repository's paths, the
config schema, and Snakemake run on the repository's workflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "src" / "pixelrobust" / "config.schema.yaml"


def mirror_path() -> Path:
    value = os.environ.get("PIXELROBUST_MIRROR") or str(REPO.parent / "shared" / "data")
    return Path(value).resolve()


def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
DEFAULT = [
    "--configfile",
    str(REPO / "config" / "config.yaml"),
]  # relative to the working directory otherwise
TINY = ["--configfile", str(REPO / "config" / "tiny.yaml")]
# How the tests' full tiny runs schedule: two 1-thread jobs at once on 2 cores. Every compute rule claims the `gpu`
# token (one GPU job at a time, profiles/default), which on a CPU would run the tiny run's ~120 jobs one by one
# (9 min 50 s, 2026-11-29); its outputs do not depend on the schedule.
TWO_JOBS = ["--cores", "2", "--resources", "gpu=2"]


def snakemake(args, workdir, mirror=None, check=True, timeout=1200, env=None, unset=()):
    """Run snakemake on the repository's workflow in ``workdir``; ``env`` adds variables, ``unset`` drops them."""
    drop = {"PIXELROBUST_MIRROR", *unset}
    env = {**{k: v for k, v in os.environ.items() if k not in drop}, **(env or {})}
    if mirror is not None:
        env["PIXELROBUST_MIRROR"] = str(mirror)
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), *args],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc
