"""Rule -> script -> library entry point by name, one convention (docs/development.md, "Layout";
pixelrobust.runtime.job): rule ``X`` runs ``workflow/scripts/X.py``, which opens ``with job(snakemake)`` and
makes one call of ``pixelrobust.<module>.X`` (a figure: ``pixelrobust.figures.X.plot``) with keywords only,
``out`` among them, that the function takes, leaving out none it requires. Read from the files (no Snakemake
run)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "workflow" / "scripts"


def rule_scripts() -> dict[str, Path]:
    """{rule: its script} for every rule of workflow/rules/*.smk with a ``script:`` directive."""
    found = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", text, re.S | re.M):
            script = re.search(r"^\s+script:\s*\n\s+\"([^\"]+)\"", m.group(2), re.M)
            if script:
                found[m.group(1)] = (smk.parent / script.group(1)).resolve()
    return found


def test_every_rule_runs_the_script_of_its_name():
    rules = rule_scripts()
    assert len(rules) >= 39
    assert {r: p.name for r, p in rules.items() if p.name != f"{r}.py"} == {}
    assert sorted(p.stem for p in SCRIPTS.glob("*.py")) == sorted(rules)


def entry_call(path: Path) -> tuple[ast.Call, object, str]:
    """The script's one call inside ``with job(snakemake)``, the function it calls and that function's name
    as the script spells it (``X`` or ``X.plot``)."""
    tree = ast.parse(path.read_text())
    imported = {
        alias.asname or alias.name: f"{node.module}.{alias.name}"
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module.startswith("pixelrobust")
        for alias in node.names
    }
    jobs = [
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "job"
    ]
    (with_,) = [n for n in tree.body if isinstance(n, ast.With)]
    (item,) = with_.items
    assert jobs == [item.context_expr], "job is called once, as the with statement's context"
    assert ast.unparse(item.context_expr) == "job(snakemake)"
    (stmt,) = with_.body
    assert isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call), (
        "one call inside the job"
    )
    call = stmt.value
    name = ast.unparse(call.func)
    head, _, attr = name.partition(".")
    target = importlib.import_module(imported[head]) if attr else None
    if target is not None:
        function = getattr(target, attr)
    else:
        module, _, function_name = imported[head].rpartition(".")
        function = getattr(importlib.import_module(module), function_name)
    return call, function, imported[head] + (f".{attr}" if attr else "")


@pytest.mark.parametrize("script", sorted(p.stem for p in SCRIPTS.glob("*.py")))
def test_every_script_calls_the_entry_point_of_its_rule_by_the_convention(script):
    call, function, where = entry_call(SCRIPTS / f"{script}.py")
    assert where.endswith(f".{script}") or where == f"pixelrobust.figures.{script}.plot", (
        f"{script}.py calls {where}: the entry point is named after the rule"
    )
    params = inspect.signature(function).parameters
    keywords = {k.arg for k in call.keywords}
    assert not call.args and None not in keywords, f"{where}: keywords only"
    assert "out" in keywords, f"{where}: its outputs as one mapping, out"
    assert all(p.kind is p.KEYWORD_ONLY for p in params.values()), (
        f"{where}: keyword-only parameters"
    )
    assert keywords <= set(params), f"{where} takes no {sorted(keywords - set(params))}"
    required = {n for n, p in params.items() if p.default is p.empty}
    assert required <= keywords, f"{script}.py leaves out {sorted(required - keywords)}"
    device = [k.value for k in call.keywords if k.arg == "device"]
    assert all(ast.unparse(v) == "device" for v in device), "device: the one job() picked"


def test_the_module_map_names_every_rule_its_entry_point_and_tests():
    """docs/development.md's module map: each rule module's row lists exactly its rules, names each script
    rule's entry point (``module.X``; a figure: ``figures.X``), and everything it names exists."""
    section = (REPO / "docs" / "development.md").read_text().split("### Module map", 1)[1]
    section = section.split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `workflow/"):
            cells = ["", *line.strip().strip("|").split("|")]  # cells[1]: the path
            rows[re.search(r"`([^`]+)`", cells[1]).group(1)] = cells[1:]
    files = [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    actual = {
        str(f.relative_to(REPO)): set(re.findall(r"^rule (\w+):", f.read_text(), re.M))
        for f in files
    }
    listed = {path: set(re.findall(r"`(\w+)`", cells[1])) for path, cells in rows.items()}
    assert listed == actual
    scripts = rule_scripts()
    for path, rules in actual.items():
        named = set(re.findall(r"`([\w.]+)`", rows[path][2] + rows[path][3]))
        for rule in rules & set(scripts):
            assert any(n.split(".")[-1] == rule for n in named), f"{path}: no entry point of {rule}"
        for name in named - rules - {"zoo"}:
            try:
                importlib.import_module(f"pixelrobust.{name}")
            except ModuleNotFoundError:
                module, _, attr = name.rpartition(".")
                assert hasattr(importlib.import_module(f"pixelrobust.{module}"), attr), name
        for test in re.findall(r"`((?:unit|workflow)/test_\w+\.py)`", rows[path][4]):
            assert (REPO / "tests" / test).is_file(), test


# a keyword's value is the rule's input / param / wildcard of the same name (one documented exception)
RENAMED = {"train_cfg": "train"}


@pytest.mark.parametrize("script", sorted(p.stem for p in SCRIPTS.glob("*.py")))
def test_every_keyword_passes_the_rule_field_of_its_own_name(script):
    call, _, _ = entry_call(SCRIPTS / f"{script}.py")
    for k in call.keywords:
        value = (
            k.value.args[0]
            if isinstance(k.value, ast.Call)
            and ast.unparse(k.value.func) == "list"
            and k.value.args
            else k.value
        )
        if isinstance(value, ast.Attribute) and ast.unparse(value) not in (
            "snakemake.input",
            "snakemake.output",
        ):
            assert value.attr == RENAMED.get(k.arg, k.arg), (
                f"{script}.py: {k.arg}={ast.unparse(k.value)}"
            )
