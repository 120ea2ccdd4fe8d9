"""The tests' layout (docs/development.md, "Tests"), one rule by name: library module ``pixelrobust.<m>`` has
its tests in ``tests/unit/test_<m>.py`` (``figures/``: ``test_figures.py``, ``zoo/``: ``test_zoo.py``); a test
that runs Snakemake is in ``tests/workflow/``; fixtures live in ``tests/conftest.py``, plain helpers in
``tests/helpers/``, and no test imports from a conftest or another test file. Read from the files."""

from __future__ import annotations

import ast
import re

import pytest

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


def test_pytest_collects_test_files_by_the_one_pattern():
    """pytest's default also collects ``*_test.py``: pyproject.toml keeps it to ``test_*.py``, and no file of
    the other pattern waits uncollected."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as in test_metadata.py
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert settings["python_files"] == ["test_*.py"]
    assert sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("*_test.py")) == []


def test_modules_without_a_test_file_say_where_they_are_tested():
    """A library module without ``tests/unit/test_<m>.py`` is named in the docs' "Tests" section."""
    section = (REPO / "docs" / "development.md").read_text().split("\n### Tests\n", 1)[1]
    section = re.split(r"\n##+ ", section, maxsplit=1)[0]
    missing = library_modules() - {
        p.stem.removeprefix("test_") for p in (TESTS / "unit").glob("test_*.py")
    }
    assert sorted(m for m in missing if f"`{m}`" not in section) == []


# what runs Snakemake: helpers' runner and its command lines, and the fixture of the tiny run
RUNNERS = {"snakemake", "SNAKEMAKE", "TINY", "DEFAULT"}


def snakemake_uses(source: str) -> list[str]:
    """Where ``source`` runs Snakemake: a runner imported from ``helpers`` (by its name, whatever its alias),
    ``helpers.<runner>`` through an imported ``helpers`` (any alias), a command list or tuple starting
    ``snakemake`` or holding ``-m``, ``snakemake``, or the ``tiny_run`` fixture (an argument or by name)."""
    tree = ast.parse(source)
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "helpers":
            found += [
                f"line {node.lineno}: imports helpers.{a.name}"
                for a in node.names
                if a.name in RUNNERS
            ]
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.split(".")[0] == "helpers"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in RUNNERS:
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(f"line {node.lineno}: {base.id}...{node.attr}")
        elif isinstance(node, (ast.List, ast.Tuple)):
            words = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            if words[:1] == ["snakemake"] or any(
                a == "-m" and b == "snakemake" for a, b in zip(words, words[1:])
            ):
                found.append(f"line {node.lineno}: a snakemake command line")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            found += [
                f"line {node.lineno}: {node.name} asks for tiny_run"
                for a in args
                if a.arg == "tiny_run"
            ]
        elif isinstance(node, ast.Constant) and node.value == "tiny_run":
            found.append(f"line {node.lineno}: names the tiny_run fixture")
    return found


def test_unit_tests_do_not_run_snakemake():
    """Running Snakemake (helpers' runner, its command line, the tiny run) makes a test a workflow test."""
    uses = {
        path.name: snakemake_uses(path.read_text(encoding="utf-8"))
        for path in (TESTS / "unit").glob("test_*.py")
    }
    assert {name: u for name, u in uses.items() if u} == {}, "their place is tests/workflow/"


@pytest.mark.parametrize(
    "source",
    [
        "from helpers import snakemake as sm",
        "from helpers import REPO, TINY",
        "import helpers\nhelpers.snakemake([], '.')",
        "import helpers as h\nh.SNAKEMAKE",
        "import subprocess\nsubprocess.run(['snakemake', '-n'])",
        "run(('python', '-m', 'snakemake', '-n'))",
        "def test_x(tiny_run):\n    pass",
        "def test_x(request):\n    request.getfixturevalue('tiny_run')",
    ],
    ids=[
        "aliased_runner",
        "command_list_constant",
        "helpers_attribute",
        "aliased_helpers_attribute",
        "subprocess_list",
        "python_m_tuple",
        "fixture_argument",
        "fixture_by_name",
    ],
)
def test_each_way_of_running_snakemake_is_found(source):
    assert len(snakemake_uses(source)) == 1, source


def test_library_calls_and_other_commands_are_not_taken_for_snakemake():
    source = (
        "import subprocess, sys\nfrom helpers import REPO, SCHEMA\nimport helpers\n"
        "from snakemake.utils import validate\nhelpers.REPO\n"
        "subprocess.run([sys.executable, '-c', 'print(1)'])\nx = ['ruff', 'snakemake']\n"
        "def test_x(tmp_path, mirror):\n    pass\n"
    )
    assert snakemake_uses(source) == []


def test_no_test_imports_another_test_file():
    """Helpers shared by two test files live in tests/helpers/, not in one of them (``from test_x import f``)."""
    importers = sorted(
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("*.py")
        if any(
            m.split(".")[-1].startswith("test_") or m.split(".")[0] == "tests" for m in imports(p)
        )
    )
    assert importers == []


def test_no_test_imports_from_a_conftest():
    """Plain helpers live in tests/helpers/ (``from helpers import REPO``); conftest.py files hold fixtures."""
    importers = sorted(
        str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py") if "conftest" in imports(p)
    )
    assert importers == []
