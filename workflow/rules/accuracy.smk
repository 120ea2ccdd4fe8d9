rule clean_accuracy_chunk:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
    output:
        "results/clean_accuracy/{model}/chunk-{chunk}.csv",
        prov="results/clean_accuracy/{model}/chunk-{chunk}.provenance.json",
    log:
        "results/logs/clean_accuracy_chunk/{model}/{chunk}.log",
    benchmark:
        "results/benchmarks/rules/clean_accuracy_chunk/{model}/{chunk}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=model_spec,
        bounds=lambda w: chunk_bounds("clean_accuracy", w.model, w.chunk),
        batch_size=config["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("clean_accuracy", w.model, w.chunk),
    script:
        "../scripts/clean_accuracy_chunk.py"


CLEAN_ACCURACY_MODELS = prconfig.clean_accuracy_models(config)


rule clean_accuracy:
    input:
        # every chunk's table by model, and every chunk's provenance record
        **chunk_inputs("clean_accuracy", rules.clean_accuracy_chunk, CLEAN_ACCURACY_MODELS),
    output:
        csv=report(
            "results/tables/clean_accuracy.csv",
            caption="../report/clean_accuracy.rst",
            category="Foundation",
            labels={"table": "clean accuracy"},
        ),
        md="results/tables/clean_accuracy.md",
        prov=report(
            "results/tables/clean_accuracy.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"table": "clean accuracy"},
        ),
    log:
        "results/logs/clean_accuracy.log",
    localrule: True
    conda:
        ENV
    params:
        datasets=lambda w: {m: dataset_of(m) for m in CLEAN_ACCURACY_MODELS},
    script:
        "../scripts/clean_accuracy.py"
