MASKED_PGD = config["masked_pgd"]
# the configured PGD variants by norm (L2 only when masked_pgd.l2 is set)
PGD_ATTACKS = {norm: MASKED_PGD[norm] for norm in ("linf", "l2") if MASKED_PGD.get(norm)}


rule masked_pgd:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
        maps=rules.gradient_map.output[0],
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
        spec=model_spec,
        bounds=lambda w: chunk_bounds("masked_pgd", w.model, w.chunk),
        masks=config["masked_pgd"]["masks"],
        k_percent=config["masked_pgd"]["k_percent"],
        attacks=PGD_ATTACKS,
        mask_seed=lambda w: job_seed("masked_pgd_mask", w.model),
        batch_size=config["batch_size"],
        device=config["device"],
        # the model's seed, not the chunk's: each image's PGD start is derived from it and the image id
        seed=lambda w: job_seed("masked_pgd", w.model),
    script:
        "../scripts/masked_pgd.py"


# every chunk's table by model; the chunks' and the gradient maps' provenance records
MASKED_PGD_INPUTS = chunk_inputs("masked_pgd", rules.masked_pgd, MASKED_PGD["models"])
MASKED_PGD_INPUTS["prov"] += expand(rules.gradient_map.output.prov, model=MASKED_PGD["models"])
# the table of each configured norm and its markdown, named linf, linf_md, l2, l2_md
MASKED_PGD_TABLES = {
    name: f"results/tables/{'masked_pgd' if norm == 'linf' else 'masked_pgd_l2'}.{ext}"
    for norm in PGD_ATTACKS
    for name, ext in ((norm, "csv"), (f"{norm}_md", "md"))
}


rule masked_pgd_tables:
    input:
        **MASKED_PGD_INPUTS,
    output:
        **MASKED_PGD_TABLES,
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
        datasets={m: dataset_of(m) for m in MASKED_PGD["models"]},
    script:
        "../scripts/masked_pgd_tables.py"


rule p3_masked_pgd:
    input:
        lambda w: rules.masked_pgd_tables.output[w.norm],
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
