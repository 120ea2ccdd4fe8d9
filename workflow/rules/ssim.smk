# P2: SSIM-ball attacks, Grad-CAM++ and the comparison of their maps (docs/p2.md).

SSIM_MODEL = config["ssim"]["model"]  # P2's one model; null: no P2


# the SSIM-ball attack's settings (keyword arguments of pixelrobust.ssim_ball.SSIMBall)
_ball = ("steps", "loss", "step_size", "solver", "tol", "max_iter", "luminance", "k1", "k2")
SSIM_BALL = {
    "size": config["ssim"]["window"],
    "stride": config["ssim"]["stride"],
    **{k: config["ssim"][k] for k in _ball},
}


rule attack_ssim:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
    output:
        csv="results/p2/{model}/attack/chunk-{chunk}.csv",
        npz="results/p2/{model}/attack/chunk-{chunk}.npz",
        prov="results/p2/{model}/attack/chunk-{chunk}.provenance.json",
    log:
        "results/logs/attack_ssim/{model}/{chunk}.log",
    benchmark:
        "results/benchmarks/rules/attack_ssim/{model}/{chunk}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=model_spec,
        bounds=lambda w: chunk_bounds("ssim", w.model, w.chunk),
        epsilons=config["ssim"]["epsilons"],
        ball=SSIM_BALL,
        pgd=config["ssim"]["pgd"],
        compare_epsilon=config["ssim"]["compare"]["epsilon"],
        batch_size=config["ssim"]["batch_size"],
        device=config["device"],
        # the model's seed, not the chunk's: each image's PGD start is derived from it and the image id
        seed=lambda w: job_seed("attack_ssim", w.model),
    script:
        "../scripts/attack_ssim.py"


rule ssim_tables:
    input:
        csv=chunk_files("ssim", rules.attack_ssim.output.csv, SSIM_MODEL),
        prov=chunk_files("ssim", rules.attack_ssim.output.prov, SSIM_MODEL),
    output:
        csv=report(
            "results/tables/ssim_attack.csv",
            caption="../report/ssim_attack.rst",
            category="P2",
            labels={"table": "SSIM-ball sweep"},
        ),
        md="results/tables/ssim_attack.md",
        matched="results/tables/ssim_matched.csv",
        matched_md="results/tables/ssim_matched.md",
        prov="results/tables/ssim_attack.provenance.json",
    log:
        "results/logs/ssim_tables.log",
    localrule: True
    conda:
        ENV
    params:
        compare_epsilon=config["ssim"]["compare"]["epsilon"],
    script:
        "../scripts/ssim_tables.py"


rule cam:
    input:
        data=model_data,
        weights=rules.get_weights.output[0],
        attack_csv=rules.attack_ssim.output.csv,
        attack_npz=rules.attack_ssim.output.npz,
        matched=rules.ssim_tables.output.matched,
        prov=rules.attack_ssim.output.prov,
    output:
        npz="results/p2/{model}/cam/chunk-{chunk}.npz",
        prov="results/p2/{model}/cam/chunk-{chunk}.provenance.json",
    log:
        "results/logs/cam/{model}/{chunk}.log",
    benchmark:
        "results/benchmarks/rules/cam/{model}/{chunk}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        spec=model_spec,
        bounds=lambda w: chunk_bounds("ssim", w.model, w.chunk),
        pgd=config["ssim"]["pgd"],
        batch_size=config["ssim"]["batch_size"],
        device=config["device"],
        # the seed attack_ssim used, so PGD at the matched budget repeats its adversarials
        seed=lambda w: job_seed("attack_ssim", w.model),
    script:
        "../scripts/cam.py"


rule compare_maps:
    input:
        data=lambda w: dataset_folder(SSIM_MODEL),
        cams=chunk_files("ssim", rules.cam.output.npz, SSIM_MODEL),
        prov=chunk_files("ssim", rules.cam.output.prov, SSIM_MODEL),
    output:
        csv="results/tables/ssim_cam_comparison.csv",
        summary=report(
            "results/tables/ssim_cam_summary.csv",
            caption="../report/ssim_cam_summary.rst",
            category="P2",
            labels={"table": "SSIM map vs CAM"},
        ),
        summary_md="results/tables/ssim_cam_summary.md",
        prov="results/tables/ssim_cam_comparison.provenance.json",
    log:
        "results/logs/compare_maps.log",
    benchmark:
        "results/benchmarks/rules/compare_maps.tsv"
    localrule: True
    conda:
        ENV
    params:
        bounds=chunk_bounds("ssim", SSIM_MODEL),
        topk_percent=config["ssim"]["compare"]["topk_percent"],
        bootstrap=config["ssim"]["compare"]["bootstrap"],
        ball=SSIM_BALL,
        primary=config["ssim"]["compare"]["primary"],
        grid_min_ratio=config["ssim"]["compare"]["grid_min_ratio"],
        success_tolerance=config["ssim"]["compare"]["success_tolerance"],
        epsilon=config["ssim"]["compare"]["epsilon"],
        seed=job_seed("compare_maps"),
    script:
        "../scripts/compare_maps.py"


rule ssim_solver_check:
    input:
        data=lambda w: dataset_folder(SSIM_MODEL),
        weights=lambda w: rules.get_weights.output[0].format(model=SSIM_MODEL),
    output:
        csv=report(
            "results/tables/ssim_solver_check.csv",
            caption="../report/ssim_solver_check.rst",
            category="P2",
            labels={"table": "solver cross-check"},
        ),
        md="results/tables/ssim_solver_check.md",
        prov="results/tables/ssim_solver_check.provenance.json",
    log:
        "results/logs/ssim_solver_check.log",
    benchmark:
        "results/benchmarks/rules/ssim_solver_check.tsv"
    conda:
        ENV
    threads: config["threads"]
    params:
        spec=MODELS.get(SSIM_MODEL),
        n_images=config["ssim"]["cross_check"]["n_images"],
        epsilon=config["ssim"]["compare"]["epsilon"],
        ball=SSIM_BALL,
        crop=config["ssim"]["cross_check"]["crop"],
        solvers=config["ssim"]["cross_check"]["solvers"],
        tol=config["ssim"]["tol"],
        device=config["device"],
        seed=job_seed("ssim_solver_check"),
    script:
        "../scripts/ssim_solver_check.py"


rule p2_ssim_sweep:
    input:
        table=rules.ssim_tables.output.csv,
        matched=rules.ssim_tables.output.matched,
    output:
        png=report(
            "results/figures/p2_ssim_sweep.png",
            caption="../report/p2_ssim_sweep.rst",
            category="P2",
            labels={"figure": "ε sweep"},
        ),
        pdf="results/figures/p2_ssim_sweep.pdf",
    log:
        "results/logs/p2_ssim_sweep.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/p2_ssim_sweep.py"


rule p2_cam_grid:
    input:
        data=lambda w: dataset_folder(SSIM_MODEL),
        cam=lambda w: chunk_files("ssim", rules.cam.output.npz, SSIM_MODEL),
    output:
        png=report(
            "results/figures/p2_cam_grid.png",
            caption="../report/p2_cam_grid.rst",
            category="P2",
            labels={"figure": "maps grid"},
        ),
        pdf="results/figures/p2_cam_grid.pdf",
    log:
        "results/logs/p2_cam_grid.log",
    localrule: True
    conda:
        ENV
    params:
        bounds=lambda w: chunk_bounds("ssim", SSIM_MODEL),
        examples=config["ssim"]["compare"]["examples"],
        topk_percent=config["ssim"]["compare"]["topk_percent"],
        ball=SSIM_BALL,
    script:
        "../scripts/p2_cam_grid.py"


rule p2_cam_distributions:
    input:
        rules.compare_maps.output.csv,
    output:
        png=report(
            "results/figures/p2_cam_distributions.png",
            caption="../report/p2_cam_distributions.rst",
            category="P2",
            labels={"figure": "metric distributions"},
        ),
        pdf="results/figures/p2_cam_distributions.pdf",
    log:
        "results/logs/p2_cam_distributions.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/p2_cam_distributions.py"
