rule segment:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
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
        spec=model_spec,
        bounds=lambda w: chunk_bounds("onepixel", w.model, w.chunk),
        slic=lambda w: config["onepixel"]["segmentation"][dataset_of(w.model)],
        occlusion=config["onepixel"]["occlusion"],
        batch_size=config["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("segment", w.model, w.chunk),
    script:
        "../scripts/segment.py"


rule onepixel_search:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
        segments=rules.segment.output[0],
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
        spec=model_spec,
        bounds=lambda w: chunk_bounds("onepixel", w.model, w.chunk),
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
        # the model's seed, not the chunk's: an image's random draws do not depend on its chunk
        seed=lambda w: job_seed("onepixel_search", w.model),
    script:
        "../scripts/onepixel_search.py"


rule onepixel_claim_images:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
        segments=rules.segment.output[0],
        maps=rules.onepixel_search.output.maps,
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
        spec=model_spec,
        bounds=lambda w: chunk_bounds("onepixel", w.model, w.chunk),
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


ONEPIXEL_MODELS = config["onepixel"]["models"]


# what the search ran for each model (written into the success table)
ONEPIXEL_NOTES = {}
_op, _de = config["onepixel"], config["onepixel"]["de"]
_mode = "targeted (most likely wrong class)" if _op["targeted"] else "untargeted"
_palette = _op["palette"] if isinstance(_op["palette"], str) else f"{len(_op['palette'])} colours"
for _model in ONEPIXEL_MODELS:
    _stride = _op["grid_stride"][dataset_of(_model)]
    _grid = "every pixel" if _stride == 1 else f"a grid of every {_stride}th pixel"
    ONEPIXEL_NOTES[_model] = (
        f"{_mode}; exhaustive: {_grid} x palette {_palette}; DE pop {_de['popsize']}, {_de['maxiter']} generations, "
        f"F {_de['F']}, CR {_de['CR']}, {_op['de_regions']} regions + equal random subsets"
    )


rule onepixel_tables:
    input:
        images=chunk_files("onepixel", rules.onepixel_search.output.images, *ONEPIXEL_MODELS),
        regions=chunk_files("onepixel", rules.onepixel_search.output.regions, *ONEPIXEL_MODELS),
        de_runs=chunk_files("onepixel", rules.onepixel_search.output.de_runs, *ONEPIXEL_MODELS),
        claim_images=chunk_files(
            "onepixel", rules.onepixel_claim_images.output.table, *ONEPIXEL_MODELS
        ),
        prov=chunk_files("onepixel", rules.segment.output.prov, *ONEPIXEL_MODELS)
        + chunk_files("onepixel", rules.onepixel_search.output.prov, *ONEPIXEL_MODELS)
        + chunk_files("onepixel", rules.onepixel_claim_images.output.prov, *ONEPIXEL_MODELS),
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
        notes=ONEPIXEL_NOTES,
        semantic=config["onepixel"]["semantic"],
        restricted=config["onepixel"]["restricted"],
        n_boot=config["onepixel"]["bootstrap"],
        seed=job_seed("onepixel_tables"),
    script:
        "../scripts/onepixel_tables.py"


rule p1_vulnerability_grid:
    input:
        data=model_data,
        maps=lambda w: chunk_files("onepixel", rules.onepixel_search.output.maps, w.model),
        segments=lambda w: chunk_files("onepixel", rules.segment.output[0], w.model),
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
        starts=lambda w: [start for start, _ in chunk_bounds("onepixel", w.model)],
    script:
        "../scripts/p1_vulnerability_grid.py"


rule p1_region_semantics:
    input:
        claim_images=rules.onepixel_tables.output.claim_images,
        claims=rules.onepixel_tables.output.claims,
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
