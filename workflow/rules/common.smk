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


def dataset_names():
    """The built-in datasets and those described under datasets: (a user's own images)."""
    return sorted(set(prdata.DATASETS) | set(config["datasets"]))


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


def onepixel_bounds(model):
    op = config["onepixel"]
    n = n_images(dataset_of(model), op["n_images"][dataset_of(model)])
    return prdata.chunk_bounds(n, op["chunk_size"])


def onepixel_model_chunks(pattern, model):
    """``pattern`` (with {model} and {chunk}) for every chunk of one onepixel model."""
    return [pattern.format(model=model, chunk=c) for c in range(len(onepixel_bounds(model)))]


def onepixel_chunks(pattern):
    """``pattern`` for every onepixel model and chunk."""
    return [f for m in config["onepixel"]["models"] for f in onepixel_model_chunks(pattern, m)]


def p1_targets():
    """Every table and figure of P1 (the `p1` target)."""
    tables = ["onepixel_success", "onepixel_summary", "onepixel_claims"]
    return (
        [f"results/tables/{t}.{ext}" for t in tables for ext in ("csv", "md")]
        + [f"results/tables/onepixel_{t}.csv" for t in ("regions", "images", "de_runs")]
        + [f"results/figures/p1_region_semantics.{ext}" for ext in ("png", "pdf")]
        + [
            f"results/figures/p1_vulnerability_grid_{m}.{ext}"
            for m in config["onepixel"]["models"]
            for ext in ("png", "pdf")
        ]
    )


def onepixel_note(model):
    """What the exhaustive search ran for a model (written into the success table)."""
    op = config["onepixel"]
    stride = op["grid_stride"][dataset_of(model)]
    grid = "every pixel" if stride == 1 else f"a grid of every {stride}th pixel"
    palette = op["palette"] if isinstance(op["palette"], str) else f"{len(op['palette'])} colours"
    de = op["de"]
    mode = "targeted (most likely wrong class)" if op["targeted"] else "untargeted"
    return (
        f"{mode}; exhaustive: {grid} x palette {palette}; DE pop {de['popsize']}, {de['maxiter']} generations, "
        f"F {de['F']}, CR {de['CR']}, {op['de_regions']} regions + equal random subsets"
    )


def clean_accuracy_chunks(wildcards=None):
    chunks = {
        model: expand(
            "results/clean_accuracy/{model}/chunk-{chunk}.csv",
            model=model,
            chunk=range(len(clean_accuracy_bounds(model))),
        )
        for model in prconfig.clean_accuracy_models(config)
    }
    prov = [f.replace(".csv", ".provenance.json") for files in chunks.values() for f in files]
    return {**chunks, "prov": prov}


def job_seed(rule_name, *keys):
    return derive_seed(config["seed"], rule_name, *keys)


# ---- P3 part 1 -------------------------------------------------------------------------------


def masked_pgd_bounds(model):
    mp = config["masked_pgd"]
    n = n_images(dataset_of(model), mp["n_images"][dataset_of(model)])
    return prdata.chunk_bounds(n, mp["chunk_size"])


def masked_pgd_chunks(wildcards=None):
    chunks = {
        model: [
            f"results/p3/masked_pgd/{model}/chunk-{c}.csv"
            for c in range(len(masked_pgd_bounds(model)))
        ]
        for model in config["masked_pgd"]["models"]
    }
    prov = [f.replace(".csv", ".provenance.json") for files in chunks.values() for f in files]
    maps = [f"results/p3/gradients/{m}.provenance.json" for m in config["masked_pgd"]["models"]]
    return {**chunks, "prov": prov + maps}


def pgd_attacks():
    """The configured PGD variants by norm (L2 only when masked_pgd.l2 is set)."""
    mp = config["masked_pgd"]
    return {norm: mp[norm] for norm in ("linf", "l2") if mp.get(norm)}


def masked_pgd_table_outputs():
    out = {}
    for norm in pgd_attacks():
        stem = "masked_pgd" if norm == "linf" else "masked_pgd_l2"
        out[norm] = f"results/tables/{stem}.csv"
        out[f"{norm}_md"] = f"results/tables/{stem}.md"
    return out


# One trained PRM per model and variant, ``<lattice>-r<replicate>``: results/p3/prm/<model>/<variant>/.
PRM_VARIANT_PATTERN = "(" + "|".join(prprm.LATTICES) + r")-r\d+"
SWEEP_PRM = prprm.variant_name(config["prm"]["lattice"], 0)  # the λ sweep's PRM


def prm_sweep_n(model):
    ds = dataset_of(model)
    return n_images(ds, config["prm"]["sweep"]["n_images"][ds])


def p3_targets():
    """Every table and figure of P3 part 1 (the `p3` target)."""
    fig = lambda stem: [f"results/figures/{stem}.{ext}" for ext in ("png", "pdf")]
    prm_models = config["prm"]["models"]
    return (
        list(masked_pgd_table_outputs().values())
        + ["results/tables/masked_pgd.provenance.json"]
        + fig("p3_gradient_maps")
        + [f for norm in pgd_attacks() for f in fig(f"p3_masked_pgd_{norm}")]
        + (
            ["results/tables/prm_lambda_sweep.csv", "results/tables/prm_lambda_sweep.md"]
            if prm_models
            else []
        )
        + [f for m in prm_models for f in fig(f"p3_prm_training_{m}") + fig(f"p3_prm_lambda_{m}")]
        + defense_targets()
    )


# ---- P3 part 2 -------------------------------------------------------------------------------


def defense_bounds(model):
    de = config["defense_eval"]
    n = n_images(dataset_of(model), de["n_images"][dataset_of(model)])
    return prdata.chunk_bounds(n, de["chunk_size"])


def defense_chunks(wildcards=None):
    """Every defense_eval chunk by model (clean + each attack), and their provenance files."""
    de = config["defense_eval"]
    chunks = {
        model: [
            f"results/p3/defense/{model}/{attack}/chunk-{c}.csv"
            for attack in ["clean", *de["attacks"]]
            for c in range(len(defense_bounds(model)))
        ]
        for model in de["models"]
    }
    prov = [f.replace(".csv", ".provenance.json") for files in chunks.values() for f in files]
    if "stochastic_prm" in de["defenses"]:
        pool = defense_pool()
        prov += [f"results/p3/prm/{m}/{v}/prm.provenance.json" for m in de["models"] for v in pool]
    return {**chunks, "prov": prov}


def defense_pool():
    """The PRM variants the stochastic-PRM defence draws from (defense_settings.stochastic_prm.pool)."""
    return prprm.pool_variants(config["defense_eval"]["defense_settings"]["stochastic_prm"]["pool"])


def defense_prm(wildcards):
    """The trained PRMs the stochastic-PRM defence draws from (none when that defence is not configured)."""
    if "stochastic_prm" in config["defense_eval"]["defenses"]:
        return {"prms": [f"results/p3/prm/{wildcards.model}/{v}/prm.pt" for v in defense_pool()]}
    return {}


def defense_targets():
    de = config["defense_eval"]
    if not de["models"]:
        return []
    return ["results/tables/defense.csv", "results/tables/defense.md"] + [
        f"results/figures/p3_defense.{ext}" for ext in ("png", "pdf")
    ]


# ---- P2 --------------------------------------------------------------------------------------


def ssim_bounds():
    ss = config["ssim"]
    if ss["model"] is None:
        return []
    ds = dataset_of(ss["model"])
    return prdata.chunk_bounds(n_images(ds, ss["n_images"][ds]), ss["chunk_size"])


def ssim_chunks(pattern):
    """``pattern`` (with {model} and {chunk}) for every chunk of the SSIM study."""
    model = config["ssim"]["model"]
    return [pattern.format(model=model, chunk=c) for c in range(len(ssim_bounds()))]


def ssim_ball_settings():
    """The SSIM-ball attack's settings (keyword arguments of pixelrobust.ssim_ball.SSIMBall)."""
    ss = config["ssim"]
    keys = ("steps", "loss", "step_size", "solver", "tol", "max_iter", "luminance", "k1", "k2")
    return {"size": ss["window"], "stride": ss["stride"], **{k: ss[k] for k in keys}}


def p2_targets():
    """Every table and figure of P2 (the `p2` target); none when ssim.model is null."""
    if config["ssim"]["model"] is None:
        return []
    fig = lambda stem: [f"results/figures/{stem}.{ext}" for ext in ("png", "pdf")]
    return (
        [
            f"results/tables/{t}.{ext}"
            for t in ("ssim_attack", "ssim_cam_summary")
            for ext in ("csv", "md")
        ]
        + [
            f"results/tables/{t}.{ext}"
            for t in ("ssim_matched", "ssim_solver_check")
            for ext in ("csv", "md")
        ]
        + ["results/tables/ssim_cam_comparison.csv"]
        + fig("p2_ssim_sweep")
        + fig("p2_cam_grid")
        + fig("p2_cam_distributions")
    )


# ---- Synthesis (ours) ------------------------------------------------------------------------


def synthesis_targets():
    """The synthesis table and figures (the `synthesis` target); none when synthesis.models is empty."""
    if not config["synthesis"]["models"]:
        return []
    return [f"results/tables/synthesis.{ext}" for ext in ("csv", "md")] + [
        f"results/figures/synthesis_{f}.{ext}" for f in ("maps", "matrix") for ext in ("png", "pdf")
    ]


def synthesis_maps_files(wildcards=None):
    return {m: f"results/synthesis/{m}.npz" for m in config["synthesis"]["models"]}


# ---- Robust vs standard (ours) ---------------------------------------------------------------


def robust_compare_models():
    pairs = config["robust_compare"]["pairs"]
    return list(dict.fromkeys(m for p in pairs for m in (p["standard"], p["robust"])))


def robust_compare_inputs(wildcards=None):
    """The saved per-image outputs of every compared stage, and their provenance records."""
    stages = config["robust_compare"]["stages"]
    out, prov = {}, []
    for m in robust_compare_models():
        if "onepixel" in stages:
            out[f"p1_{m}"] = onepixel_model_chunks(
                "results/p1/onepixel/{model}/chunk-{chunk}.npz", m
            )
            prov += onepixel_model_chunks(
                "results/p1/onepixel/{model}/chunk-{chunk}.provenance.json", m
            )
        if "gradients" in stages:
            out[f"gradients_{m}"] = f"results/p3/gradients/{m}.npz"
            prov.append(f"results/p3/gradients/{m}.provenance.json")
        if "synthesis" in stages:
            out[f"synthesis_{m}"] = f"results/synthesis/{m}.npz"
            prov.append(f"results/synthesis/{m}.provenance.json")
    if "masked_pgd" in stages:
        out["masked_pgd_images"] = "results/tables/masked_pgd_images.csv"
        prov.append("results/tables/masked_pgd.provenance.json")
    return {**out, "prov": prov}


def robust_compare_maps():
    """One npz of mean maps per pair, in the order of robust_compare.pairs."""
    return [
        f"results/robust_compare/{p['standard']}__{p['robust']}.npz"
        for p in config["robust_compare"]["pairs"]
    ]


def robust_compare_targets():
    """The robust-vs-standard table and figure (the `robust` target); none when robust_compare.pairs is empty."""
    if not config["robust_compare"]["pairs"]:
        return []
    return [f"results/tables/robust_compare.{ext}" for ext in ("csv", "md")] + [
        f"results/figures/robust_compare.{ext}" for ext in ("png", "pdf")
    ]


# ---- SUMMARY.md ------------------------------------------------------------------------------


def summary_inputs(wildcards=None):
    """The tables the claims are read from, for the stages this config runs."""
    names = ["clean_accuracy"]
    if config["onepixel"]["models"]:
        names += ["onepixel_summary", "onepixel_claims"]
    if config["ssim"]["model"] is not None:
        names.append("ssim_cam_summary")
    if config["masked_pgd"]["models"]:
        names += [
            s for n, s in (("linf", "masked_pgd"), ("l2", "masked_pgd_l2")) if n in pgd_attacks()
        ]
        names.append("masked_pgd_images")
    if config["prm"]["models"]:
        names += ["prm_lambda_sweep", "prm_lambda_sweep_detail", "prm_lambda_sweep_images"]
    if config["defense_eval"]["models"]:
        names.append("defense")
    if config["synthesis"]["models"]:
        names.append("synthesis")
    if config["robust_compare"]["pairs"]:
        names.append("robust_compare")
    out = {n: f"results/tables/{n}.csv" for n in names}
    # each table's provenance record (the file is named after the table family)
    family = {
        "onepixel_summary": "onepixel",
        "onepixel_claims": "onepixel",
        "ssim_cam_summary": "ssim_cam_comparison",
        "masked_pgd_l2": "masked_pgd",
        "masked_pgd_images": "masked_pgd",
        "prm_lambda_sweep_detail": "prm_lambda_sweep",
        "prm_lambda_sweep_images": "prm_lambda_sweep",
    }
    out["prov"] = sorted({f"results/tables/{family.get(n, n)}.provenance.json" for n in names})
    return out


def report_inputs():
    """Every table and figure of the default target (what the HTML report shows)."""
    return (
        [
            "results/tables/clean_accuracy.csv",
            "results/tables/clean_accuracy.md",
            "results/tables/clean_accuracy.provenance.json",
        ]
        + p1_targets()
        + p2_targets()
        + p3_targets()
        + synthesis_targets()
        + robust_compare_targets()
        + ["results/SUMMARY.md", "results/tables/claims.csv", "results/report/front_page.rst"]
    )


def report_expected():
    """The files the report must embed: every PNG figure, the summary and the claims."""
    return [f for f in report_inputs() if f.endswith(".png")] + [
        "results/SUMMARY.md",
        "results/tables/claims.csv",
    ]
