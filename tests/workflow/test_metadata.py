"""Project metadata: the licence file matches pyproject, CITATION.cff cites the project and the three papers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def test_license_file_is_the_license_pyproject_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert (
        declared == "MIT"
        and text.startswith("MIT License")
        and "WITHOUT WARRANTY OF ANY KIND" in text
    )


def test_citation_cites_the_project_and_the_three_papers():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == project["version"] and cff["license"] == project["license"]
    refs = {r.get("url", r.get("repository-code")): r for r in cff["references"]}
    # P1, P2 (arXiv) and P3 (the authors' code, the only part of P3 with an address)
    assert set(refs) == {
        "https://arxiv.org/abs/2106.09872",
        "https://arxiv.org/abs/2106.12731",
        "https://github.com/niffler92/where-adversarial-added",
    }
    for ref in cff["references"]:
        assert ref["title"] and ref["authors"] and ref["year"] in (2019, 2021)
    readme = (ROOT / "README.md").read_text()
    for arxiv in ("2106.09872", "2106.12731"):
        assert arxiv in readme  # the README names the same papers
