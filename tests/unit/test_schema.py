"""pixelrobust.schema: the library fills a config with the schema's defaults as Snakemake's validation
does, and no Python fallback repeats a schema default (the README's side: tests/workflow/test_config_docs.py)."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.utils import validate

from helpers import REPO, SCHEMA, schema
from pixelrobust import data as prdata
from pixelrobust import schema as prschema


def test_library_defaults_are_the_workflows():
    """pixelrobust.schema fills a config as Snakemake's validate does, shipped configs and an empty one."""
    shipped = sorted((REPO / "config").glob("*.yaml"))
    assert {"config.yaml", "tiny.yaml", "paper.yaml"} <= {p.name for p in shipped}
    cases = {p.name: yaml.safe_load(p.read_text()) for p in shipped}
    cases["empty"] = {}
    # a user dataset: additionalProperties
    cases["own"] = {"datasets": {"mine": {"layout": "imagefolder", "folder": "/x"}}}
    # a default inside a oneOf branch ($defs/pgd under masked_pgd.l2: null or a pgd) and under items
    cases["oneOf"] = {"masked_pgd": {"l2": {"eps": 0.5, "alpha": 0.1, "steps": 10}}}
    cases["items"] = {"robust_compare": {"pairs": [{"standard": "a", "robust": "b"}]}}
    for name, given in cases.items():
        by_snakemake = copy.deepcopy(given)
        validate(by_snakemake, str(SCHEMA))
        assert (
            prschema.fill(prschema.load(), copy.deepcopy(given), prschema.load()) == by_snakemake
        ), name
    oneof = prschema.fill(prschema.load(), copy.deepcopy(cases["oneOf"]), prschema.load())
    assert oneof["masked_pgd"]["l2"] == {
        "eps": 0.5,
        "alpha": 0.1,
        "steps": 10,
        "random_start": True,
    }
    # null: the first branch fits, no default goes in
    assert prschema.with_defaults("masked_pgd", {"l2": None})["l2"] is None
    assert prschema.with_defaults("datasets.imagenet", {"crop": 160}) == {
        "source": "sample",
        "folder": None,
        "labels": None,
        "resize": 256,
        "crop": 160,
    }
    assert prschema.with_defaults("onepixel.screening", None) == {
        "band": 2.0,
        "check": 256,
        "max_clean_log_odds": -17.0,
    }
    with pytest.raises(KeyError, match="onepixel.nope is not a key"):
        prschema.node("onepixel.nope")


def test_library_defaults_follow_snakemake_into_items_and_branches(tmp_path):
    """Where Snakemake's validate sets defaults beyond properties: array items, oneOf/anyOf (up to the
    first branch that fits), allOf, if/then; fill does the same (a schema written for the test)."""
    toy = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {
            "pair": {"type": "object", "properties": {"w": {"type": "number", "default": 1}}}
        },
        "type": "object",
        "properties": {
            "pairs": {"type": "array", "items": {"$ref": "#/$defs/pair"}},
            "either": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/pair"}]},
            "any": {"anyOf": [{"type": "string"}, {"properties": {"a": {"default": "x"}}}]},
            "all": {"allOf": [{"properties": {"b": {"default": 2}}}]},
            "cond": {
                "if": {"properties": {"kind": {"const": "k"}}, "required": ["kind"]},
                "then": {"properties": {"c": {"default": 3}}},
            },
        },
    }
    path = tmp_path / "toy.schema.yaml"
    path.write_text(yaml.safe_dump(toy))
    given = {
        "pairs": [{}, {"w": 5}],
        "either": {},
        "any": {},
        "all": {},
        "cond": {"kind": "k"},
    }
    by_snakemake = copy.deepcopy(given)
    validate(by_snakemake, str(path))
    # from first principles: each default where its subschema applies, what is given kept
    expected = {
        "pairs": [{"w": 1}, {"w": 5}],
        "either": {"w": 1},
        "any": {"a": "x"},
        "all": {"b": 2},
        "cond": {"kind": "k", "c": 3},
    }
    assert by_snakemake == expected
    assert prschema.fill(toy, copy.deepcopy(given), toy) == expected
    assert prschema.fill(toy, {"either": None, "any": "s"}, toy) == {"either": None, "any": "s"}


def test_the_library_takes_imagenet_defaults_from_the_schema(monkeypatch):
    """data.py has no fallback of its own: a schema default changed is what the library uses."""
    assert prdata.image_size("imagenet", {}) == (224, 224) and prdata.image_size(
        "imagenet", None
    ) == (224, 224)
    assert prdata.image_size("imagenet", {"crop": 160}) == (160, 160)
    assert prdata.available_images("imagenet", {}, None) == len(prdata.imagenet_sample_checksums())
    changed = schema()
    changed["properties"]["datasets"]["properties"]["imagenet"]["properties"]["crop"]["default"] = (
        192
    )
    changed["properties"]["datasets"]["properties"]["imagenet"]["properties"]["source"][
        "default"
    ] = "folder"
    monkeypatch.setattr(prschema, "load", lambda: changed)
    assert prdata.image_size("imagenet", {}) == (192, 192)
    assert "sample_archive" not in str(prdata.downloads("imagenet", {}))
    assert prdata.IMAGENET["sample_archive"] in prdata.downloads("imagenet", {"source": "sample"})


def test_no_python_fallback_repeats_a_schema_default(monkeypatch):
    """config.py's robust_compare check and cost.py's PRM training range take what a partial config leaves
    out from the schema: a changed schema default is what they use (not a copy of the old one)."""
    from pixelrobust import config as prconfig
    from pixelrobust import cost
    from pixelrobust.errors import ConfigError

    spec = {"dataset": "cifar10", "arch": "cifar_resnet_a", "depth": 20}
    specs = {"a": spec, "b": spec}
    partial = {  # robust_compare.stages left out; the pair's models are under onepixel only
        "robust_compare": {"pairs": [{"standard": "a", "robust": "b"}]},
        "onepixel": {"models": ["a", "b"]},
        "masked_pgd": {"models": []},
        "gradients": {"models": []},
        "synthesis": {"models": []},
    }
    with pytest.raises(ConfigError, match=r"'a' is not under masked_pgd.models"):
        prconfig._check_robust_compare(copy.deepcopy(partial), specs)  # the schema's four stages
    changed = schema()
    changed["properties"]["robust_compare"]["properties"]["stages"]["default"] = ["onepixel"]
    changed["$defs"]["image_range"]["properties"]["start"]["default"] = 50
    monkeypatch.setattr(prschema, "load", lambda: changed)
    prconfig._check_robust_compare(copy.deepcopy(partial), specs)  # onepixel only: the pair is fine

    # PRM training on images [start, 100) of cifar10's train split, start left out: the schema's 50 now,
    # so 50 images a epoch, batch 32 -> 2 steps (32 + 18 images) x 3 epochs = 150 images through the PRM
    config = {
        "prm": {
            "train": {
                "images": {"cifar10": {"split": "train", "stop": 100}},
                "epochs": 3,
                "max_steps": None,
                "batch_size": 32,
            }
        }
    }
    ctx = cost.Context({"r20": "cifar10"}, {"r20": (32, 32)}, lambda ds, split: 50000)
    units = cost.job_units("train_prm", {"model": "r20", "variant": "s2-r0"}, config, ctx).units
    assert units["r20"] == {"prm_grad": 150, "grad": 150}
