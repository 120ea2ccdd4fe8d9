# One trained PRM per model and variant, ``<lattice>-r<replicate>``: results/p3/prm/<model>/<variant>/.
PRM_VARIANT_PATTERN = "(" + "|".join(prprm.LATTICES) + r")-r\d+"


rule train_prm:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
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
        spec=model_spec,
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


SWEEP_PRM = prprm.variant_name(config["prm"]["lattice"], 0)  # the λ sweep's PRM
PRM_MODELS = config["prm"]["models"]
# train_prm's outputs for the λ sweep's PRM (of the job's {model})
SWEEP_PRM_FILES = {
    name: expand(pattern, variant=SWEEP_PRM, allow_missing=True)[0]
    for name, pattern in rules.train_prm.output.items()
}


rule prm_sweep:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
        prm=SWEEP_PRM_FILES["prm"],
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
        spec=model_spec,
        lambdas=config["prm"]["sweep"]["lambdas"],
        n_images=lambda w: n_images(
            dataset_of(w.model), config["prm"]["sweep"]["n_images"][dataset_of(w.model)]
        ),
        topk_percent=config["prm"]["sweep"]["topk_percent"],
        batch_size=config["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("prm_sweep", w.model),
        control_seed=lambda w: job_seed("prm_sweep_untrained", w.model, SWEEP_PRM),
    script:
        "../scripts/prm_sweep.py"


rule prm_tables:
    input:
        tables=expand(rules.prm_sweep.output.table, model=PRM_MODELS),
        images=expand(rules.prm_sweep.output.images, model=PRM_MODELS),
        prov=expand(rules.prm_sweep.output.prov, model=PRM_MODELS)
        + expand(rules.train_prm.output.prov, model=PRM_MODELS, variant=SWEEP_PRM),
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
        SWEEP_PRM_FILES["history"],
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
        table=rules.prm_sweep.output.table,
        images=rules.prm_sweep.output.images,
        maps=rules.prm_sweep.output.maps,
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
