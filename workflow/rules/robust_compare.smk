# Robust vs standard (ours): a standard and an adversarially trained model of one dataset compared on the
# same images from the stages' saved outputs (docs/robust.md). No rule here runs an attack; robust_compare
# computes an untrained copy of each standard model's input-gradient and Grad-CAM++ maps on the synthesis
# images (seconds on the CPU), the agreement rows' same-run reference.


rule robust_compare:
    input:
        unpack(robust_compare_inputs),
    output:
        csv=report(
            "results/tables/robust_compare.csv",
            caption="../report/robust_compare.rst",
            category="Robust vs standard (ours)",
            labels={"table": "robust vs standard"},
        ),
        md="results/tables/robust_compare.md",
        maps=robust_compare_maps(),
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
        pairs=config["robust_compare"]["pairs"],
        models=robust_compare_models(),
        datasets={m: dataset_of(m) for m in robust_compare_models()},
        specs={p["standard"]: MODELS[p["standard"]] for p in config["robust_compare"]["pairs"]},
        stages=config["robust_compare"]["stages"],
        topk_percent=config["robust_compare"]["topk_percent"],
        border=config["robust_compare"]["border"],
        max_k=config["masked_pgd"]["verdict_max_k"],
        n_boot=config["robust_compare"]["bootstrap"],
        seed=job_seed("robust_compare"),
    script:
        "../scripts/robust_compare.py"


rule robust_compare_figure:
    input:
        table="results/tables/robust_compare.csv",
        maps=robust_compare_maps(),
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


rule robust:
    input:
        robust_compare_targets(),
