"""The config schema's defaults, for the library used without Snakemake.

``config.schema.yaml`` beside this module (package data, so an installed ``pixelrobust`` has it) is the
one source of every config key's default. The workflow validates against the same file and
gets the defaults there (``set_default``); a library function that takes a part of a
config (``datasets.imagenet``, ``onepixel.screening``, ...) fills in what its caller left out with
:func:`with_defaults`, so no Python fallback repeats a default (docs/development.md, "Config keys").
"""

from __future__ import annotations

import copy
import functools
from importlib import resources

import yaml
from jsonschema import Draft202012Validator, validators

# A path in an ordinary install (a wheel unpacked into site-packages, an editable checkout): the workflow
# gives it to Snakemake's validate.
SCHEMA = resources.files("pixelrobust").joinpath("config.schema.yaml")


@functools.lru_cache(maxsize=1)
def load() -> dict:
    """The schema, parsed (cached: callers must not change it)."""
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


def resolve(node: dict, schema: dict) -> dict:
    """``node`` with its ``$ref`` (to ``#/$defs/...``) followed."""
    while isinstance(node, dict) and "$ref" in node:
        target = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _set_defaults(properties_validator):
    """jsonschema's ``properties`` keyword that first sets each missing property's default (a copy), as
    Snakemake's ``validate(..., set_default=True)`` does (the jsonschema FAQ's recipe)."""

    def properties(validator, properties, instance, node):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub:  # as Snakemake: a default beside a $ref, not behind it
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from properties_validator(validator, properties, instance, node)

    return properties


def fill(node: dict, value, schema: dict):
    """Fill ``value`` (in place, where it is a mapping) with the defaults of schema ``node``, nested ones
    too, the way Snakemake's ``validate(..., set_default=True)`` fills a config; returns it.

    The same mechanism as Snakemake's: jsonschema validates ``value`` with a ``properties`` keyword that
    sets defaults first, so defaults are set wherever validation goes (``$ref``, ``additionalProperties``,
    ``items``, each ``oneOf``/``anyOf`` branch tried up to the first that fits, ``allOf``, ``if``/``then``).
    What does not validate is left to the workflow's validation to report (a library caller may pass a
    partial config); a default is not filled into a value that is not a mapping."""
    filler = validators.extend(
        Draft202012Validator,
        {"properties": _set_defaults(Draft202012Validator.VALIDATORS["properties"])},
    )
    root = node if node is schema else {**node, "$defs": schema.get("$defs", {})}
    for _ in filler(root).iter_errors(value):
        pass
    return value


def defaults(schema: dict | None = None) -> dict:
    """The config an empty config file becomes (every default, nested ones filled in)."""
    schema = load() if schema is None else schema
    return fill(schema, {}, schema)


def node(path: str, schema: dict | None = None) -> dict:
    """The schema of the key at dotted ``path`` (e.g. ``datasets.imagenet``)."""
    schema = load() if schema is None else schema
    out = resolve(schema, schema)
    for part in path.split("."):
        props = out.get("properties") or {}
        if part in props:
            out = resolve(props[part], schema)
        elif isinstance(out.get("additionalProperties"), dict):
            out = resolve(out["additionalProperties"], schema)
        else:
            raise KeyError(f"{path} is not a key of {SCHEMA.name}")
    return out


def lookup(config: dict, path: str):
    """The value at dotted ``path`` of ``config``; KeyError naming ``path`` when a part is missing."""
    node = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def with_defaults(path: str, given: dict | None) -> dict:
    """A copy of ``given`` (the config at ``path``, possibly partial or None) with the schema's defaults of
    ``path`` filled in where ``given`` leaves a key out; what ``given`` sets is kept as it is."""
    schema = load()
    return fill(node(path, schema), copy.deepcopy(dict(given or {})), schema)


__all__ = ["SCHEMA", "defaults", "fill", "load", "node", "lookup", "resolve", "with_defaults"]
