"""The run's cost estimate, printed at the start of a real run of the tiny config (off with estimate: false)."""

import json

import pytest

from helpers import TINY, snakemake


@pytest.mark.parametrize("on", [True, False])
def test_estimate_printed_at_the_start_of_a_run(mirror, tmp_path, on):
    """A real (not dry) run of the tiny config prints the estimate and writes it; estimate: false does not."""
    target = "resources/weights/resnet20_cifar10.pt"  # one cheap local job
    switch = tmp_path / "switch.yaml"
    switch.write_text(f"estimate: {str(on).lower()}\n")
    proc = snakemake([*TINY, str(switch), "--cores", "2", "--", target], tmp_path, mirror)
    written = tmp_path / "results" / "logs" / "estimate.txt"
    assert ("Estimated wall time of this run" in proc.stderr) is on
    assert written.is_file() is on
    if on:
        assert "data, weights, tables, figures" in written.read_text()
        assert json.loads((tmp_path / "resources" / "cost" / "calibration.json").read_text())


def test_estimate_only_prints_the_cost_and_runs_nothing(mirror, tmp_path):
    """estimate: only: the cost of the whole tiny target, then exit 0 before any job (no result, no weights)."""
    proc = snakemake([*TINY, "--cores", "2", "--config", "estimate=only"], tmp_path, mirror)
    assert "Estimated wall time of this run" in proc.stderr and "no job was run" in proc.stderr
    assert "P1 onepixel" in (tmp_path / "results" / "logs" / "estimate.txt").read_text()
    assert not (tmp_path / "resources" / "weights").exists()
    assert not (tmp_path / "results" / "SUMMARY.md").exists()
    assert not list((tmp_path / "results").rglob("*.csv"))
