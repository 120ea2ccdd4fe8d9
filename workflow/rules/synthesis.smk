rule four_maps:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
        maps=lambda w: chunk_files("onepixel", rules.onepixel_search.output.maps, w.model),
    output:
        npz="results/synthesis/{model}.npz",
        prov="results/synthesis/{model}.provenance.json",
    log:
        "results/logs/four_maps/{model}.log",
    benchmark:
        "results/benchmarks/rules/four_maps/{model}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=model_spec,
        bounds=lambda w: chunk_bounds("onepixel", w.model),
        n_images=lambda w: config["synthesis"]["n_images"].get(dataset_of(w.model)),
        epsilon=config["synthesis"]["epsilon"],
        ball=SSIM_BALL,
        p2_map=config["ssim"]["compare"]["primary"]["map"],
        batch_size=config["ssim"]["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("four_maps", w.model),
    script:
        "../scripts/four_maps.py"


SYNTHESIS_MODELS = config["synthesis"]["models"]


# each synthesis model's four maps, by model
SYNTHESIS_MAPS = dict(
    zip(SYNTHESIS_MODELS, expand(rules.four_maps.output.npz, model=SYNTHESIS_MODELS))
)


rule synthesis_tables:
    input:
        **SYNTHESIS_MAPS,
        prov=expand(rules.four_maps.output.prov, model=SYNTHESIS_MODELS),
    output:
        csv=report(
            "results/tables/synthesis.csv",
            caption="../report/synthesis.rst",
            category="Synthesis",
            labels={"table": "four maps agreement"},
        ),
        md="results/tables/synthesis.md",
        images="results/tables/synthesis_images.csv",
        prov=report(
            "results/tables/synthesis.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"table": "synthesis"},
        ),
    log:
        "results/logs/synthesis_tables.log",
    localrule: True
    conda:
        ENV
    params:
        models=SYNTHESIS_MODELS,
        datasets={m: dataset_of(m) for m in SYNTHESIS_MODELS},
        topk_percent=config["synthesis"]["topk_percent"],
        n_boot=config["synthesis"]["bootstrap"],
        seed=job_seed("synthesis_tables"),
    script:
        "../scripts/synthesis_tables.py"


rule synthesis_maps:
    input:
        **SYNTHESIS_MAPS,
    output:
        png=report(
            "results/figures/synthesis_maps.png",
            caption="../report/synthesis_maps.rst",
            category="Synthesis",
            labels={"figure": "four maps"},
        ),
        pdf="results/figures/synthesis_maps.pdf",
    log:
        "results/logs/synthesis_maps.log",
    localrule: True
    conda:
        ENV
    params:
        models=SYNTHESIS_MODELS,
        examples=config["synthesis"]["examples"],
    script:
        "../scripts/synthesis_maps.py"


rule synthesis_matrix:
    input:
        table=rules.synthesis_tables.output.csv,
    output:
        png=report(
            "results/figures/synthesis_matrix.png",
            caption="../report/synthesis_matrix.rst",
            category="Synthesis",
            labels={"figure": "agreement matrix"},
        ),
        pdf="results/figures/synthesis_matrix.pdf",
    log:
        "results/logs/synthesis_matrix.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/synthesis_matrix.py"
