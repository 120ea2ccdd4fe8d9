rule gradient_map:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
    output:
        "results/p3/gradients/{model}.npz",
        prov="results/p3/gradients/{model}.provenance.json",
    log:
        "results/logs/gradient_map/{model}.log",
    benchmark:
        "results/benchmarks/rules/gradient_map/{model}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=model_spec,
        split=lambda w: config["gradients"]["split"][dataset_of(w.model)],
        n_images=lambda w: config["gradients"]["n_images"][dataset_of(w.model)],
        start=lambda w: config["gradients"]["start"].get(dataset_of(w.model), 0),
        constant=config["gradients"]["architecture_constant"],
        batch_size=config["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("gradient_map", w.model),
    script:
        "../scripts/gradient_map.py"


rule p3_gradient_maps:
    input:
        expand(rules.gradient_map.output[0], model=config["gradients"]["models"]),
    output:
        png=report(
            "results/figures/p3_gradient_maps.png",
            caption="../report/p3_gradient_maps.rst",
            category="P3",
            labels={"figure": "gradient maps"},
        ),
        pdf="results/figures/p3_gradient_maps.pdf",
    log:
        "results/logs/p3_gradient_maps.log",
    localrule: True
    conda:
        ENV
    params:
        models=config["gradients"]["models"],
    script:
        "../scripts/p3_gradient_maps.py"
