# Robust vs standard (ours): a standard and an adversarially trained model of one dataset compared on the
# same images from the stages' saved outputs (docs/robust.md). No rule here runs an attack; robust_compare
# computes the input-gradient and Grad-CAM++ maps of robust_compare.untrained_copies untrained copies of each
# standard model on the synthesis images (seconds on the CPU), the agreement rows' same-run reference.


ROBUST_PAIRS = config["robust_compare"]["pairs"]
ROBUST_MODELS = list(dict.fromkeys(m for p in ROBUST_PAIRS for m in (p["standard"], p["robust"])))
# one npz of mean maps per pair, in the order of robust_compare.pairs
ROBUST_MAPS = [f"results/robust_compare/{p['standard']}__{p['robust']}.npz" for p in ROBUST_PAIRS]
# the saved per-image outputs of every compared stage, and their provenance records
ROBUST_INPUTS, _prov = {}, []
_stages = config["robust_compare"]["stages"]
for _m in ROBUST_MODELS:
    if "onepixel" in _stages:
        ROBUST_INPUTS[f"p1_{_m}"] = chunk_files("onepixel", rules.onepixel_search.output.maps, _m)
        _prov += chunk_files("onepixel", rules.onepixel_search.output.prov, _m)
    if "gradients" in _stages:
        ROBUST_INPUTS[f"gradients_{_m}"] = rules.gradient_map.output[0].format(model=_m)
        _prov.append(rules.gradient_map.output.prov.format(model=_m))
    if "synthesis" in _stages:
        ROBUST_INPUTS[f"synthesis_{_m}"] = rules.four_maps.output.npz.format(model=_m)
        _prov.append(rules.four_maps.output.prov.format(model=_m))
if "masked_pgd" in _stages:
    ROBUST_INPUTS["masked_pgd_images"] = rules.masked_pgd_tables.output.images
    _prov.append(rules.masked_pgd_tables.output.prov)
ROBUST_INPUTS["prov"] = _prov


rule robust_compare:
    input:
        **ROBUST_INPUTS,
    output:
        csv=report(
            "results/tables/robust_compare.csv",
            caption="../report/robust_compare.rst",
            category="Robust vs standard (ours)",
            labels={"table": "robust vs standard"},
        ),
        md="results/tables/robust_compare.md",
        maps=ROBUST_MAPS,
        prov=report(
            "results/tables/robust_compare.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"table": "robust vs standard"},
        ),
    log:
        "results/logs/robust_compare.log",
    localrule: True
    conda:
        ENV
    params:
        pairs=ROBUST_PAIRS,
        models=ROBUST_MODELS,
        datasets={m: dataset_of(m) for m in ROBUST_MODELS},
        specs={p["standard"]: MODELS[p["standard"]] for p in ROBUST_PAIRS},
        stages=config["robust_compare"]["stages"],
        topk_percent=config["robust_compare"]["topk_percent"],
        border=config["robust_compare"]["border"],
        max_k=config["masked_pgd"]["verdict_max_k"],
        n_boot=config["robust_compare"]["bootstrap"],
        seed=job_seed("robust_compare"),
        untrained_copies=config["robust_compare"]["untrained_copies"],
    script:
        "../scripts/robust_compare.py"


rule robust_compare_figure:
    input:
        table=rules.robust_compare.output.csv,
        maps=rules.robust_compare.output.maps,
    output:
        png=report(
            "results/figures/robust_compare.png",
            caption="../report/robust_compare_figure.rst",
            category="Robust vs standard (ours)",
            labels={"figure": "robust vs standard"},
        ),
        pdf="results/figures/robust_compare.pdf",
    log:
        "results/logs/robust_compare_figure.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/robust_compare_figure.py"
