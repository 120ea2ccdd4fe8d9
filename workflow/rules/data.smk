# the built-in datasets and those described under datasets: (a user's own images)
DATASET_NAMES = sorted(set(prdata.DATASETS) | set(config["datasets"]))


wildcard_constraints:
    dataset="|".join(DATASET_NAMES),


rule download:
    output:
        "resources/downloads/{file}",
    log:
        "results/logs/download/{file}.log",
    localrule: True
    conda:
        ENV
    params:
        source=lambda w: DOWNLOADS[w.file],
    script:
        "../scripts/download.py"


rule prepare_dataset:
    input:
        unpack(dataset_inputs),
    output:
        data=directory("resources/data/{dataset}"),
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    localrule: True
    conda:
        ENV
    params:
        settings=lambda w: config["datasets"][w.dataset],
        mirror=str(MIRROR) if MIRROR else None,
        # changes when a source file is edited, added or removed: Snakemake then prepares again
        source_fingerprint=lambda w: prdata.source_fingerprint(
            w.dataset, config["datasets"][w.dataset], MIRROR
        ),
    script:
        "../scripts/prepare_dataset.py"
