"""The tests' layout (docs/development.md, "Tests"), one rule by name: library module ``pixelrobust.<m>`` has
its tests in ``tests/unit/test_<m>.py`` (``figures/``: ``test_figures.py``, ``zoo/``: ``test_zoo.py``); a test
that runs Snakemake is in ``tests/workflow/``; fixtures live in ``tests/conftest.py``, plain helpers in
``tests/helpers/``, and no test imports from a conftest. Read from the files."""

from __future__ import annotations

import ast
import re

from helpers import REPO

TESTS = REPO / "tests"
LIBRARY = REPO / "src" / "pixelrobust"


def library_modules() -> set[str]:
    """pixelrobust's modules (``<m>.py``) and subpackages (``figures``, ``zoo``)."""
    files = {p.stem for p in LIBRARY.glob("*.py") if p.stem != "__init__"}
    return files | {p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file()}


def imports(path) -> set[str]:
    """The modules a file imports (``import a.b``: ``a.b``; ``from a import b``: ``a``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_every_unit_test_file_is_named_after_a_library_module():
    named = {p.stem.removeprefix("test_") for p in (TESTS / "unit").glob("test_*.py")}
    assert len(named) >= 25
    assert sorted(named - library_modules()) == [], (
        "tests/unit/test_<m>.py: <m> is a module of pixelrobust"
    )


def test_test_files_sit_in_unit_or_workflow():
    stray = [
        p for p in TESTS.rglob("test_*.py") if p.parent not in (TESTS / "unit", TESTS / "workflow")
    ]
    assert sorted(str(p.relative_to(TESTS)) for p in stray) == []


def test_modules_without_a_test_file_say_where_they_are_tested():
    """A library module without ``tests/unit/test_<m>.py`` is named in the docs' "Tests" section."""
    section = (REPO / "docs" / "development.md").read_text().split("\n### Tests\n", 1)[1]
    section = re.split(r"\n##+ ", section, maxsplit=1)[0]
    missing = library_modules() - {
        p.stem.removeprefix("test_") for p in (TESTS / "unit").glob("test_*.py")
    }
    assert sorted(m for m in missing if f"`{m}`" not in section) == []


def test_unit_tests_do_not_run_snakemake():
    """Running Snakemake (``helpers.snakemake``, or its command line) makes a test a workflow test."""
    for path in (TESTS / "unit").glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            a.asname or a.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "helpers"
            for a in node.names
        }
        assert not names & {"snakemake", "SNAKEMAKE", "TINY", "DEFAULT"}, (
            f"{path.name} runs Snakemake: its place is tests/workflow/"
        )
        assert not re.search(r"-m\"?,\s*\"snakemake\"", path.read_text(encoding="utf-8")), path.name


def test_no_test_imports_from_a_conftest():
    """Plain helpers live in tests/helpers/ (``from helpers import REPO``); conftest.py files hold fixtures."""
    importers = sorted(
        str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py") if "conftest" in imports(p)
    )
    assert importers == []
