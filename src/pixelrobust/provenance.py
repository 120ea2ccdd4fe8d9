"""Provenance records: what produced a result (settings hash, seed, device, packages, git commit).

Every compute job writes ``<output>.provenance.json`` beside its output; every results table
writes ``results/tables/<name>.provenance.json`` that embeds the records of the jobs it merged.
A record holds no time stamp or host name, so reruns on the same setup write identical files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from inspect import signature as arguments
from pathlib import Path

from .io import atomic_path

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "pandas",
    "scikit-image",
    "torchattacks",
    "grad-cam",
    "cvxpy",
    "snakemake",
    "pixelrobust",
)
REPO = Path(__file__).resolve().parents[2]


def digest(obj) -> str:
    """sha256 of a JSON-serialisable object (keys sorted; other objects by their str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def packages() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the repository the library lives in, '+dirty' when tracked files differ; 'unknown' outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device) -> str:
    # lazy: provenance imports fast (the Snakefile signs every rule's params with it); torch ~1 s
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def job_record(
    rule: str,
    wildcards: dict,
    params: dict,
    seed: int | None,
    device,
    threads: int | None,
    inputs: list[str] | None = None,
    config: dict | None = None,
) -> dict:
    """The record of one job; ``inputs`` are provenance files of the jobs it consumed; ``config`` the whole
    config the workflow ran with (recorded whole and by its sha256; the job's own settings are its ``params``).
    An embedded input record made under the same config keeps only its ``config_sha256``: its ``config`` is
    this record's; one made under another config (a job a config edit did not rerun) keeps its own."""
    record = {
        "rule": rule,
        "wildcards": dict(sorted(wildcards.items())),
        "params_sha256": digest(params),
        "seed": seed,
        "device": None if device is None else device_name(device),
        "threads": threads,
        "git_commit": git_commit(),
        "packages": packages(),
        "platform": f"{platform.system()} {platform.machine()}",
    }
    if config is not None:
        record["config_sha256"] = digest(config)
        record["config"] = config
    elif "config_sha256" in params:
        record["config_sha256"] = params["config_sha256"]
    if inputs:
        jobs = [json.loads(Path(p).read_text()) for p in inputs]
        _drop_config(jobs, record.get("config_sha256"))
        record["devices"] = sorted(
            {j["device"] for j in jobs if j.get("device")}
            | {d for j in jobs for d in j.get("devices", [])}
        )
        record["inputs"] = jobs
    return record


def _drop_config(jobs: list[dict], sha256: str | None) -> None:
    """Remove the ``config`` of every embedded record (nested ones too) whose config is ``sha256``'s."""
    for job in jobs:
        if sha256 is not None and job.get("config_sha256") == sha256:
            job.pop("config", None)
        _drop_config(job.get("inputs", []), sha256)


def write(path: str | os.PathLike, record: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")


def from_snakemake(smk, seed=None, device=None, threads=None) -> None:
    """Write the job's record to its ``prov`` output, embedding its ``prov`` inputs (if any).

    The record holds the whole config (``smk.config``, as validated, defaults filled in) and its sha256, so
    a table a config edit did not rerun still says which config it came from; but the job is not a
    function of it: its params carry only the keys it reads, so that a config change
    reruns exactly the jobs it affects (docs/development.md, "Config keys")."""
    outputs = dict(smk.output.items())
    if "prov" not in outputs:
        return
    inputs = dict(smk.input.items()).get("prov")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    params = {k: v for k, v in smk.params.items()}
    config = getattr(smk, "config", None)
    write(
        outputs["prov"],
        job_record(
            smk.rule,
            dict(smk.wildcards.items()),
            params,
            seed,
            device,
            threads,
            inputs,
            config=None if config is None else dict(config),
        ),
    )


# Snakemake's params trigger (--rerun-triggers params) compares the *set* of a job's param values: names
# are dropped and equal values merge, so device='auto', incremental='auto' -> incremental=False would not
# rerun. Each rule with params gets one more, `signature`: every other param by name with its value, so a
# change of any one changes the set (docs/development.md, "Config keys"). Our params are values or
# functions of the wildcards only (checked here). Called from workflow/Snakefile on every rule.
def params_signature(rule):
    items = list(rule.params._allitems())
    for name, item in items:
        if name is None or (callable(item) and len(arguments(item).parameters) != 1):
            raise ValueError(
                f"rule {rule.name}: param {name or item!r} must be named and be a value or a "
                "function of the wildcards only (pixelrobust.provenance.params_signature)"
            )

    def signature(wildcards):
        return repr(sorted((n, v(wildcards) if callable(v) else v) for n, v in items))

    return signature


__all__ = [
    "digest",
    "from_snakemake",
    "git_commit",
    "job_record",
    "packages",
    "params_signature",
    "write",
]
