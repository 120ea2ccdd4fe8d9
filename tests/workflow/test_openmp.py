"""Workflow jobs run with sleeping OpenMP workers (OMP_WAIT_POLICY=PASSIVE unless the environment sets it)."""

from __future__ import annotations

from helpers import TINY, snakemake


def test_workflow_jobs_run_with_sleeping_openmp_workers(mirror, tmp_path):
    """workflow/Snakefile gives every job OMP_WAIT_POLICY=PASSIVE when the environment has none (spinning
    OpenMP workers made 2-thread jobs 1.7-73x slower on a shared CPU, bench/threads), and the job's log says
    which policy ran."""
    snakemake(
        [*TINY, "--cores", "1", "resources/weights/resnet20_cifar10.pt"],
        tmp_path,
        mirror,
        unset=("OMP_WAIT_POLICY",),
    )
    log = (tmp_path / "results" / "logs" / "get_weights" / "resnet20_cifar10.log").read_text()
    assert "OMP_WAIT_POLICY PASSIVE" in log
