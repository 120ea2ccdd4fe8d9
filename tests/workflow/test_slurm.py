"""The tiny config through profiles/slurm on a real single-node SLURM (tests/workflow/slurm/cluster.sh).

Checks, from SLURM's own records (``scontrol show job``: completed jobs stay listed for
MinJobAge = 600 s) and from the rule logs: every non-local job ran through sbatch, GPU rules
asked for and got a GPU, CPU rules asked for none, local rules ran on the submit host, and the
outputs equal a local run's byte for byte (timing columns aside).

To keep the suite within its time budget the SLURM run builds a subset of the tiny config's
targets (``SLURM_TARGETS``: jobs of GPU, CPU and local rules from four stages); that every GPU
rule of the workflow is routed to the GPU partition is checked on the profile itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import REPO, TINY, snakemake

CLUSTER = REPO / "tests" / "workflow" / "slurm" / "cluster.sh"
pytestmark = pytest.mark.workflow


def rules_with(pattern: str) -> set[str]:
    """Rules whose definition in workflow/rules/*.smk matches ``pattern``."""
    found = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text()):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(pattern, block):
                found.add(m.group(1))
    return found


GPU_RULES = rules_with(r"\bgpu=1")
# GPU rules: a clean-accuracy chunk, a masked-PGD chunk (after its gradient map) and one P3 part 2
# cell for each of two models (defense_eval, after train_prm); a CPU rule: the P2 solver
# cross-check; local rules: the data and weights they need (three datasets, three models).
# Every GPU job waits for the one GPU of the test cluster, about 14 s each, so the list is short.
SLURM_TARGETS = [
    "results/clean_accuracy/resnet20_cifar10/chunk-0.csv",
    "results/p3/masked_pgd/resnet20_cifar10/chunk-0.csv",
    *[f"results/p3/defense/{m}/pgd/chunk-0.csv" for m in ("resnet20_cifar10", "resnet56_cifar100")],
    "results/tables/ssim_solver_check.csv",
]
CPU_RULES = {"ssim_solver_check"}
LOCAL_RULES = rules_with(r"localrule: True") | {"all"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    installed = all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and shutil.which("apt-get") is None:
        pytest.skip(
            "SLURM is not installed and apt-get is unavailable to install it; the SLURM test cannot run here"
        )
    if not installed and os.geteuid() != 0:
        pytest.skip("SLURM is not installed and installing it with apt-get needs root")
    t0 = time.monotonic()
    subprocess.run([str(CLUSTER), "install"], check=True, timeout=600)
    t_install = time.monotonic() - t0
    state = tmp_path_factory.mktemp("slurm")
    subprocess.run([str(CLUSTER), "start", str(state)], check=True, timeout=120)
    timings = {"install": t_install, "ready": time.monotonic() - t0}
    try:
        yield {"dir": state, "conf": str(state / "slurm.conf"), "timings": timings}
    finally:
        subprocess.run([str(CLUSTER), "stop", str(state)], timeout=60)


def slurm_jobs(conf: str) -> list[dict[str, str]]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o"],
        env={**os.environ, "SLURM_CONF": conf},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = []
    for line in out.splitlines():
        if line.startswith("JobId="):
            jobs.append(dict(kv.split("=", 1) for kv in re.findall(r"(\w+=\S*)", line)))
    return jobs


def test_profile_routes_every_gpu_rule():
    """Every rule with gpu=1 has a set-resources entry sending it to the GPU partition."""
    import yaml

    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.v8+.yaml").read_text())
    routed = {
        rule
        for rule, res in profile["set-resources"].items()
        if res.get("gpu") or "gpu" in str(res.get("gres", ""))
    }
    assert GPU_RULES and GPU_RULES == routed, (
        f"GPU rules without a GPU request in the profile: {GPU_RULES - routed}"
    )


def test_tiny_config_through_slurm(cluster, tiny_run, mirror, tmp_path):
    assert (
        GPU_RULES
        >= {"clean_accuracy_chunk", "masked_pgd", "gradient_map", "train_prm", "defense_eval"}
        and "download" in LOCAL_RULES
    )
    assert not CPU_RULES & (GPU_RULES | LOCAL_RULES)
    t0 = time.monotonic()
    proc = snakemake(
        [
            *SLURM_TARGETS,
            "--workflow-profile",
            str(REPO / "profiles" / "slurm"),
            *TINY,
            # the test cluster has no accounting database: squeue status (MinJobAge = 600)
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            "2",
        ],
        tmp_path,
        mirror,
        env={"SLURM_CONF": cluster["conf"]},
        unset=("CUDA_VISIBLE_DEVICES",),
        timeout=1500,
    )
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    print(
        f"SLURM timings: install {cluster['timings']['install']:.1f} s, cluster ready after "
        f"{cluster['timings']['ready']:.1f} s, workflow {elapsed:.1f} s"
    )

    # Which jobs Snakemake submitted (rule and wildcards) and which SLURM ran
    submitted = re.findall(
        r"has been submitted with SLURM jobid (\d+) \(log: .*?/rule_(\w+?)/", out
    )
    jobs = {j["JobId"]: j for j in slurm_jobs(cluster["conf"])}
    assert submitted, f"no job was submitted through sbatch:\n{out[-3000:]}"
    assert {r for _, r in submitted} == {
        "clean_accuracy_chunk",
        "masked_pgd",
        "gradient_map",
        "train_prm",
        "defense_eval",
    } | CPU_RULES, submitted
    for jobid, rule in submitted:
        job = jobs[jobid]
        assert job["JobState"] == "COMPLETED", job
        assert job["Comment"].startswith(f"rule_{rule}")
        if rule in GPU_RULES:
            assert job["Partition"] == "gpu" and "gpu" in job.get("TresPerJob", ""), (
                f"GPU rule {rule} lacked its GPU request: {job}"
            )
        else:
            assert "gpu" not in job.get("TresPerJob", ""), f"CPU rule {rule} asked for a GPU: {job}"

    # Every job of a non-local rule ran under SLURM, GPU rules with the GPU SLURM granted
    logs = sorted((tmp_path / "results" / "logs").rglob("*.log"))
    n_remote = 0
    for log in logs:
        rule = log.relative_to(tmp_path / "results" / "logs").parts[0].removesuffix(".log")
        text = log.read_text()
        m = re.search(r"SLURM_JOB_ID=(\d+) CUDA_VISIBLE_DEVICES=(\S*)", text)
        if rule in LOCAL_RULES:
            assert m is None, f"local rule {rule} ran inside a SLURM job ({log})"
            continue
        n_remote += 1
        assert m is not None, f"job of rule {rule} did not run under SLURM ({log})"
        assert m.group(1) in {j for j, _ in submitted}
        assert (m.group(2) == "0") == (rule in GPU_RULES), (
            f"{log}: CUDA_VISIBLE_DEVICES={m.group(2)!r}"
        )
    assert n_remote == len(submitted)

    # Outputs equal those of the local run
    remote = sorted(p.relative_to(tmp_path) for p in (tmp_path / "results").rglob("*.csv"))
    assert {str(p) for p in remote} >= set(SLURM_TARGETS), remote
    for rel in remote:
        assert comparable(tiny_run / rel) == comparable(tmp_path / rel), (
            f"{rel} differs between local and SLURM runs"
        )


def comparable(path: Path):
    """A CSV's bytes, or for one with timing columns its other columns (wall time never repeats)."""
    import pandas as pd

    from pixelrobust.defense_eval import TIMING_COLUMNS

    header = path.read_text().split("\n", 1)[0].split(",")
    timing = [c for c in header if c in TIMING_COLUMNS or c == "seconds_per_image"]
    if not timing:
        return path.read_bytes()
    return pd.read_csv(path).drop(columns=timing).to_csv(index=False)
