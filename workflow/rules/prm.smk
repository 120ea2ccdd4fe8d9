rule train_prm:
    input:
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        weights="resources/weights/{model}.pt",
    output:
        prm="results/p3/prm/{model}/{variant}/prm.pt",
        history="results/p3/prm/{model}/{variant}/history.csv",
        prov="results/p3/prm/{model}/{variant}/prm.provenance.json",
    log:
        "results/logs/train_prm/{model}/{variant}.log",
    benchmark:
        "results/benchmarks/rules/train_prm/{model}/{variant}.tsv"
    wildcard_constraints:
        variant=PRM_VARIANT_PATTERN,
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=lambda w: MODELS[w.model],
        checkpoint=lambda w: f"results/p3/prm/{w.model}/{w.variant}/resume.pt",
        lattice=lambda w: prprm.parse_variant(w.variant)[0],
        depth=config["prm"]["depth"],
        start_filters=config["prm"]["start_filters"],
        residual=config["prm"]["residual"],
        first_conv=config["prm"]["first_conv"],
        train={k: v for k, v in config["prm"]["train"].items() if k != "images"},
        images=lambda w: config["prm"]["train"]["images"][dataset_of(w.model)],
        device=config["device"],
        seed=lambda w: job_seed("train_prm", w.model, w.variant),
    script:
        "../scripts/train_prm.py"


rule prm_sweep:
    input:
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        weights="resources/weights/{model}.pt",
        prm=f"results/p3/prm/{{model}}/{SWEEP_PRM}/prm.pt",
    output:
        table="results/p3/prm_sweep/{model}.csv",
        images="results/p3/prm_sweep/{model}.images.csv",
        maps="results/p3/prm_sweep/{model}.npz",
        prov="results/p3/prm_sweep/{model}.provenance.json",
    log:
        "results/logs/prm_sweep/{model}.log",
    benchmark:
        "results/benchmarks/rules/prm_sweep/{model}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=lambda w: MODELS[w.model],
        lambdas=config["prm"]["sweep"]["lambdas"],
        n_images=lambda w: prm_sweep_n(w.model),
        topk_percent=config["prm"]["sweep"]["topk_percent"],
        batch_size=config["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("prm_sweep", w.model),
        control_seed=lambda w: job_seed("prm_sweep_untrained", w.model, SWEEP_PRM),
    script:
        "../scripts/prm_sweep.py"


rule prm_tables:
    input:
        tables=expand("results/p3/prm_sweep/{model}.csv", model=config["prm"]["models"]),
        images=expand("results/p3/prm_sweep/{model}.images.csv", model=config["prm"]["models"]),
        prov=expand("results/p3/prm_sweep/{model}.provenance.json", model=config["prm"]["models"])
        + expand(
            "results/p3/prm/{model}/{variant}/prm.provenance.json",
            model=config["prm"]["models"],
            variant=SWEEP_PRM,
        ),
    output:
        csv=report(
            "results/tables/prm_lambda_sweep.csv",
            caption="../report/prm_lambda_sweep.rst",
            category="P3",
            labels={"table": "PRM lambda sweep"},
        ),
        md="results/tables/prm_lambda_sweep.md",
        detail="results/tables/prm_lambda_sweep_detail.csv",
        images="results/tables/prm_lambda_sweep_images.csv",
        prov=report(
            "results/tables/prm_lambda_sweep.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"table": "PRM lambda sweep"},
        ),
    log:
        "results/logs/prm_tables.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/prm_tables.py"


rule p3_prm_training:
    input:
        f"results/p3/prm/{{model}}/{SWEEP_PRM}/history.csv",
    output:
        png=report(
            "results/figures/p3_prm_training_{model}.png",
            caption="../report/p3_prm_training.rst",
            category="P3",
            labels={"figure": "PRM training", "model": "{model}"},
        ),
        pdf="results/figures/p3_prm_training_{model}.pdf",
    log:
        "results/logs/p3_prm_training/{model}.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/p3_prm_training.py"


rule p3_prm_lambda:
    input:
        table="results/p3/prm_sweep/{model}.csv",
        images="results/p3/prm_sweep/{model}.images.csv",
        maps="results/p3/prm_sweep/{model}.npz",
    output:
        png=report(
            "results/figures/p3_prm_lambda_{model}.png",
            caption="../report/p3_prm_lambda.rst",
            category="P3",
            labels={"figure": "PRM lambda sweep", "model": "{model}"},
        ),
        pdf="results/figures/p3_prm_lambda_{model}.pdf",
    log:
        "results/logs/p3_prm_lambda/{model}.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/p3_prm_lambda.py"


rule p3:
    input:
        p3_targets(),
