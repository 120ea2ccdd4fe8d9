"""One source of config truth: config/README.md's key tables and config/config.yaml against the schema.

``tools/config_docs.py`` writes the README's default cells from ``src/pixelrobust/config.schema.yaml``
and refuses a schema key the README does not document (the library's defaults, :mod:`pixelrobust.schema`:
tests/unit/test_schema.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from helpers import REPO, schema
from pixelrobust import schema as prschema

README = REPO / "config" / "README.md"

spec = importlib.util.spec_from_file_location("config_docs", REPO / "tools" / "config_docs.py")
docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs)

# config/gpu.yaml (and config/config.yaml) set these to other values than the schema's defaults, by design
# (docs/development.md, "Config keys"): the schema's defaults are the textbook attacks (torchattacks') and a
# batch size that fits a 2-core CPU; the shipped configs run the P3 authors' settings. config/config.yaml also
# differs from gpu.yaml at its CPU sizing (docs/decisions.md, "Sizing of the default config").
DIFFER_BY_DESIGN = {
    "defense_eval.attack_settings.onepixel.batch_size": "candidate images per forward pass: 1024 for a GPU (schema: 100, a 2-core CPU)",
    "defense_eval.attack_settings.jsma.theta_space": "the authors' normalised-space theta (schema: torchattacks' pixels)",
    "defense_eval.attack_settings.jsma.target": "the authors' least likely target (schema: torchattacks' next class)",
    "defense_eval.attack_settings.jsma.search_domain": "the authors' until_clipped (schema: torchattacks' once)",
    "defense_eval.attack_settings.pgd.alpha": "the authors' step 0.1 in normalised space (schema: 0.025 in pixels)",
    "defense_eval.attack_settings.pgd.alpha_space": "the authors' normalised space (schema: pixels)",
}


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path != "models":
            out.update(flat(value, path + "."))
        else:
            out[path] = value
    return out


def test_the_committed_readme_is_the_generators_output():
    text = README.read_text(encoding="utf-8")
    assert docs.generate(text, schema()) == text, (
        "config/README.md's key tables differ from the schema: run ./with-venv python tools/config_docs.py "
        "(--check shows the difference)"
    )


def test_every_schema_key_is_documented_in_the_readme():
    """The keys the issue found undocumented among them: each named by its row or its parent row's meaning."""
    tables = docs.parse(README.read_text(encoding="utf-8"))
    keys = docs.leaves(schema())
    assert {
        "defense_eval.attack_settings.onepixel.strategy",
        "ssim.pgd.linf.alpha_factor",
        "ssim.pgd.l2.alpha_factor",
        "onepixel.screening.band",
        "datasets.<name>.layout",
        "seed",
    } <= set(keys)
    missing = [k for k in keys if k != "models" and not docs.covering(k, tables)]
    assert not missing, f"not documented in config/README.md: {missing}"


def test_the_readme_quotes_the_schemas_defaults():
    """Read back from the README (not from the generator): a row's default cell is the schema's default."""
    text = README.read_text(encoding="utf-8")
    rows = {tuple(r["keys"]): r["cells"][1].strip() for t in docs.parse(text) for r in t["rows"]}
    assert rows[("seed",)] == "`0`"
    assert (
        rows[("datasets.imagenet.resize",)] == "`256`"
        and rows[("datasets.imagenet.crop",)] == "`224`"
    )
    assert rows[("ssim.window", "ssim.stride")] == "`8`, `4`"
    assert rows[("prm.train.epochs", "prm.train.max_steps")] == "`30`, `null`"
    assert (
        rows[("masked_pgd.linf",)] == "`{eps: 8/255, alpha: 2/255, steps: 10, random_start: true}`"
    )
    # the schema's own default, not config.yaml's 1024; strategy (undocumented before) is there
    assert rows[("defense_eval.attack_settings.onepixel",)] == (
        "`{popsize: 400, maxiter: 100, F: 0.5, CR: 1.0, batch_size: 100, strategy: rand1}`"
    )
    # a parent row leaves out the keys that have rows of their own (pool, primary, ...)
    assert "pool" not in rows[("defense_eval.defense_settings.stochastic_prm",)]
    assert "primary" not in rows[("ssim.compare",)] and "epsilon: 1e-4" in rows[("ssim.compare",)]
    assert (
        rows[("datasets.<name>.layout",)] == "required"
        and rows[("datasets.<name>.labels",)] == "`null`"
    )


def test_a_new_or_changed_schema_key_changes_the_generated_readme():
    text = docs.generate(
        README.read_text(encoding="utf-8"), schema()
    )  # (as generated: the test above checks the file)
    s = schema()
    s["properties"]["onepixel"]["properties"]["bootstrap"]["default"] = 1234
    out = docs.generate(text, s)
    assert (
        "| `onepixel.bootstrap` | `1234` |" in out and "| `onepixel.bootstrap` | `1000` |" in text
    )
    assert out.replace("`1234`", "`1000`", 1) == text  # nothing else moved
    # a new key with a description: a row at the end of its section's table, its default and description
    s = schema()
    s["properties"]["synthesis"]["properties"]["new_knob"] = {
        "type": "integer",
        "default": 7,
        "description": "A knob | with a bar.",
    }
    out = docs.generate(text, s)
    lines = out.split("\n")
    i = lines.index("| `synthesis.new_knob` | `7` | A knob \\| with a bar. |")
    assert lines[i - 1].startswith("| `synthesis.examples` |") and lines[i + 1] == ""
    # ... and without one: refused, naming the key
    del s["properties"]["synthesis"]["properties"]["new_knob"]["description"]
    with pytest.raises(docs.DocsError, match="config key synthesis.new_knob is not documented"):
        docs.generate(text, s)


def test_a_key_under_a_documented_parent_must_be_named_in_its_meaning():
    """The miss the issue found: defense_eval.attack_settings.onepixel.strategy, shown nowhere."""
    text = README.read_text(encoding="utf-8")
    row = next(
        line for line in text.split("\n") if line.startswith("| `attack_settings.onepixel` |")
    )
    broken = text.replace(row, row.replace("`strategy: rand1`", "rand/1"))
    assert broken != text
    tables = docs.parse(broken)
    assert not docs.covering("defense_eval.attack_settings.onepixel.strategy", tables)
    assert docs.covering("defense_eval.attack_settings.onepixel.popsize", tables)
    s = schema()
    del s["properties"]["defense_eval"]["properties"]["attack_settings"]["properties"]["onepixel"][
        "properties"
    ]["strategy"]["description"]
    with pytest.raises(
        docs.DocsError, match="defense_eval.attack_settings.onepixel.strategy is not documented"
    ):
        docs.generate(broken, s)


@pytest.mark.parametrize(
    "where,path,parent",
    [
        (("$defs", "slic"), "onepixel.segmentation.<dataset>.sigma", "onepixel.segmentation"),
        (("$defs", "image_range"), "prm.train.images.<dataset>.sigma", "prm.train.images"),
        (("$defs", "per_dataset_int"), "masked_pgd.n_images.sigma", "masked_pgd.n_images"),
        (
            ("properties", "robust_compare", "properties", "pairs", "items"),
            "robust_compare.pairs.sigma",
            "robust_compare.pairs",
        ),
        (("$defs", "pgd"), "masked_pgd.l2.sigma", "masked_pgd.l2"),  # l2: oneOf [null, pgd]
    ],
    ids=["slic", "image_range", "per_dataset_int", "pairs.items", "oneOf"],
)
def test_a_key_below_a_dataset_map_an_item_or_a_branch_must_be_named_by_its_parent_row(
    where, path, parent
):
    """Keys the walk once missed: a new key (with a default and a description) there is refused until
    its parent row's meaning names it; no row is added for it."""
    text = README.read_text(encoding="utf-8")
    s = schema()
    node = s
    for part in where:
        node = node[part]
    node["properties"]["sigma"] = {"type": "integer", "default": 3, "description": "A new key."}
    assert path in docs.leaves(s)
    with pytest.raises(
        docs.DocsError, match=rf"{re.escape(path)} is not documented.*row of `{parent}`"
    ):
        docs.generate(text, s)
    # named in the parent row's meaning: documented
    row = next(line for line in text.split("\n") if line.startswith(f"| `{parent}"))
    meaning = docs.split_row(row)[2]
    named = text.replace(row, row.replace(meaning, meaning.rstrip() + " `sigma`: a new key. "))
    assert docs.covering(path, docs.parse(named))
    try:
        out = docs.generate(named, s)
    except docs.DocsError as e:
        # per_dataset_int is other keys' too, $defs/pgd masked_pgd.linf's too: they are refused, not this one
        assert f"{path} " not in str(e) and where in {
            ("$defs", "per_dataset_int"),
            ("$defs", "pgd"),
        }
    else:
        assert f"| `{path}`" not in out  # documented by its parent row: no row added


def test_a_row_naming_no_schema_key_and_a_missing_model_field_are_refused():
    text = README.read_text(encoding="utf-8")
    with pytest.raises(docs.DocsError, match="documents onepixel.bootstrapp, which is not a key"):
        docs.generate(
            text.replace("| `onepixel.bootstrap` |", "| `onepixel.bootstrapp` |"), schema()
        )
    with pytest.raises(docs.DocsError, match=r"models.<name>.cam_layer is in the schema"):
        docs.generate(text.replace("| `cam_layer` |", "| `the_layer` |"), schema())


def test_values_are_quoted_as_yaml():
    assert (
        docs.fmt(0.0313725490196) == "8/255"
        and docs.fmt(2 / 255) == "2/255"
        and docs.fmt(0.031) == "0.031"
    )
    assert docs.fmt(1e-4) == "1e-4" and docs.fmt(3e-06) == "3e-6" and docs.fmt(0.001) == "0.001"
    assert (
        docs.fmt({"a": [1, 2.5], "b": None, "c": True, "d": "corners+faces"})
        == "{a: [1, 2.5], b: null, c: true, d: corners+faces}"
    )
    assert docs.fmt("two words") == "'two words'"


def test_config_yaml_sets_the_schemas_defaults_except_where_documented():
    """config/gpu.yaml is the schema's defaults but for DIFFER_BY_DESIGN; config/config.yaml is gpu.yaml but for
    its 2-core CPU sizing (issue #28), and every key of that sizing is named in docs/decisions.md's "Sizing of the
    default config" with its reason."""
    filled = flat(prschema.defaults())

    def given(name):
        return flat(yaml.safe_load((REPO / "config" / name).read_text()))

    def differ(values):
        return {
            k
            for k, v in values.items()
            if not k.startswith(("models", "datasets.cifar")) and filled.get(k, "(no default)") != v
        }

    gpu, cpu = given("gpu.yaml"), given("config.yaml")
    assert differ(gpu) == set(DIFFER_BY_DESIGN), (
        f"config/gpu.yaml differs from the schema's defaults at {sorted(differ(gpu) - set(DIFFER_BY_DESIGN))} (set "
        "the schema default, or add the key with its reason to DIFFER_BY_DESIGN); equal now: "
        f"{sorted(set(DIFFER_BY_DESIGN) - differ(gpu))}"
    )
    sizing = {  # a key one of them leaves out has the schema's default there
        k for k in set(cpu) | set(gpu) if cpu.get(k, filled.get(k)) != gpu.get(k, filled.get(k))
    }
    assert (
        sizing <= differ(cpu) | set(DIFFER_BY_DESIGN)
        and differ(cpu) - sizing == set(DIFFER_BY_DESIGN) - sizing
    )
    text = (REPO / "docs" / "decisions.md").read_text(encoding="utf-8")
    section = text.split("## Sizing of the default config")[1].split("\n## ")[0]
    undocumented = sorted(k for k in sizing if f"`{k}`" not in section)
    assert not undocumented, (
        f"config/config.yaml's CPU sizing sets {undocumented} (other than config/gpu.yaml) without naming them in "
        'docs/decisions.md, "Sizing of the default config"'
    )


def _config_reads(source: str) -> list[tuple[str | None, int]]:
    """(enclosing function, line) of each read of the workflow config from the Snakemake object in a
    script or module: ``snakemake.config`` / ``smk.config``, or ``getattr(snakemake, "config", ...)``."""
    import ast

    tree = ast.parse(source)
    found = []

    def visit(node, function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        smk = lambda n: isinstance(n, ast.Name) and n.id in {"snakemake", "smk"}  # noqa: E731
        if isinstance(node, ast.Attribute) and node.attr == "config" and smk(node.value):
            found.append((function, node.lineno))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and smk(node.args[0])
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "config"
        ):
            found.append((function, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    return found


def test_nothing_but_provenance_reads_the_workflow_config():
    """A script or library function takes the keys it reads as params (so a config edit reruns exactly
    the jobs it affects); only provenance.from_snakemake reads the whole config, to record it."""
    assert _config_reads(
        "x = snakemake.config['seed']\ndef f(smk):\n    return getattr(smk, 'config')\n"
    ) == [
        (None, 1),
        ("f", 3),
    ]
    assert _config_reads("p = snakemake.params\nx = p.config\n") == []  # a param named config: fine
    reads = {}
    files = sorted((REPO / "workflow" / "scripts").rglob("*.py")) + sorted(
        (REPO / "src" / "pixelrobust").rglob("*.py")
    )
    assert len(files) > 40
    for path in files:
        for function, line in _config_reads(path.read_text(encoding="utf-8")):
            reads.setdefault(str(path.relative_to(REPO)), []).append((function, line))
    allowed = "src/pixelrobust/provenance.py"
    assert set(reads) <= {allowed}, f"read the config from the Snakemake object: {reads}"
    assert {function for function, _ in reads.get(allowed, [])} == {"from_snakemake"}


def test_the_schema_ships_in_the_package(tmp_path):
    """An installed pixelrobust (a wheel, no checkout beside it) has its schema: package data, read with
    importlib.resources, the same file the workflow validates against."""
    import os
    import shutil
    import subprocess
    import sys
    import zipfile

    package = Path(prschema.__file__).resolve().parent
    assert Path(str(prschema.SCHEMA)).resolve().parent == package and prschema.SCHEMA.is_file()
    assert "prschema.SCHEMA" in (REPO / "workflow" / "rules" / "common.smk").read_text()
    build = tmp_path / "build"
    shutil.copytree(
        REPO / "src", build / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, build / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "dist"), str(build)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("pixelrobust-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        assert "pixelrobust/config.schema.yaml" in whl.namelist()
        whl.extractall(tmp_path / "site")
    code = (
        "from pixelrobust import data, schema; print(schema.__file__); "
        "print(data.image_size('imagenet', {'crop': 160}), schema.defaults()['datasets']['imagenet']['crop'])"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    where, sizes = run.stdout.split("\n")[:2]
    assert where.startswith(str(tmp_path / "site")) and sizes == "(160, 160) 224"
