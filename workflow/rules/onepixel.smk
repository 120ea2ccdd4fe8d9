rule segment:
    input:
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        weights="resources/weights/{model}.pt",
    output:
        "results/p1/segments/{model}/chunk-{chunk}.npz",
        prov="results/p1/segments/{model}/chunk-{chunk}.provenance.json",
    log:
        "results/logs/segment/{model}/{chunk}.log",
    benchmark:
        "results/benchmarks/rules/segment/{model}/{chunk}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=lambda w: MODELS[w.model],
        bounds=lambda w: onepixel_bounds(w.model)[int(w.chunk)],
        slic=lambda w: config["onepixel"]["segmentation"][dataset_of(w.model)],
        occlusion=config["onepixel"]["occlusion"],
        batch_size=config["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("segment", w.model, w.chunk),
    script:
        "../scripts/segment.py"


rule onepixel_search:
    input:
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        weights="resources/weights/{model}.pt",
        segments="results/p1/segments/{model}/chunk-{chunk}.npz",
    output:
        maps="results/p1/onepixel/{model}/chunk-{chunk}.npz",
        images="results/p1/onepixel/{model}/chunk-{chunk}-images.csv",
        regions="results/p1/onepixel/{model}/chunk-{chunk}-regions.csv",
        de_runs="results/p1/onepixel/{model}/chunk-{chunk}-de.csv",
        prov="results/p1/onepixel/{model}/chunk-{chunk}.provenance.json",
    log:
        "results/logs/onepixel_search/{model}/{chunk}.log",
    benchmark:
        "results/benchmarks/rules/onepixel_search/{model}/{chunk}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=lambda w: MODELS[w.model],
        bounds=lambda w: onepixel_bounds(w.model)[int(w.chunk)],
        palette=config["onepixel"]["palette"],
        grid_stride=lambda w: config["onepixel"]["grid_stride"][dataset_of(w.model)],
        de=config["onepixel"]["de"],
        de_regions=config["onepixel"]["de_regions"],
        targeted=config["onepixel"]["targeted"],
        precision=config["onepixel"]["precision"],
        screening=config["onepixel"]["screening"],
        incremental=config["onepixel"]["incremental"],
        batch_size=config["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("onepixel_search", w.model, w.chunk),
    script:
        "../scripts/onepixel_search.py"


rule onepixel_claim_images:
    input:
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        weights="resources/weights/{model}.pt",
        segments="results/p1/segments/{model}/chunk-{chunk}.npz",
        maps="results/p1/onepixel/{model}/chunk-{chunk}.npz",
    output:
        table="results/p1/claims/{model}/chunk-{chunk}.csv",
        prov="results/p1/claims/{model}/chunk-{chunk}.provenance.json",
    log:
        "results/logs/onepixel_claim_images/{model}/{chunk}.log",
    benchmark:
        "results/benchmarks/rules/onepixel_claim_images/{model}/{chunk}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=lambda w: MODELS[w.model],
        bounds=lambda w: onepixel_bounds(w.model)[int(w.chunk)],
        slic=lambda w: config["onepixel"]["segmentation"][dataset_of(w.model)],
        sensitivity=config["onepixel"]["sensitivity_segments"],
        occlusion=config["onepixel"]["occlusion"],
        semantic=config["onepixel"]["semantic"],
        restricted=config["onepixel"]["restricted"],
        batch_size=config["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("onepixel_claim_images", w.model, w.chunk),
    script:
        "../scripts/onepixel_claim_images.py"


rule onepixel_tables:
    input:
        images=onepixel_chunks("results/p1/onepixel/{model}/chunk-{chunk}-images.csv"),
        regions=onepixel_chunks("results/p1/onepixel/{model}/chunk-{chunk}-regions.csv"),
        de_runs=onepixel_chunks("results/p1/onepixel/{model}/chunk-{chunk}-de.csv"),
        claim_images=onepixel_chunks("results/p1/claims/{model}/chunk-{chunk}.csv"),
        prov=onepixel_chunks("results/p1/segments/{model}/chunk-{chunk}.provenance.json")
        + onepixel_chunks("results/p1/onepixel/{model}/chunk-{chunk}.provenance.json")
        + onepixel_chunks("results/p1/claims/{model}/chunk-{chunk}.provenance.json"),
    output:
        success=report(
            "results/tables/onepixel_success.csv",
            caption="../report/onepixel_success.rst",
            category="P1",
            labels={"table": "one-pixel success"},
        ),
        success_md="results/tables/onepixel_success.md",
        summary=report(
            "results/tables/onepixel_summary.csv",
            caption="../report/onepixel_summary.rst",
            category="P1",
            labels={"table": "claims"},
        ),
        summary_md="results/tables/onepixel_summary.md",
        claims=report(
            "results/tables/onepixel_claims.csv",
            caption="../report/onepixel_claims.rst",
            category="P1",
            labels={"table": "claims against controls"},
        ),
        claims_md="results/tables/onepixel_claims.md",
        claim_images="results/p1/onepixel_claim_images.csv",
        regions="results/tables/onepixel_regions.csv",
        images="results/tables/onepixel_images.csv",
        de_runs="results/tables/onepixel_de_runs.csv",
        prov=report(
            "results/tables/onepixel.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"table": "P1 one-pixel tables"},
        ),
    log:
        "results/logs/onepixel_tables.log",
    localrule: True
    conda:
        ENV
    params:
        notes={m: onepixel_note(m) for m in config["onepixel"]["models"]},
        semantic=config["onepixel"]["semantic"],
        restricted=config["onepixel"]["restricted"],
        n_boot=config["onepixel"]["bootstrap"],
        seed=job_seed("onepixel_tables"),
    script:
        "../scripts/onepixel_tables.py"


rule p1_vulnerability_grid:
    input:
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        maps=lambda w: onepixel_model_chunks(
            "results/p1/onepixel/{model}/chunk-{chunk}.npz", w.model
        ),
        segments=lambda w: onepixel_model_chunks(
            "results/p1/segments/{model}/chunk-{chunk}.npz", w.model
        ),
    output:
        png=report(
            "results/figures/p1_vulnerability_grid_{model}.png",
            caption="../report/p1_vulnerability_grid.rst",
            category="P1",
            labels={"figure": "vulnerable pixels", "model": "{model}"},
        ),
        pdf="results/figures/p1_vulnerability_grid_{model}.pdf",
    log:
        "results/logs/p1_vulnerability_grid/{model}.log",
    localrule: True
    conda:
        ENV
    params:
        starts=lambda w: [b[0] for b in onepixel_bounds(w.model)],
    script:
        "../scripts/p1_vulnerability_grid.py"


rule p1_region_semantics:
    input:
        claim_images="results/p1/onepixel_claim_images.csv",
        claims="results/tables/onepixel_claims.csv",
    output:
        png=report(
            "results/figures/p1_region_semantics.png",
            caption="../report/p1_region_semantics.rst",
            category="P1",
            labels={"figure": "region semantics"},
        ),
        pdf="results/figures/p1_region_semantics.pdf",
    log:
        "results/logs/p1_region_semantics.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/p1_region_semantics.py"


rule p1:
    input:
        p1_targets(),
