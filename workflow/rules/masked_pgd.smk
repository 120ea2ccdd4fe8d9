rule masked_pgd:
    input:
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        weights="resources/weights/{model}.pt",
        maps="results/p3/gradients/{model}.npz",
    output:
        "results/p3/masked_pgd/{model}/chunk-{chunk}.csv",
        prov="results/p3/masked_pgd/{model}/chunk-{chunk}.provenance.json",
    log:
        "results/logs/masked_pgd/{model}/{chunk}.log",
    benchmark:
        "results/benchmarks/rules/masked_pgd/{model}/{chunk}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=lambda w: MODELS[w.model],
        bounds=lambda w: masked_pgd_bounds(w.model)[int(w.chunk)],
        masks=config["masked_pgd"]["masks"],
        k_percent=config["masked_pgd"]["k_percent"],
        attacks=pgd_attacks(),
        mask_seed=lambda w: job_seed("masked_pgd_mask", w.model),
        batch_size=config["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("masked_pgd", w.model, w.chunk),
    script:
        "../scripts/masked_pgd.py"


rule masked_pgd_tables:
    input:
        unpack(masked_pgd_chunks),
    output:
        **masked_pgd_table_outputs(),
        images="results/tables/masked_pgd_images.csv",
        prov=report(
            "results/tables/masked_pgd.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"table": "masked PGD"},
        ),
    log:
        "results/logs/masked_pgd_tables.log",
    localrule: True
    conda:
        ENV
    params:
        datasets={m: dataset_of(m) for m in config["masked_pgd"]["models"]},
    script:
        "../scripts/masked_pgd_tables.py"


rule p3_masked_pgd:
    input:
        lambda w: masked_pgd_table_outputs()[w.norm],
    output:
        png=report(
            "results/figures/p3_masked_pgd_{norm}.png",
            caption="../report/p3_masked_pgd.rst",
            category="P3",
            labels={"figure": "masked PGD", "norm": "{norm}"},
        ),
        pdf="results/figures/p3_masked_pgd_{norm}.pdf",
    log:
        "results/logs/p3_masked_pgd/{norm}.log",
    wildcard_constraints:
        norm="linf|l2",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/p3_masked_pgd.py"
