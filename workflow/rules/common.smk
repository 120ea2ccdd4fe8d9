import sys
from pathlib import Path

from snakemake.utils import validate

# The library lives in src/; make it importable here and in every script job, also in conda
# environments that do not install it.
sys.path.insert(0, str(Path(workflow.current_basedir).parents[1] / "src"))

from pixelrobust.runtime import export_library_path

export_library_path()

from pixelrobust import config as prconfig
from pixelrobust import data as prdata
from pixelrobust import models as prmodels
from pixelrobust.runtime import derive_seed

validate(config, "../schemas/config.schema.yaml")
MODELS = prconfig.check(config)
MIRROR = prdata.resolve_mirror(config)
ENV = "../../envs/pixelrobust.yaml"


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
    if MIRROR is None:
        return {f: f"resources/downloads/{f}" for f in prdata.downloads(ds, config["datasets"][ds])}
    if ds in prdata.CIFAR:
        return {"mirror": str(MIRROR / prdata.CIFAR[ds]["folder"])}
    return {"mirror": str(MIRROR / prdata.IMAGENET["class_index"])}


def weights_input(wildcards):
    src = WEIGHTS[wildcards.model]
    if src["kind"] == "download":
        return f"resources/downloads/{src['file']}"
    return src["path"]


def n_images(dataset, requested):
    """Images of a dataset's test split to use: ``requested`` (None = all) capped by what exists."""
    available = prdata.available_images(dataset, config["datasets"][dataset], MIRROR)
    return available if requested is None else min(requested, available)


def clean_accuracy_bounds(model):
    n = n_images(dataset_of(model), config["clean_accuracy"]["n_images"])
    return prdata.chunk_bounds(n, config["chunk_size"])


def clean_accuracy_chunks(wildcards=None):
    return {
        model: expand(
            "results/clean_accuracy/{model}/chunk-{chunk}.csv",
            model=model,
            chunk=range(len(clean_accuracy_bounds(model))),
        )
        for model in prconfig.clean_accuracy_models(config)
    }


def job_seed(rule_name, *keys):
    return derive_seed(config["seed"], rule_name, *keys)
