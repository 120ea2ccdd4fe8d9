rule four_maps:
    input:
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        weights="resources/weights/{model}.pt",
        maps=lambda w: onepixel_model_chunks(
            "results/p1/onepixel/{model}/chunk-{chunk}.npz", w.model
        ),
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
        spec=lambda w: MODELS[w.model],
        bounds=lambda w: onepixel_bounds(w.model),
        n_images=lambda w: config["synthesis"]["n_images"].get(dataset_of(w.model)),
        epsilon=config["synthesis"]["epsilon"],
        ball=ssim_ball_settings(),
        p2_map=config["ssim"]["compare"]["primary"]["map"],
        batch_size=config["ssim"]["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("four_maps", w.model),
    script:
        "../scripts/four_maps.py"


rule synthesis_tables:
    input:
        unpack(synthesis_maps_files),
        prov=expand(
            "results/synthesis/{model}.provenance.json",
            model=config["synthesis"]["models"],
        ),
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
        models=config["synthesis"]["models"],
        datasets={m: dataset_of(m) for m in config["synthesis"]["models"]},
        topk_percent=config["synthesis"]["topk_percent"],
        n_boot=config["synthesis"]["bootstrap"],
        seed=job_seed("synthesis_tables"),
    script:
        "../scripts/synthesis_tables.py"


rule synthesis_maps:
    input:
        unpack(synthesis_maps_files),
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
        models=config["synthesis"]["models"],
        examples=config["synthesis"]["examples"],
    script:
        "../scripts/synthesis_maps.py"


rule synthesis_matrix:
    input:
        table="results/tables/synthesis.csv",
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


rule synthesis:
    input:
        synthesis_targets(),
