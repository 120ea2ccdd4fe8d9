"""Keep config/README.md's key tables in step with the config schema (docs/development.md, "Config keys").

    ./with-venv python tools/config_docs.py           # rewrite config/README.md's default cells, add rows for new keys
    ./with-venv python tools/config_docs.py --check   # exit 1 and say what differs, writing nothing

``src/pixelrobust/config.schema.yaml`` is the one source of every key, its default and (for a new key) its
first description. In config/README.md, every table whose header is ``| key | default | meaning |`` is
read row by row: the key cell names the keys the row documents (backticked; relative to the section's key
when the section is ``## `name```; a bare name after the first key is a sibling of it: ``prm.train.epochs``,
``max_steps``), the meaning cell is prose written by hand and kept as it is, and the default cell is
**generated**: each key's default as the schema (with its nested defaults filled in, as the workflow fills
them) gives it. Every leaf key of the schema must be documented: named by a row, or under a row that names
one of its parents and mentions the leaf by name in its meaning. The walk goes into array items and
``oneOf``/``anyOf``/``allOf`` branches and, in a per-dataset map, into the datasets' settings (as
``<dataset>``; :func:`walk_keys`); such a key must be named in its parent row's meaning (an error names
the row). Any other key the README does not document gets a new row at the end of its section's table,
its meaning the schema's ``description`` (an error when the schema has none). Outside these tables nothing is touched. The fields of a model (``$defs/model``) must
each be named in the ``| field | meaning |`` table of ``## `models```.

``tests/workflow/test_config_docs.py`` fails when the committed README differs from this script's output.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pixelrobust import schema as schema_mod  # noqa: E402

SCHEMA = schema_mod.SCHEMA
README = REPO / "config" / "README.md"
KEY_HEADER = "| key | default | meaning |"
FIELD_HEADER = "| field | meaning |"
# Objects whose keys are names the user chooses: documented as <name> / <dataset> rows, not key by key.
NAME = "<name>"
DATASET = "<dataset>"  # the datasets of a per-dataset map ({cifar10: ..., imagenet: ...})


class DocsError(Exception):
    """The README cannot be generated (a key without documentation or description, a row naming no key)."""


def load_schema(path=SCHEMA) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def resolve(node: dict, schema: dict) -> dict:
    return schema_mod.resolve(node, schema)


def defaults(schema: dict) -> dict:
    """The config an empty config file becomes: the schema's defaults, nested ones filled in (as the
    workflow's validation with ``set_default`` fills them)."""
    return schema_mod.defaults(schema)


def walk_keys(schema: dict) -> dict[str, tuple[dict, bool]]:
    """Every documented key of the schema: {dotted path: (its schema, nested)}. A key is a leaf when it
    holds no named keys of its own. The walk goes into ``properties``, a dict ``additionalProperties``,
    array ``items`` (an item's keys are the array's: ``robust_compare.pairs.standard``) and the branches
    of ``oneOf``/``anyOf``/``allOf`` (``masked_pgd.l2.eps``); in a per-dataset map (``{cifar10: ...}``
    beside ``additionalProperties``) the datasets are ``<dataset>`` (``prm.train.images.<dataset>.start``).
    ``nested``: the key lies below a per-dataset map, an item or a branch; it must be named in the meaning
    of a row naming its parent (or have a row of its own): no row is added for it. Under ``datasets`` and
    ``models`` a name of the user's own is ``<name>``."""
    out: dict[str, tuple[dict, bool]] = {}
    dataset_names = set(resolve(schema["properties"]["datasets"], schema).get("properties") or {})

    def children(node: dict) -> tuple[dict[str, list[dict]], bool]:
        """node's own keys {name: [schemas]}, and whether any came from an item, a branch or a dataset map."""
        found: dict[str, list[dict]] = {}
        nested = False
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        per_dataset = isinstance(extra, dict)
        for key, sub in props.items():
            name = DATASET if per_dataset and key in dataset_names else key
            found.setdefault(name, []).append(sub)
        if per_dataset:
            found.setdefault(DATASET, []).append(extra)
            nested = True
        parts = [node["items"]] if isinstance(node.get("items"), dict) else []
        parts += [b for k in ("oneOf", "anyOf", "allOf") for b in node.get(k) or []]
        for part in parts:
            sub_found, _ = children(resolve(part, schema))
            for name, subs in sub_found.items():
                found.setdefault(name, []).extend(subs)
                nested = True
        return found, nested

    def walk(node: dict, path: str, nested: bool) -> None:
        node = resolve(node, schema)
        if path == "models":
            out[path] = (node, False)  # the model's fields: the README's field table (check_fields)
            return
        if path == "datasets":
            for key, sub in (node.get("properties") or {}).items():
                walk(sub, f"{path}.{key}", False)
            walk(node["additionalProperties"], f"{path}.{NAME}", False)
            return
        found, deeper = children(node)
        if not found:
            out[path] = (node, nested)
            return
        for name, subs in found.items():
            for sub in subs:
                walk(sub, f"{path}.{name}" if path else name, nested or deeper)

    walk(schema, "", False)
    return out


def leaves(schema: dict) -> dict[str, dict]:
    """Every documented key of the schema (:func:`walk_keys`): {dotted path: its schema}."""
    return {path: node for path, (node, _) in walk_keys(schema).items()}


def node_at(schema: dict, path: str) -> dict:
    return schema_mod.node(path, schema)


def fmt_number(x) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    text = repr(float(x))
    if len(text) > 8 and x != 0:  # 8/255 reads better than 0.0313725490196 (the schema's digits)
        k = x * 255
        if abs(k - round(k, 3)) < 1e-5 * abs(k):
            return f"{round(k, 3):g}/255"
    if 0 < abs(x) < 1e-3:  # 1e-4, not 0.0001
        text = f"{x:.15e}"
        mantissa, exponent = text.split("e")
        text = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return text


def fmt(value) -> str:
    """A value as YAML flow text (the way the README quotes defaults)."""
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        return fmt_number(value)
    if isinstance(value, str):
        return value if value and re.fullmatch(r"[A-Za-z0-9_.+/:<>-]+", value) else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_text(path: str, schema: dict, filled: dict, own_rows: set[str] = frozenset()) -> str:
    """A key's default as the README quotes it; an object's keys that have rows of their own are left out."""
    try:
        value = schema_mod.lookup(filled, path)
    except KeyError:
        pass
    else:
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if f"{path}.{k}" not in own_rows}
        return f"`{fmt(value)}`"
    parent, _, key = path.rpartition(".")
    node = node_at(schema, path)
    if "default" in node:
        return f"`{fmt(node['default'])}`"
    if key in (node_at(schema, parent).get("required") or []):
        return "required"
    return "none"


def row_keys(cell: str, section: str | None) -> list[str]:
    """Dotted paths named in a key cell: `a.b`, `c` → a.b, a.c; relative to the section's key."""
    names = re.findall(r"`([^`]+)`", cell)
    if not names:
        raise DocsError(f"config/README.md: the key cell {cell.strip()!r} names no `key`")
    paths = []
    first = None
    for name in names:
        name = name.removesuffix(".<dataset>")
        if first is None or "." in name:
            if section and name.split(".")[0] != section:
                name = f"{section}.{name}"
            first = name
            paths.append(name)
        else:
            paths.append(f"{first.rpartition('.')[0]}.{name}" if "." in first else name)
    return paths


def split_row(line: str) -> list[str]:
    cells = [c for c in re.split(r"(?<!\\)\|", line.strip())]
    return cells[1:-1]


def parse(text: str) -> list[dict]:
    """The README's key tables: [{section, header line index, rows: [{line, keys, cells}]}]."""
    lines = text.split("\n")
    tables, section = [], None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(#+) (.*)$", line)
        if m and len(m.group(1)) == 2:
            sm = re.match(r"^`([a-z_]+)`", m.group(2))
            section = sm.group(1) if sm else None
        if line.strip() == KEY_HEADER:
            table = {"section": section, "header": i, "rows": []}
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = split_row(lines[i])
                if len(cells) != 3:
                    raise DocsError(
                        f"config/README.md line {i + 1}: a key table row needs 3 cells, not {len(cells)}"
                    )
                table["rows"].append(
                    {"line": i, "keys": row_keys(cells[0], section), "cells": cells}
                )
                i += 1
            table["end"] = i
            tables.append(table)
            continue
        i += 1
    return tables


def mentions(meaning: str, key: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])", meaning) is not None


def covering(path: str, tables: list[dict]) -> bool:
    path = path.removesuffix(f".{DATASET}")  # a per-dataset map's values: its own row
    for table in tables:
        for row in table["rows"]:
            for key in row["keys"]:
                if key == path:
                    return True
                if path.startswith(key + ".") and mentions(
                    row["cells"][2], path.rpartition(".")[2]
                ):
                    return True
    return False


def check_fields(text: str, schema: dict) -> list[str]:
    """Every field of a model is named in the models section's field table."""
    model = resolve(schema["$defs"]["model"], schema)
    start = text.find(FIELD_HEADER)
    if start < 0:
        return [f"config/README.md has no models field table ({FIELD_HEADER})"]
    block = text[start:].split("\n\n", 1)[0]
    named = set()
    for line in block.split("\n")[2:]:
        named |= set(
            re.findall(r"`([A-Za-z_0-9]+)`", split_row(line)[0] if line.startswith("|") else "")
        )
    return [
        f"models.<name>.{f} is in the schema ($defs/model) but not in config/README.md's models field table: "
        f"add a row | `{f}` | <what it means> |"
        for f in model.get("properties", {})
        if f not in named
    ]


def generate(text: str, schema: dict) -> str:
    """The README with every key table's default cells written from the schema and a row added for
    each undocumented key; raises DocsError for what cannot be generated."""
    filled = defaults(schema)
    tables = parse(text)
    walked = walk_keys(schema)
    known = {path: node for path, (node, _) in walked.items()}
    errors = check_fields(text, schema)
    lines = text.split("\n")
    own_rows = {key for table in tables for row in table["rows"] for key in row["keys"]}
    for table in tables:
        for row in table["rows"]:
            for key in row["keys"]:
                if key not in known and not any(k.startswith(key + ".") for k in known):
                    errors.append(
                        f"config/README.md line {row['line'] + 1} documents {key}, which is not a key of the "
                        "schema: fix or remove the row"
                    )
            if errors:
                continue
            cells = row["cells"]
            cells[1] = (
                " "
                + ", ".join(default_text(k, schema, filled, own_rows) for k in row["keys"])
                + " "
            )
            lines[row["line"]] = "|" + "|".join(cells) + "|"
    added: dict[int, list[str]] = {}
    for path in known:
        if path == "models" or covering(path, tables):
            continue
        # below a per-dataset map, an item or a branch: its parent's row names it, no row is added
        if walked[path][1]:
            parent, _, key = path.rpartition(".")
            errors.append(
                f"config key {path} is not documented in config/README.md: name `{key}` in the meaning of "
                f"the row of `{parent.removesuffix('.' + DATASET)}` (or give it a row of its own)"
            )
            continue
        top = path.split(".")[0]
        if top in filled and isinstance(known[path], dict) and "." not in path:
            table = next(
                t for t in tables if t["section"] is None
            )  # a new top-level key: "Top level"
        else:
            table = next((t for t in tables if t["section"] == top), None)
        if table is None:
            errors.append(
                f"config key {path} is in section {top}, which config/README.md has no key table for: add a "
                f"section '## `{top}`' with a table headed '{KEY_HEADER}' (and its '|---|---|---|' line); "
                "this script fills in its rows"
            )
            continue
        description = " ".join(str(known[path].get("description", "")).split())
        if not description:
            errors.append(
                f"config key {path} is not documented in config/README.md and has no description in "
                "src/pixelrobust/config.schema.yaml: add one (it becomes the README row) or a README row"
            )
            continue
        added.setdefault(table["end"], []).append(
            f"| `{path}` | {default_text(path, schema, filled)} | {description.replace('|', chr(92) + '|')} |"
        )
    if errors:
        raise DocsError("\n".join(errors))
    for end in sorted(added, reverse=True):
        lines[end:end] = added[end]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="say what differs and exit 1; write nothing"
    )
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    try:
        new = generate(text, load_schema())
    except DocsError as e:
        print(f"config/README.md cannot be generated:\n{e}", file=sys.stderr)
        return 1
    if new == text:
        print("config/README.md is up to date with the schema")
        return 0
    if args.check:
        import difflib

        sys.stdout.writelines(
            difflib.unified_diff(
                text.splitlines(True),
                new.splitlines(True),
                "config/README.md",
                "generated from the schema",
            )
        )
        print(
            "\nconfig/README.md differs from the schema: run ./with-venv python tools/config_docs.py",
            file=sys.stderr,
        )
        return 1
    README.write_text(new, encoding="utf-8")
    print("config/README.md rewritten from the schema")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
