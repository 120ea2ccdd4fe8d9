DEFENSE_EVAL = config["defense_eval"]
USES_PRM = "stochastic_prm" in DEFENSE_EVAL["defenses"]
# the PRM variants the stochastic-PRM defence draws from (defense_settings.stochastic_prm.pool)
DEFENSE_POOL = prprm.pool_variants(DEFENSE_EVAL["defense_settings"]["stochastic_prm"]["pool"])
# a defended model's trained PRMs of that pool (none without the stochastic-PRM defence)
DEFENSE_PRMS = (
    {"prms": expand(rules.train_prm.output.prm, variant=DEFENSE_POOL, allow_missing=True)}
    if USES_PRM
    else {}
)


rule defense_eval:
    input:
        **DEFENSE_PRMS,
        data=model_data,
        weights=rules.get_weights.output[0],
    output:
        "results/p3/defense/{model}/{attack}/chunk-{chunk}.csv",
        prov="results/p3/defense/{model}/{attack}/chunk-{chunk}.provenance.json",
    log:
        "results/logs/defense_eval/{model}/{attack}/{chunk}.log",
    benchmark:
        "results/benchmarks/rules/defense_eval/{model}/{attack}/{chunk}.tsv"
    wildcard_constraints:
        attack="|".join(["clean", *prdefense_eval.ATTACKS]),
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=model_spec,
        bounds=lambda w: chunk_bounds("defense_eval", w.model, w.chunk),
        attack_settings=lambda w: config["defense_eval"]["attack_settings"].get(w.attack, {}),
        defenses={
            d: config["defense_eval"]["defense_settings"][d]
            for d in config["defense_eval"]["defenses"]
        },
        protocols=config["defense_eval"]["protocols"],
        eot_samples=config["defense_eval"]["eot_samples"],
        draws=config["defense_eval"]["draws"],
        adaptive_pgd=config["defense_eval"]["adaptive_pgd"],
        batch_size=config["batch_size"],
        device=config["device"],
        # the model's seed, not the chunk's: per-image draws derive from it and the image id
        seed=lambda w: job_seed("defense_eval", w.model),
    script:
        "../scripts/defense_eval.py"


# every defense_eval chunk by model (clean + each attack), and their provenance records (with the
# pool's PRMs')
DEFENSE_INPUTS = chunk_inputs(
    "defense_eval",
    rules.defense_eval,
    DEFENSE_EVAL["models"],
    attack=["clean", *DEFENSE_EVAL["attacks"]],
)
if USES_PRM:
    DEFENSE_INPUTS["prov"] += expand(
        rules.train_prm.output.prov, model=DEFENSE_EVAL["models"], variant=DEFENSE_POOL
    )


rule defense_tables:
    input:
        **DEFENSE_INPUTS,
    output:
        csv=report(
            "results/tables/defense.csv",
            caption="../report/defense.rst",
            category="P3",
            labels={"table": "defences"},
        ),
        md="results/tables/defense.md",
        saturation="results/tables/defense_saturation.csv",
        saturation_md="results/tables/defense_saturation.md",
        prov=report(
            "results/tables/defense.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"table": "defences"},
        ),
    log:
        "results/logs/defense_tables.log",
    localrule: True
    conda:
        ENV
    params:
        datasets={m: dataset_of(m) for m in config["defense_eval"]["models"]},
        n_boot=config["defense_eval"]["bootstrap"],
        seed=job_seed("defense_tables"),
    script:
        "../scripts/defense_tables.py"


rule p3_defense:
    input:
        rules.defense_tables.output.csv,
    output:
        png=report(
            "results/figures/p3_defense.png",
            caption="../report/p3_defense.rst",
            category="P3",
            labels={"figure": "defence heatmap"},
        ),
        pdf="results/figures/p3_defense.pdf",
    log:
        "results/logs/p3_defense.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/p3_defense.py"
