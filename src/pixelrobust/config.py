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
    _check_p3(config, specs)
    _check_ssim(config, specs)
    _check_synthesis(config, specs)
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


def _check_models_and_keys(section: str, config: dict, specs: dict, per_dataset: list[str]) -> None:
    sec = config[section]
    for name in sec["models"]:
        if name not in specs:
            raise ConfigError(f"{section}.models lists {name!r}, which is not under models: ({', '.join(specs)})")
        ds = specs[name]["dataset"]
        for key in per_dataset:
            node = sec
            for part in key.split("."):
                node = node[part]
            if ds not in node:
                raise ConfigError(f"{section}.{key} has no entry for dataset {ds!r} (used by model {name}); add {section}.{key}.{ds}")


def _check_p3(config: dict, specs: dict) -> None:
    """P3: every masked-PGD / PRM model has a gradient map; training images never overlap the sweep's."""
    _check_models_and_keys("gradients", config, specs, ["split", "n_images"])
    _check_models_and_keys("masked_pgd", config, specs, ["n_images"])
    _check_models_and_keys("prm", config, specs, ["train.images", "sweep.n_images"])
    for name in config["masked_pgd"]["models"]:
        if name not in config["gradients"]["models"]:
            raise ConfigError(f"masked_pgd.models lists {name!r}, which needs a gradient map: add it to gradients.models")
    if not config["masked_pgd"]["k_percent"]:
        raise ConfigError("masked_pgd.k_percent is empty; give mask sizes in percent, e.g. [1, 5, 10, 25, 50, 100]")
    prm = config["prm"]
    for name in prm["models"]:
        ds = specs[name]["dataset"]
        rng = prm["train"]["images"][ds]
        start, stop = rng.get("start", 0) or 0, rng.get("stop")
        if stop is not None and stop <= start:
            raise ConfigError(f"prm.train.images.{ds}: stop ({stop}) must be greater than start ({start})")
        if rng["split"] == "test" and start < prm["sweep"]["n_images"][ds]:
            raise ConfigError(
                f"prm.train.images.{ds} trains on test images from {start}, but the lambda sweep evaluates test images "
                f"0..{prm['sweep']['n_images'][ds] - 1}; set prm.train.images.{ds}.start >= prm.sweep.n_images.{ds}"
            )
    _check_defense_eval(config, specs)


def _check_defense_eval(config: dict, specs: dict) -> None:
    """P3 part 2: models known, image counts per dataset, a PRM trainable for each model, no test-image overlap."""
    de = config["defense_eval"]
    _check_models_and_keys("defense_eval", config, specs, ["n_images"])
    if "stochastic_prm" not in de["defenses"]:
        return
    sp = de["defense_settings"]["stochastic_prm"]
    if (sp["shifts"] == "sizes") != (sp.get("shift_sizes") is not None):
        raise ConfigError(
            f"defense_eval.defense_settings.stochastic_prm.shift_sizes ({sp.get('shift_sizes')}) goes with shifts: sizes, "
            f"and only with it (shifts is {sp['shifts']!r}); set both, e.g. shifts: sizes and shift_sizes: [1, 2], or neither"
        )
    images = config["prm"]["train"]["images"]
    for name in de["models"]:
        ds = specs[name]["dataset"]
        if ds not in images:
            raise ConfigError(
                f"defense_eval.defenses includes stochastic_prm, which needs a PRM trained for {name}: add prm.train.images.{ds}"
            )
        rng = images[ds]
        if rng["split"] == "test" and (rng.get("start", 0) or 0) < de["n_images"][ds]:
            raise ConfigError(
                f"prm.train.images.{ds} trains on test images from {rng.get('start', 0) or 0}, but defense_eval evaluates test "
                f"images 0..{de['n_images'][ds] - 1}; set prm.train.images.{ds}.start >= defense_eval.n_images.{ds}"
            )


def _check_ssim(config: dict, specs: dict) -> None:
    """P2: models known, image counts, the comparison ε among the sweep's, windows that fit the images."""
    import math

    ss = config["ssim"]
    name = ss["model"]
    if name is None:
        return
    if name not in specs:
        raise ConfigError(f"ssim.model is {name!r}, which is not under models: ({', '.join(specs)})")
    ds = specs[name]["dataset"]
    if ds not in ss["n_images"]:
        raise ConfigError(f"ssim.n_images has no entry for dataset {ds!r} (used by ssim.model {name}); add ssim.n_images.{ds}")
    eps = ss["epsilons"]
    if not any(math.isclose(e, ss["compare"]["epsilon"]) for e in eps):
        raise ConfigError(f"ssim.compare.epsilon ({ss['compare']['epsilon']}) must be one of ssim.epsilons {eps}: the maps "
                          "compare the adversarials of one swept ε")
    if ss["stride"] > ss["window"]:
        raise ConfigError(f"ssim.stride ({ss['stride']}) exceeds ssim.window ({ss['window']}): pixels between windows would be "
                          "unconstrained; use stride <= window")
    side = config["datasets"]["imagenet"]["crop"] if ds == "imagenet" else 32
    if ss["window"] > side:
        raise ConfigError(f"ssim.window ({ss['window']}) is larger than {name}'s {side}x{side} images")


def _check_synthesis(config: dict, specs: dict) -> None:
    """The synthesis compares maps on the images P1 searched: its models must be P1's."""
    sy = config["synthesis"]
    for name in sy["models"]:
        if name not in specs:
            raise ConfigError(f"synthesis.models lists {name!r}, which is not under models: ({', '.join(specs)})")
        if name not in config["onepixel"]["models"]:
            raise ConfigError(f"synthesis.models lists {name!r}, which is not under onepixel.models: the synthesis compares "
                              "maps on the images P1 searched; add it to onepixel.models or drop it here")
    ss = config["ssim"]
    if sy["models"] and ss["stride"] > ss["window"]:
        raise ConfigError(f"ssim.stride ({ss['stride']}) exceeds ssim.window ({ss['window']}) (used by synthesis.models): use "
                          "stride <= window")
    for name in sy["models"]:
        side = config["datasets"]["imagenet"]["crop"] if specs[name]["dataset"] == "imagenet" else 32
        if ss["window"] > side:
            raise ConfigError(f"ssim.window ({ss['window']}) is larger than {name}'s {side}x{side} images (synthesis.models)")
