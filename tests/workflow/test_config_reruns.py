"""A config change reruns exactly the jobs it affects (docs/development.md, "Config keys").

Snakemake reruns a job whose params differ from those recorded with its outputs. These tests build the
tiny config's DAG twice (no job runs), once with one stage's key edited, and compare every job's params
as Snakemake's params trigger does: the *set* of the serialised values (``persistence._params``, compared
as ``set(...)`` by ``params_changed``), names dropped. That is why every rule with params carries a
``signature`` param naming each other param with its value (workflow/Snakefile, ``params_signature``):
without it, ``incremental: auto -> off`` leaves ``{'auto', False, ...}`` as it was and nothing reruns. ``summary`` and ``html_report`` take the whole config (SUMMARY.md and the report print
it), so they rerun on any edit, by design; every other job must keep its params.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WHOLE_CONFIG = {"summary", "html_report"}  # they print the whole config

# Snakemake's CLI with --list-changes replaced by a dump of every job's params (as the params trigger sees them).
DUMP = """
import json, sys
import snakemake.api  # noqa: F401  (imports snakemake.workflow in its own order)
from snakemake.workflow import Workflow

def dump(self, change_type):
    self._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
    self._build_dag()
    out, names = {}, {}
    for job in self.dag.jobs:
        key = job.rule.name + "".join(f"/{k}={v}" for k, v in sorted(job.wildcards_dict.items()))
        out[key] = self.persistence._params(job)
        names[key] = {n: str(job.params[n]) for n in job.params.keys()}
    print("PARAMS-JSON " + json.dumps({"params": out, "names": names}, default=str))

Workflow.list_changes = dump
from snakemake.cli import main
sys.exit(main(sys.argv[1:]))
"""


def job_dump(workdir: Path, mirror: Path, *configfiles: Path) -> dict:
    files = [str(REPO / "config" / "tiny.yaml"), *map(str, configfiles)]
    env = {**os.environ, "PIXELROBUST_MIRROR": str(mirror)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            DUMP,
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--list-changes",
            "params",
            "--nolock",
            "--configfile",
            *files,
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PARAMS-JSON ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[0].removeprefix("PARAMS-JSON "))


def job_params(workdir: Path, mirror: Path, *configfiles: Path) -> dict[str, list]:
    """{job: its serialised param values}, as ``persistence._params`` gives them."""
    return job_dump(workdir, mirror, *configfiles)["params"]


def changed_rules(before: dict, after: dict) -> set[str]:
    assert set(before) == set(after)
    # as Snakemake's params_changed: set(old) != set(new), names dropped, equal values merged
    return {job.split("/")[0] for job in before if set(before[job]) != set(after[job])}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, mirror):
    workdir = tmp_path_factory.mktemp("dag")
    return workdir, job_params(workdir, mirror)


@pytest.mark.parametrize(
    "edit,rules",
    [
        ({"onepixel": {"bootstrap": 500}}, {"onepixel_tables"}),
        ({"synthesis": {"topk_percent": 5}}, {"synthesis_tables"}),
        ({"ssim": {"compare": {"bootstrap": 500}}}, {"compare_maps"}),
        ({"defense_eval": {"min_effect": 0.1}}, set()),  # read by the summary only
        # values equal to another param's: without the signature param the set would not change
        ({"onepixel": {"incremental": False}}, {"onepixel_search"}),  # YAML `off`; device is 'auto'
        ({"defense_eval": {"draws": 64}}, {"defense_eval"}),  # 64 is the batch size too
    ],
    ids=[
        "onepixel.bootstrap",
        "synthesis.topk_percent",
        "ssim.compare.bootstrap",
        "defense_eval.min_effect",
        "onepixel.incremental=off",
        "defense_eval.draws=64",
    ],
)
def test_a_config_edit_changes_the_params_of_the_jobs_that_read_it_only(
    baseline, mirror, tmp_path, edit, rules
):
    workdir, before = baseline
    extra = tmp_path / "edit.yaml"
    extra.write_text(json.dumps(edit))  # JSON is YAML
    after = job_params(workdir, mirror, extra)
    assert len(before) > 50  # the whole tiny DAG
    assert changed_rules(before, after) == rules | WHOLE_CONFIG


def test_an_edit_of_a_compute_setting_reruns_its_compute_jobs(baseline, mirror, tmp_path):
    """The other direction: a key a compute rule reads changes the params of each of its jobs."""
    workdir, before = baseline
    extra = tmp_path / "edit.yaml"
    extra.write_text(json.dumps({"onepixel": {"occlusion": "mean"}}))
    after = job_params(workdir, mirror, extra)
    changed = {job for job in before if set(before[job]) != set(after[job])}
    segment = {job for job in before if job.startswith("segment/")}
    assert segment and segment <= changed
    assert not any(
        job.startswith(("masked_pgd/", "attack_ssim/", "defense_eval/", "train_prm/"))
        for job in changed
    )


def test_every_rule_with_params_has_a_signature_naming_them(tmp_path, mirror):
    """The signature param (workflow/Snakefile) names each other param of its job with its value."""
    names = job_dump(tmp_path, mirror)["names"]
    with_params = {job: p for job, p in names.items() if p}
    assert len(with_params) > 50
    for job, params in with_params.items():
        assert "signature" in params, job
        for name in set(params) - {"signature"}:
            assert f"('{name}', " in params["signature"], (job, name)
    search = next(p for job, p in names.items() if job.startswith("onepixel_search/"))
    assert "('device', 'auto')" in search["signature"]
    assert "('incremental', 'auto')" in search["signature"]


class _Named(dict):
    """Stands in for Snakemake's named lists (``.items()``, ``.get``)."""


def test_provenance_records_the_whole_config_without_taking_it_as_a_param(tmp_path, monkeypatch):
    import hashlib
    from types import SimpleNamespace

    from pixelrobust import provenance

    monkeypatch.setattr(provenance, "packages", lambda: {"python": "x"})
    monkeypatch.setattr(provenance, "git_commit", lambda: "abc")
    config = {"seed": 0, "onepixel": {"bootstrap": 1000, "de": {"F": 0.5}}}
    smk = SimpleNamespace(
        output=_Named(prov=str(tmp_path / "t.provenance.json")),
        input=_Named(),
        rule="onepixel_tables",
        params=_Named(n_boot=1000),
        wildcards=_Named(),
        config=config,
    )
    provenance.from_snakemake(smk)
    record = json.loads((tmp_path / "t.provenance.json").read_text())
    whole = hashlib.sha256(
        b'{"onepixel": {"bootstrap": 1000, "de": {"F": 0.5}}, "seed": 0}'
    ).hexdigest()
    assert record["config_sha256"] == whole
    assert record["config"] == config  # the whole config, not only its digest
    assert record["params_sha256"] == hashlib.sha256(b'{"n_boot": 1000}').hexdigest()
    # another config, same params: the record says so, the job's params (its rerun trigger) do not change
    smk.config = {**config, "seed": 1}
    provenance.from_snakemake(smk)
    again = json.loads((tmp_path / "t.provenance.json").read_text())
    assert again["config_sha256"] != whole and again["params_sha256"] == record["params_sha256"]
    assert again["config"]["seed"] == 1
    # a job consuming the first record: under the same config its input keeps only the digest; under
    # another config (an input a config edit did not rerun) the input keeps the config it was made with
    old = tmp_path / "old.provenance.json"
    old.write_text(json.dumps(record))
    for cfg, kept in ((config, False), ({**config, "seed": 1}, True)):
        smk.config, smk.input = cfg, _Named(prov=[str(old)])
        smk.output = _Named(prov=str(tmp_path / "u.provenance.json"))
        provenance.from_snakemake(smk)
        (embedded,) = json.loads((tmp_path / "u.provenance.json").read_text())["inputs"]
        assert embedded["config_sha256"] == whole
        assert ("config" in embedded) is kept and embedded.get("config", config) == config


def test_random_draws_are_seeded_per_model_not_per_chunk(tmp_path, mirror):
    """Jobs that draw per-image randomness from their seed (PGD random starts, P1's random subsets) get the
    model's seed, the same in every chunk: an image's result must not depend on the chunk it falls in
    (docs/verdicts.md, rule 2). Each rule is split into at least two chunks here."""
    extra = tmp_path / "chunks.yaml"
    extra.write_text(
        json.dumps({"masked_pgd": {"chunk_size": 8}, "ssim": {"chunk_size": 1}})
    )  # onepixel: chunk_size 1 in the tiny config
    names = job_dump(tmp_path, mirror, extra)["names"]
    for rule in ("masked_pgd", "attack_ssim", "cam", "onepixel_search"):
        seeds: dict[str, set] = {}
        for job, params in names.items():
            if job.split("/")[0] == rule:
                model = dict(kv.split("=", 1) for kv in job.split("/")[1:])["model"]
                seeds.setdefault(model, set()).add(params["seed"])
        chunks = {
            m: sum(1 for j in names if j.startswith(f"{rule}/") and f"model={m}" in j)
            for m in seeds
        }
        assert seeds and max(chunks.values()) >= 2, (rule, chunks)
        assert all(len(s) == 1 for s in seeds.values()), (rule, seeds)
