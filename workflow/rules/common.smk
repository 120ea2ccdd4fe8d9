# The shared core, included first: the library path, the config (validated and checked), MODELS,
# MIRROR, ENV, downloads and weights, and the helpers every stage uses (the chunks of a stage's
# images, a job's data and model spec, a figure's files). Each stage's own constants sit above its
# rules in its .smk (snakemake --lint keeps functions out of files with rules); the targets are in
# targets.smk.
import copy
import sys
from pathlib import Path

# The library lives in src/; make it importable here and in every script job, also in conda
# environments that do not install it.
sys.path.insert(0, str(Path(workflow.current_basedir).parents[1] / "src"))

from pixelrobust.runtime import export_library_path

export_library_path()

from pixelrobust import config as prconfig
from pixelrobust import data as prdata
from pixelrobust import defense_eval as prdefense_eval
from pixelrobust import models as prmodels
from pixelrobust import prm as prprm
from pixelrobust import schema as prschema
from pixelrobust import report as prreport
from pixelrobust.provenance import digest
from pixelrobust.runtime import derive_seed

# The config as the user's files and --config gave it, before the schema fills in defaults: an
# error about a key the user never set then says that it is a default.
GIVEN_CONFIG = copy.deepcopy(config)
# Errors name each bad key in a few lines (Snakemake's validate prints the whole schema).
# The schema is package data (src/pixelrobust/config.schema.yaml): the library reads the same file.
prconfig.validate(config, prschema.SCHEMA)
MODELS = prconfig.check(config, given=GIVEN_CONFIG)
MIRROR = prdata.resolve_mirror(config)
ENV = "../../envs/pixelrobust.yaml"
# Quoted by SUMMARY.md (the summary rule prints the whole config). Every job's provenance records the
# same sha256 from its own snakemake.config (pixelrobust.provenance.from_snakemake); no other rule takes
# it as a param, so a config change reruns only the jobs whose params read the changed keys.
CONFIG_SHA256 = digest(config)


def dataset_of(model):
    return MODELS[model]["dataset"]


def used_datasets():
    return sorted({spec["dataset"] for spec in MODELS.values()})


# Files fetched from the internet when there is no mirror: {file name: {url, checksum, algorithm}}.
DOWNLOADS = {}
WEIGHTS = {name: prmodels.weights_source(spec, MIRROR) for name, spec in MODELS.items()}
if MIRROR is None:
    for _ds in used_datasets():
        DOWNLOADS.update(prdata.downloads(_ds, config["datasets"][_ds]))
for _name, _src in WEIGHTS.items():
    if _src["kind"] == "download":
        DOWNLOADS[_src["file"]] = {
            "url": _src["url"],
            "checksum": _src["sha256"],
            "algorithm": "sha256",
        }


def dataset_inputs(wildcards):
    """A dataset's raw inputs: downloaded archives, or the mirror's files (so changes rerun it)."""
    ds = wildcards.dataset
    cfg = config["datasets"][ds]
    if ds not in prdata.DATASETS:  # your own images: the folder, label file and class index
        user = prdata.check_user_config(ds, cfg)
        own = {k: user[k] for k in ("folder", "labels") if user[k]}
        if user["class_index"] not in (None, "imagenet"):
            own["class_index"] = user["class_index"]
        elif user["class_index"] == "imagenet" and MIRROR is not None:
            own["mirror"] = str(MIRROR / prdata.IMAGENET["class_index"])
        elif user["class_index"] == "imagenet":
            own.update({f: f"resources/downloads/{f}" for f in prdata.downloads(ds, cfg)})
        return own
    # a folder source's label file and image folder are inputs too (edits within files are
    # caught by the source_fingerprint param of prepare_dataset)
    own = (
        {"labels": cfg["labels"], "folder": cfg["folder"]} if cfg.get("source") == "folder" else {}
    )
    if MIRROR is None:
        return {**own, **{f: f"resources/downloads/{f}" for f in prdata.downloads(ds, cfg)}}
    if ds in prdata.CIFAR:
        return {"mirror": str(MIRROR / prdata.CIFAR[ds]["folder"])}
    if cfg.get("source") != "folder":
        own = {"mirror_images": str(MIRROR / prdata.IMAGENET["sample_folder"])}
    return {**own, "mirror": str(MIRROR / prdata.IMAGENET["class_index"])}


def weights_input(wildcards):
    """The model's weights file: downloaded, or the mirror's."""
    src = WEIGHTS[wildcards.model]
    if src["kind"] == "download":
        return f"resources/downloads/{src['file']}"
    return src["path"]


def n_images(dataset, requested):
    """Images of a dataset's test split to use: ``requested`` (None = all) capped by what exists."""
    available = prdata.available_images(dataset, config["datasets"][dataset], MIRROR)
    return available if requested is None else min(requested, available)


def job_seed(rule_name, *keys):
    return derive_seed(config["seed"], rule_name, *keys)


# ---- Every stage's jobs ----------------------------------------------------------------------


def dataset_folder(model):
    """The prepared dataset a model's images come from."""
    return rules.prepare_dataset.output[0].format(dataset=dataset_of(model))


def model_data(wildcards):
    """The prepared dataset of the job's model (input ``data`` of every per-model job)."""
    return dataset_folder(wildcards.model)


def model_spec(wildcards):
    """The job's model spec (param ``spec`` of every per-model job)."""
    return MODELS[wildcards.model]


# A chunked stage (config section clean_accuracy, onepixel, masked_pgd, defense_eval or ssim) runs
# the first n_images test images of each model's dataset in chunks of chunk_size, one job per chunk.


def chunk_bounds(stage, model, chunk=None):
    """(start, stop) of every chunk of ``stage``'s images for ``model``, or of chunk ``chunk``.

    The stage's ``n_images`` (one per dataset; clean_accuracy: one for all) capped by the test split,
    in chunks of its ``chunk_size`` (clean_accuracy: the top-level one). No model (ssim.model: null),
    no chunks.
    """
    if model is None:
        return []
    cfg, dataset = config[stage], dataset_of(model)
    if stage == "clean_accuracy":
        requested, size = cfg["n_images"], config["chunk_size"]
    else:
        requested, size = cfg["n_images"][dataset], cfg["chunk_size"]
    bounds = prdata.chunk_bounds(n_images(dataset, requested), size)
    return bounds if chunk is None else bounds[int(chunk)]


def chunk_files(stage, pattern, *models, **wildcards):
    """``pattern`` (a rule's output with {model} and {chunk}) for every chunk of ``stage``, model by
    model. ``wildcards`` fill its other wildcards, each value a list: the chunks of its first value,
    then of the next (defense_eval: attack=["clean", ...])."""
    return [
        f
        for model in models
        for f in expand(
            pattern, model=model, **wildcards, chunk=range(len(chunk_bounds(stage, model)))
        )
    ]


def chunk_inputs(stage, rule, models, **wildcards):
    """A table rule's inputs from a chunked ``rule``: its first output of every chunk by model, and
    every chunk's provenance record (``prov``)."""
    files = {model: chunk_files(stage, rule.output[0], model, **wildcards) for model in models}
    return {**files, "prov": chunk_files(stage, rule.output.prov, *models, **wildcards)}


def figure_files(rule, **wildcards):
    """A figure rule's PNG and PDF, for each value of its wildcard."""
    pairs = zip(expand(rule.output.png, **wildcards), expand(rule.output.pdf, **wildcards))
    return [f for png_pdf in pairs for f in png_pdf]
