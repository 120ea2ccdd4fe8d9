"""pixelrobust.runtime.job: the one way a workflow script opens its job (seed, threads, device, log,
provenance), checked on a stand-in for the script's ``snakemake`` object."""

from __future__ import annotations

import json
import logging
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pixelrobust import provenance
from pixelrobust.runtime import job


class _Named(dict):
    """Stands in for Snakemake's named lists (``.items()``, ``.get``)."""


@pytest.fixture
def restore_state(monkeypatch):
    """job sets process-wide state (torch threads, deterministic algorithms, the root logger): put it back."""
    monkeypatch.setattr(provenance, "packages", lambda: {"python": "x"})
    monkeypatch.setattr(provenance, "git_commit", lambda: "abc")
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    for h in list(root.handlers):
        if h not in handlers:
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _smk(tmp_path, params: dict, threads: int, prov: bool = True):
    return SimpleNamespace(
        log=[str(tmp_path / "logs" / "job.log")],
        params=_Named(params),
        threads=threads,
        output=_Named(
            {"csv": str(tmp_path / "t.csv")},
            **({"prov": str(tmp_path / "t.prov.json")} if prov else {}),
        ),
        input=_Named(),
        wildcards=_Named(model="m", chunk="0"),
        rule="segment",
        config={"seed": 0},
    )


def test_a_compute_job_takes_its_seed_threads_and_device_and_records_them(tmp_path, restore_state):
    """A rule with a ``device`` param: seeded with its ``seed`` param (torch, numpy, random), its threads, its
    device; the provenance record holds all three."""
    smk = _smk(tmp_path, {"seed": 7, "device": "cpu", "batch_size": 3}, threads=1)
    with job(smk) as device:
        assert device == torch.device("cpu") and torch.get_num_threads() == 1
        assert torch.initial_seed() == 7
        assert np.random.rand() == np.random.RandomState(7).rand()
        assert random.random() == random.Random(7).random()
    record = json.loads((tmp_path / "t.prov.json").read_text())
    assert (record["seed"], record["device"], record["threads"]) == (7, "cpu", 1)
    assert record["rule"] == "segment" and record["wildcards"] == {"chunk": "0", "model": "m"}
    assert "device cpu, threads 1, seed 7" in (tmp_path / "logs" / "job.log").read_text()


def test_a_table_job_is_seeded_with_zero_and_records_no_device(tmp_path, restore_state):
    """A rule without a ``device`` param (tables, figures, downloads): seed 0 whatever its ``seed`` param (the
    function takes that one as an argument), torch's thread count left alone, no seed/device/threads
    recorded."""
    torch.set_num_threads(1)
    smk = _smk(tmp_path, {"seed": 99, "n_boot": 10}, threads=3)
    with job(smk):
        assert torch.initial_seed() == 0 and torch.get_num_threads() == 1
    record = json.loads((tmp_path / "t.prov.json").read_text())
    assert (record["seed"], record["device"], record["threads"]) == (None, None, None)


def test_a_failed_job_logs_its_traceback_and_writes_no_record(tmp_path, restore_state):
    smk = _smk(tmp_path, {"seed": 1, "device": "cpu"}, threads=1)
    with pytest.raises(RuntimeError, match="broken step"), job(smk):
        raise RuntimeError("broken step")
    assert not (tmp_path / "t.prov.json").exists()
    text = (tmp_path / "logs" / "job.log").read_text()
    assert "job failed" in text and "RuntimeError: broken step" in text


def test_a_job_without_a_prov_output_writes_no_record(tmp_path, restore_state):
    smk = _smk(tmp_path, {}, threads=1, prov=False)
    with job(smk):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
