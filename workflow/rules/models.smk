rule get_weights:
    input:
        weights_input,
    output:
        "resources/weights/{model}.pt",
    log:
        "results/logs/get_weights/{model}.log",
    localrule: True
    conda:
        ENV
    params:
        spec=model_spec,
        sha256=lambda w: WEIGHTS[w.model]["sha256"],
    script:
        "../scripts/get_weights.py"
