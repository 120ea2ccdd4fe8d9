rule clean_accuracy_chunk:
    input:
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        weights="resources/weights/{model}.pt",
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
        spec=lambda w: MODELS[w.model],
        bounds=lambda w: clean_accuracy_bounds(w.model)[int(w.chunk)],
        batch_size=config["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("clean_accuracy", w.model, w.chunk),
    script:
        "../scripts/clean_accuracy_chunk.py"


rule clean_accuracy:
    input:
        unpack(clean_accuracy_chunks),
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
        datasets=lambda w: {m: dataset_of(m) for m in prconfig.clean_accuracy_models(config)},
    script:
        "../scripts/clean_accuracy.py"
