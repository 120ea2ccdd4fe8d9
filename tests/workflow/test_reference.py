"""docs/reference/: the committed default run was made by a config identical to the shipped default (issue #28).

``tools/reference.py`` writes the folder from a finished run and checks it; these tests run that check on the
committed folder and show on a made-up one that it can fail: a changed default value, a changed schema default, a
provenance record of another config, a claims table of an older summary."""

from __future__ import annotations

import importlib.util
import json

import yaml

from helpers import REPO
from pixelrobust import schema as prschema
from pixelrobust.summary import CLAIM_COLUMNS

spec = importlib.util.spec_from_file_location("reference", REPO / "tools" / "reference.py")
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)


def test_the_committed_reference_was_made_by_the_shipped_default_config():
    assert reference.check() == []
    readme = (REPO / "docs" / "reference" / "README.md").read_text()
    assert "measured wall time" in readme and "config/config.yaml" in readme
    for name in ("SUMMARY.md", "tables/claims.csv", "tables/claims.provenance.json"):
        assert (REPO / "docs" / "reference" / name).is_file(), name
    arrays = [
        p
        for p in (REPO / "docs" / "reference").rglob("*")
        if p.suffix in (".npz", ".pt", ".npy", ".pdf")
    ]
    assert not arrays


def made_up_reference(folder, sha):
    """A reference folder as tools/reference.py writes it, quoting config sha256 ``sha``."""
    (folder / "tables").mkdir(parents=True)
    (folder / "SUMMARY.md").write_text(
        f"# x\n\nConfig sha256 `{sha}` from `config/config.yaml`; git commit `abc`. The full config is at the end.\n"
    )
    (folder / "tables" / "claims.csv").write_text(",".join(CLAIM_COLUMNS) + "\n")
    record = {"config_sha256": sha, "inputs": [{"config_sha256": sha, "inputs": []}]}
    (folder / "tables" / "claims.provenance.json").write_text(json.dumps(record, indent=1))
    return folder


def test_the_check_passes_a_reference_of_the_shipped_config_and_fails_a_changed_one(tmp_path):
    shipped = reference.default_config_sha256()
    ref = made_up_reference(tmp_path / "ref", shipped)
    assert reference.check(reference=ref) == []
    # the same file rewritten: the hash is of the validated config, not of the file's text
    text = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump(text))
    assert reference.default_config_sha256(same) == shipped
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**text, "seed": int(text.get("seed", 0)) + 1}))
    problems = reference.check(reference=ref, config=changed)
    assert len(problems) == 2 and "default config changed after the reference run" in problems[0]
    assert "claims.provenance.json" in problems[1]


def test_a_new_schema_default_fails_the_check(tmp_path, monkeypatch):
    """The shipped config sets every key the schema has, so a schema change reaches the default run as a new key
    with its default (a new feature): the validated config, and so its hash, changes."""
    ref = made_up_reference(tmp_path / "ref", reference.default_config_sha256())
    edited = yaml.safe_load(prschema.SCHEMA.read_text())
    edited["properties"]["synthesis"]["properties"]["new_setting"] = {
        "type": "integer",
        "default": 3,
    }
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(edited))
    monkeypatch.setattr(prschema, "SCHEMA", path)
    problems = reference.check(reference=ref)
    assert problems and "default config changed after the reference run" in problems[0]


def test_a_provenance_record_of_another_config_or_an_old_claims_table_fails_the_check(tmp_path):
    sha = reference.default_config_sha256()
    ref = made_up_reference(tmp_path / "ref", sha)
    record = ref / "tables" / "claims.provenance.json"
    record.write_text(record.read_text().replace(sha, "0" * 64, 1))
    problems = reference.check(reference=ref)
    assert (
        len(problems) == 1 and "claims.provenance.json" in problems[0] and "0" * 64 in problems[0]
    )
    ref = made_up_reference(tmp_path / "ref2", sha)
    (ref / "tables" / "claims.csv").write_text(",".join(CLAIM_COLUMNS[:-3]) + "\n")
    problems = reference.check(reference=ref)
    assert len(problems) == 1 and "forcerun summary" in problems[0]
