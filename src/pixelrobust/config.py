"""Checks on a config that its JSON schema cannot express, and the specs derived from it.

The schema (``workflow/schemas/config.schema.yaml``) checks each key; :func:`check` checks how keys
fit together, with errors that name the key and how to fix it.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError
from .models import resolve_spec


def model_specs(config: dict) -> dict[str, dict]:
    return {name: resolve_spec(name, overrides) for name, overrides in config["models"].items()}


def clean_accuracy_models(config: dict) -> list[str]:
    chosen = config["clean_accuracy"]["models"]
    return list(config["models"]) if chosen is None else list(chosen)


def check(config: dict) -> dict[str, dict]:
    """Cross-field checks; returns the resolved model specs."""
    specs = model_specs(config)
    for name in clean_accuracy_models(config):
        if name not in specs:
            raise ConfigError(f"clean_accuracy.models lists {name!r}, which is not under models: ({', '.join(specs)})")
    op = config["onepixel"]
    for name in op["models"]:
        if name not in specs:
            raise ConfigError(f"onepixel.models lists {name!r}, which is not under models: ({', '.join(specs)})")
        ds = specs[name]["dataset"]
        for key in ("n_images", "grid_stride", "segmentation"):
            if ds not in op[key]:
                raise ConfigError(f"onepixel.{key} has no entry for dataset {ds!r} (used by model {name}); add onepixel.{key}.{ds}")
        for key in ("n_segments", "compactness"):
            if key not in op["segmentation"][ds]:
                raise ConfigError(f"onepixel.segmentation.{ds}.{key} is missing")
    im = config["datasets"]["imagenet"]
    if im["source"] == "folder":
        for key in ("folder", "labels"):
            if not im[key]:
                raise ConfigError(f"datasets.imagenet.source is 'folder', so datasets.imagenet.{key} must be set")
            if not Path(im[key]).expanduser().exists():
                raise ConfigError(f"datasets.imagenet.{key}: {im[key]} does not exist")
    if im["crop"] > im["resize"]:
        raise ConfigError(f"datasets.imagenet.crop ({im['crop']}) must not exceed datasets.imagenet.resize ({im['resize']})")
    return specs
