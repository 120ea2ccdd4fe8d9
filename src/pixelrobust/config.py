"""Checks on a config that its JSON schema cannot express, and the specs derived from it.

The schema (``src/pixelrobust/config.schema.yaml``) checks each key; :func:`check` checks how keys
fit together, with errors that name the key and how to fix it.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import sys
import warnings
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate as smk_validate

from . import data as prdata
from . import schema as prschema
from .errors import ConfigError, DataError
from .models import resolve_spec


def model_specs(config: dict) -> dict[str, dict]:
    return {name: resolve_spec(name, overrides) for name, overrides in config["models"].items()}


def clean_accuracy_models(config: dict) -> list[str]:
    chosen = config["clean_accuracy"]["models"]
    return list(config["models"]) if chosen is None else list(chosen)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file; a syntax error is a :class:`ConfigError` with the file, line and column.

    (Snakemake's own loader says only "Config file is not valid JSON or YAML".)
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"cannot read config file {path} ({e}); fix the path or save it as UTF-8 text"
        ) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        cmark = getattr(e, "context_mark", None)
        if context and cmark is not None:
            context += f", which starts on line {cmark.line + 1}"
        raise ConfigError(
            f"config file {where}: YAML syntax error: {problem}"
            + (f" ({context})" if context else "")
            + "; fix that line (mind indentation, ':' after keys, closed brackets and quotes)"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} holds a {type(data).__name__}, not keys at the top level (e.g. 'seed: 0')"
        )
    return data


def validate(config: dict, schema: str | Path) -> None:
    """Validate ``config`` against the JSON schema and fill in its defaults (in place).

    Snakemake's own ``validate`` reports a failure with the whole schema and config (thousands of
    lines); this raises a :class:`ConfigError` that names each offending key, says what is wrong
    and, for an unknown key, the closest known one.
    """
    try:
        smk_validate(config, str(schema))
    except WorkflowError:
        raise ConfigError(schema_errors(config, schema)) from None


def schema_errors(config: dict, schema: str | Path) -> str:
    """A short message naming every key of ``config`` that breaks ``schema`` (empty if none)."""
    spec = yaml.safe_load(Path(schema).read_text())
    validator = jsonschema.validators.validator_for(spec)(spec)
    lines = []
    for err in sorted(
        validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]
    ):
        where = ".".join(str(p) for p in err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            known = list(err.schema.get("properties", {}))
            for extra in sorted(set(err.instance) - set(known)):
                key = f"{where}.{extra}" if where else extra
                close = difflib.get_close_matches(str(extra), known, n=1)
                hint = (
                    f"did you mean {(where + '.' if where else '') + close[0]}? " if close else ""
                )
                lines.append(
                    f"config key {key} is not a known key ({err.message}); {hint}remove it or fix its spelling "
                    "(config/README.md lists every key)"
                )
            continue
        message = err.message if len(err.message) <= 300 else err.message[:300] + " ..."
        lines.append(f"config key {where or '(top level)'}: {message}")
    if not lines:
        return ""
    return "the config does not fit src/pixelrobust/config.schema.yaml:\n  " + "\n  ".join(lines)


def _default_note(message: str, config: dict, given: dict) -> str:
    """For each key a check names that the user did not set, say that it holds the schema's default."""
    notes = []
    for path in dict.fromkeys(re.findall(r"\b[a-z_]+(?:\.[A-Za-z0-9_]+)+\b", message)):
        if path.split(".")[0] not in config:
            continue
        try:
            value = prschema.lookup(config, path)
        except KeyError:
            continue
        try:
            prschema.lookup(given, path)
        except KeyError:
            shown = repr(value) if len(repr(value)) <= 120 else repr(value)[:120] + " ..."
            notes.append(
                f"{path} is not in your config: {shown} is its default (src/pixelrobust/config.schema.yaml); "
                f"set {path} in your config file to change it"
            )
    return message if not notes else message + "\n(" + "; ".join(notes) + ")"


def check(config: dict, given: dict | None = None) -> dict[str, dict]:
    """Cross-field checks; returns the resolved model specs.

    ``given``: the config as the user wrote it (before the schema filled in defaults); an error
    about a key the user never set then says that it is a default.
    """
    try:
        return _check(config)
    except ConfigError as e:
        if given is None:
            raise
        raise ConfigError(_default_note(str(e), config, given)) from None


def _check(config: dict) -> dict[str, dict]:
    try:  # user datasets first: a model's class count may come from its dataset
        prdata.register_datasets(config["datasets"])
        specs = model_specs(config)
    except DataError as e:
        raise ConfigError(str(e)) from None
    _check_datasets(config, specs)
    for name in clean_accuracy_models(config):
        if name not in specs:
            raise ConfigError(
                f"clean_accuracy.models lists {name!r}, which is not under models: ({', '.join(specs)})"
            )
    op = config["onepixel"]
    for name in op["models"]:
        if name not in specs:
            raise ConfigError(
                f"onepixel.models lists {name!r}, which is not under models: ({', '.join(specs)})"
            )
        ds = specs[name]["dataset"]
        for key in ("n_images", "grid_stride", "segmentation"):
            if ds not in op[key]:
                raise ConfigError(
                    f"onepixel.{key} has no entry for dataset {ds!r} (used by model {name}); add onepixel.{key}.{ds}"
                )
        for key in ("n_segments", "compactness"):
            if key not in op["segmentation"][ds]:
                raise ConfigError(f"onepixel.segmentation.{ds}.{key} is missing")
    _check_p3(config, specs)
    _check_ssim(config, specs)
    _check_synthesis(config, specs)
    _check_robust_compare(config, specs)
    im = config["datasets"]["imagenet"]
    if im["source"] == "folder":
        for key in ("folder", "labels"):
            if not im[key]:
                raise ConfigError(
                    f"datasets.imagenet.source is 'folder', so datasets.imagenet.{key} must be set"
                )
            if not Path(im[key]).expanduser().exists():
                raise ConfigError(f"datasets.imagenet.{key}: {im[key]} does not exist")
    if im["crop"] > im["resize"]:
        raise ConfigError(
            f"datasets.imagenet.crop ({im['crop']}) must not exceed datasets.imagenet.resize ({im['resize']})"
        )
    return specs


# Per-dataset keys: (section, key path) and whether every model of the section needs it. A user
# dataset (not built in) used by a section's model must have each; one error lists all missing.
PER_DATASET_KEYS = [
    ("onepixel", "n_images", True),
    ("onepixel", "grid_stride", True),
    ("onepixel", "segmentation", True),
    ("gradients", "split", True),
    ("gradients", "n_images", True),
    ("gradients", "start", False),
    ("masked_pgd", "n_images", True),
    ("prm", "train.images", True),
    ("prm", "sweep.n_images", True),
    ("defense_eval", "n_images", True),
    ("ssim", "n_images", True),
    ("synthesis", "n_images", False),
]


def _side(config: dict, ds: str) -> int:
    """The shorter side of the images a dataset's models see (user datasets: after resize / crop)."""
    size = prdata.image_size(ds, config["datasets"].get(ds))
    return min(size) if size else 0


def _per_dataset(config: dict, section: str, key: str) -> dict:
    try:
        return prschema.lookup(config, f"{section}.{key}") or {}
    except KeyError:
        return {}


def _section_models(config: dict, section: str) -> list[str]:
    if section not in config:
        return []
    if section == "ssim":
        return [config["ssim"]["model"]] if config["ssim"]["model"] else []
    return list(config[section]["models"])


def _check_datasets(config: dict, specs: dict) -> None:
    """Per-dataset keys name known datasets; every user dataset in use has its keys (one error lists them
    all, with values to start from); class counts and input sizes of models and datasets agree."""
    known = set(prdata.DATASETS) | set(config["datasets"])
    for section, key, _ in PER_DATASET_KEYS:
        for ds in _per_dataset(config, section, key):
            if ds not in known:
                raise ConfigError(
                    f"{section}.{key}.{ds}: no dataset is named {ds!r} (datasets: {', '.join(sorted(known))}); "
                    "fix its spelling, or describe the dataset under datasets:"
                )
    for name, spec in specs.items():
        ds = spec["dataset"]
        n_data = prdata.num_classes(ds)
        if spec.get("num_classes") is not None and int(spec["num_classes"]) != n_data:
            raise ConfigError(
                f"model {name} outputs {spec['num_classes']} classes, but its dataset {ds} has {n_data} (models.{name}.dataset); "
                f"label indices must be the model's output indices: give datasets.{ds} the model's classes (classes: [...] in "
                "output order, or class_index: imagenet for an ImageNet model), or fix models.{name}.dataset"
            )
        want = spec.get("input_size")
        if (
            want and ds not in prdata.CIFAR
        ):  # CIFAR images cannot be resized; the built-in imagenet can
            want = tuple(want) if isinstance(want, (list, tuple)) else (int(want), int(want))
            have = prdata.image_size(ds, config["datasets"][ds])
            if have is not None and tuple(have) != tuple(want):
                raise ConfigError(
                    f"model {name} expects {want[1]}x{want[0]} images, but dataset {ds} gives {have[1]}x{have[0]}; set "
                    f"datasets.{ds}.resize and crop (e.g. resize {spec.get('resize') or round(want[0] * 8 / 7)}, crop {want[0]}, as ImageNet "
                    f"models are evaluated), or crop alone"
                )
        _warn_resize(config, name, spec)
    missing: dict[str, list[str]] = {}
    needs = [(s, k, s) for s, k, required in PER_DATASET_KEYS if required]
    if "stochastic_prm" in _per_dataset(config, "defense_eval", "defenses"):
        needs.append(
            ("prm", "train.images", "defense_eval")
        )  # a PRM is trained for each defended model
    for section, key, users in needs:
        for model in _section_models(config, users):
            ds = specs[model]["dataset"] if model in specs else None
            if ds is None or ds in prdata.DATASETS:
                continue
            if ds not in _per_dataset(config, section, key):
                missing.setdefault(ds, [])
                if f"{section}.{key}.{ds}" not in missing[ds]:
                    missing[ds].append(f"{section}.{key}.{ds}")
    if missing:
        every = [k for keys in missing.values() for k in keys]
        raise ConfigError(
            f"dataset{'s' if len(missing) > 1 else ''} {', '.join(missing)} (your own images) {'are' if len(missing) > 1 else 'is'} "
            f"used by stages that need per-dataset settings; add {', '.join(every)}. Values to start from, sized to the "
            "images (config/README.md, 'Your own images'):\n" + _suggest_keys(config, missing)
        )
    for section, key in (("gradients", "split"), ("prm", "train.images")):
        for ds, value in _per_dataset(config, section, key).items():
            split = value["split"] if isinstance(value, dict) else value
            if ds not in prdata.DATASETS and split != "test":
                raise ConfigError(
                    f"{section}.{key}.{ds}: dataset {ds} (your own images) has only a test split; use split: test "
                    "with a start after the images the attacks use"
                )


def _warn_resize(config: dict, name: str, spec: dict) -> None:
    """A model whose weights were evaluated with another resize than its dataset's (found from torchvision's
    enum or timm's config): it runs, at the right crop, but its accuracy may differ from the published one,
    so warn (a resize is a choice of the study, not an error), naming both and the key to set."""
    ds, want = spec["dataset"], spec.get("resize")
    if not want or ds in prdata.CIFAR:
        return
    have = (config["datasets"].get(ds) or {}).get("resize")
    if have is not None and int(have) != int(want):
        warnings.warn(
            f"model {name} was evaluated with resize {want} (then crop {spec.get('input_size')}), as its weights "
            f"({spec.get('weights_enum') or spec['arch']}) state, but datasets.{ds}.resize is {have}: its accuracy here may "
            f"differ from the published one; set datasets.{ds}.resize: {want} to match",
            UserWarning,
            stacklevel=2,
        )


def _suggest_keys(config: dict, missing: dict[str, list[str]]) -> str:
    """YAML for the missing per-dataset keys of user datasets, sized to their images."""
    out: dict = {}
    for ds, keys in missing.items():
        n = prdata.available_images(ds, config["datasets"][ds], None)
        small = _side(config, ds) <= 64
        attacked = max(1, min(100 if small else 20, n // 2))
        held = max(
            attacked, min(100, n // 2)
        )  # test images the attacks use; the maps and PRM train on the rest
        values = {
            "onepixel.n_images": attacked,
            "onepixel.grid_stride": 1 if small else 8,
            "onepixel.segmentation": {"n_segments": 25 if small else 50, "compactness": 10},
            "gradients.split": "test",
            "gradients.n_images": max(1, n - held),
            "masked_pgd.n_images": held,
            "prm.train.images": {"split": "test", "start": held},
            "prm.sweep.n_images": held,
            "defense_eval.n_images": attacked,
            "ssim.n_images": held,
        }
        for key in keys:
            path = key.rsplit(".", 1)[0]
            node = out
            for part in path.split("."):
                node = node.setdefault(part, {})
            node[ds] = values[path]
            if path == "gradients.split":
                out["gradients"].setdefault("start", {})[ds] = held
    return yaml.safe_dump(out, default_flow_style=None, sort_keys=False).rstrip()


def _check_models_and_keys(section: str, config: dict, specs: dict, per_dataset: list[str]) -> None:
    sec = config[section]
    for name in sec["models"]:
        if name not in specs:
            raise ConfigError(
                f"{section}.models lists {name!r}, which is not under models: ({', '.join(specs)})"
            )
        ds = specs[name]["dataset"]
        for key in per_dataset:
            node = sec
            for part in key.split("."):
                node = node[part]
            if ds not in node:
                raise ConfigError(
                    f"{section}.{key} has no entry for dataset {ds!r} (used by model {name}); add {section}.{key}.{ds}"
                )


def _check_p3(config: dict, specs: dict) -> None:
    """P3: every masked-PGD / PRM model has a gradient map; a test-split map never uses the attacked images;
    training images never overlap the sweep's."""
    _check_models_and_keys("gradients", config, specs, ["split", "n_images"])
    _check_models_and_keys("masked_pgd", config, specs, ["n_images"])
    _check_models_and_keys("prm", config, specs, ["train.images", "sweep.n_images"])
    for name in config["masked_pgd"]["models"]:
        if name not in config["gradients"]["models"]:
            raise ConfigError(
                f"masked_pgd.models lists {name!r}, which needs a gradient map: add it to gradients.models"
            )
        ds = specs[name]["dataset"]
        gr = config["gradients"]
        if gr["split"].get(ds) == "test":
            g0, attacked = (gr.get("start") or {}).get(ds, 0), config["masked_pgd"]["n_images"][ds]
            if g0 < attacked:
                raise ConfigError(
                    f"gradients.start.{ds} is {g0}: the {ds} gradient map averages test images from {g0} on, but masked_pgd "
                    f"attacks test images 0..{attacked - 1} with masks chosen from that map (fitted on the images tested); "
                    f"set gradients.start.{ds} >= masked_pgd.n_images.{ds} ({attacked}), or gradients.split.{ds}: train"
                )
    if not config["masked_pgd"]["k_percent"]:
        raise ConfigError(
            "masked_pgd.k_percent is empty; give mask sizes in percent, e.g. [1, 5, 10, 25, 50, 100]"
        )
    if config["masked_pgd"]["models"]:  # P3's ordering verdict (summary.p3_ordering) needs these
        ks = config["masked_pgd"]["k_percent"]
        if not any(0 < k < 100 for k in ks):
            raise ConfigError(
                f"masked_pgd.k_percent {ks} has no size strictly between 0 and 100; at k = 0 and k = 100 the top "
                "and bottom masks are the same attack, so P3's ordering cannot be tested: add e.g. 5, 10, 25"
            )
        max_k = config["masked_pgd"]["verdict_max_k"]
        if not any(0 < k <= max_k and k < 100 for k in ks):
            raise ConfigError(
                f"masked_pgd.k_percent {ks} has no size in (0, masked_pgd.verdict_max_k = {max_k:g}], the sizes "
                "P3's ordering verdict is decided on: add e.g. 5, 10, 25, or raise masked_pgd.verdict_max_k"
            )
        if not {"top", "bottom"} <= set(config["masked_pgd"]["masks"]):
            raise ConfigError(
                f"masked_pgd.masks {config['masked_pgd']['masks']} needs both 'top' and 'bottom' (P3's ordering "
                "compares them); add them"
            )
    prm = config["prm"]
    for name in prm["models"]:
        ds = specs[name]["dataset"]
        rng = prm["train"]["images"][ds]
        start, stop = rng["start"], rng.get("stop")
        if stop is not None and stop <= start:
            raise ConfigError(
                f"prm.train.images.{ds}: stop ({stop}) must be greater than start ({start})"
            )
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
        if rng["split"] == "test" and rng["start"] < de["n_images"][ds]:
            raise ConfigError(
                f"prm.train.images.{ds} trains on test images from {rng['start']}, but defense_eval evaluates test "
                f"images 0..{de['n_images'][ds] - 1}; set prm.train.images.{ds}.start >= defense_eval.n_images.{ds}"
            )


def _check_ssim(config: dict, specs: dict) -> None:
    """P2: models known, image counts, the comparison ε among the sweep's, windows that fit the images."""
    ss = config["ssim"]
    name = ss["model"]
    if name is None:
        return
    if name not in specs:
        raise ConfigError(
            f"ssim.model is {name!r}, which is not under models: ({', '.join(specs)})"
        )
    ds = specs[name]["dataset"]
    if ds not in ss["n_images"]:
        raise ConfigError(
            f"ssim.n_images has no entry for dataset {ds!r} (used by ssim.model {name}); add ssim.n_images.{ds}"
        )
    eps = ss["epsilons"]
    if not any(math.isclose(e, ss["compare"]["epsilon"]) for e in eps):
        raise ConfigError(
            f"ssim.compare.epsilon ({ss['compare']['epsilon']}) must be one of ssim.epsilons {eps}: the maps "
            "compare the adversarials of one swept ε"
        )
    if ss["stride"] > ss["window"]:
        raise ConfigError(
            f"ssim.stride ({ss['stride']}) exceeds ssim.window ({ss['window']}): pixels between windows would be "
            "unconstrained; use stride <= window"
        )
    side = _side(config, ds)
    if ss["window"] > side:
        raise ConfigError(
            f"ssim.window ({ss['window']}) is larger than {name}'s {side}x{side} images"
        )


def _check_synthesis(config: dict, specs: dict) -> None:
    """The synthesis compares maps on the images P1 searched: its models must be P1's."""
    sy = config["synthesis"]
    for name in sy["models"]:
        if name not in specs:
            raise ConfigError(
                f"synthesis.models lists {name!r}, which is not under models: ({', '.join(specs)})"
            )
        if name not in config["onepixel"]["models"]:
            raise ConfigError(
                f"synthesis.models lists {name!r}, which is not under onepixel.models: the synthesis compares "
                "maps on the images P1 searched; add it to onepixel.models or drop it here"
            )
    ss = config["ssim"]
    if sy["models"] and ss["stride"] > ss["window"]:
        raise ConfigError(
            f"ssim.stride ({ss['stride']}) exceeds ssim.window ({ss['window']}) (used by synthesis.models): use "
            "stride <= window"
        )
    for name in sy["models"]:
        side = _side(config, specs[name]["dataset"])
        if ss["window"] > side:
            raise ConfigError(
                f"ssim.window ({ss['window']}) is larger than {name}'s {side}x{side} images (synthesis.models)"
            )


def _check_robust_compare(config: dict, specs: dict) -> None:
    """Each robust-vs-standard pair: two different models under models:, of one dataset, run by every compared stage."""
    rc = prschema.with_defaults(
        "robust_compare", config.get("robust_compare")
    )  # a partial config: the schema's
    stages = rc["stages"]
    for i, pair in enumerate(rc["pairs"]):
        key = f"robust_compare.pairs[{i}]"
        s, r = pair["standard"], pair["robust"]
        if s == r:
            raise ConfigError(
                f"{key} names the same model {s!r} as standard and robust; name two models"
            )
        for role, name in (("standard", s), ("robust", r)):
            if name not in specs:
                raise ConfigError(
                    f"{key}.{role} is {name!r}, which is not under models: ({', '.join(specs)}); add it there"
                )
        ds, dr = specs[s]["dataset"], specs[r]["dataset"]
        if ds != dr:
            raise ConfigError(
                f"{key}: {s} is a {ds} model and {r} a {dr} model; the study compares them on the same "
                "images, so pair two models of one dataset"
            )
        arch_s, arch_r = (
            f"{specs[m]['arch']}{' depth ' + str(specs[m]['depth']) if specs[m].get('depth') is not None else ''}"
            for m in (s, r)
        )
        if arch_s != arch_r:
            warnings.warn(
                f"{key}: {s} is a {arch_s} and {r} a {arch_r}; the study is meant for one architecture trained two ways "
                "(a difference may then come from the architecture, not the training, and the untrained reference "
                f"is a copy of {s}'s architecture only); pair two models of one architecture",
                UserWarning,
                stacklevel=2,
            )
        for stage in stages:
            for name in (s, r):
                if name not in config[stage]["models"]:
                    raise ConfigError(
                        f"{key}: {name!r} is not under {stage}.models, which the study compares "
                        f"(robust_compare.stages); add it to {stage}.models or drop {stage!r} from "
                        "robust_compare.stages"
                    )


def main(argv: list[str] | None = None) -> int:
    """``python -m pixelrobust.config FILE...``: check config files as the workflow would, before running it.

    Each file is read (YAML errors with line and column), merged in order over the defaults,
    validated against the schema and cross-checked. Prints what is wrong; exit status 1 if anything is.
    """
    files = list(sys.argv[1:] if argv is None else argv)
    if not files:
        print("usage: python -m pixelrobust.config CONFIG.yaml [MORE.yaml ...]", file=sys.stderr)
        return 2
    schema = prschema.SCHEMA
    config: dict = {}
    try:
        for f in files:
            _merge(config, load_yaml(f))
        given = copy.deepcopy(config)
        validate(config, schema)
        check(config, given=given)
    except ConfigError as e:
        print(f"ConfigError: {e}", file=sys.stderr)
        return 1
    print(f"{', '.join(files)}: valid")
    return 0


def _merge(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


if __name__ == "__main__":
    raise SystemExit(main())
