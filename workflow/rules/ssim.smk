# P2: SSIM-ball attacks, Grad-CAM++ and the comparison of their maps (docs/p2.md).


rule attack_ssim:
    input:
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        weights="resources/weights/{model}.pt",
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
        spec=lambda w: MODELS[w.model],
        bounds=lambda w: ssim_bounds()[int(w.chunk)],
        epsilons=config["ssim"]["epsilons"],
        ball=ssim_ball_settings(),
        pgd=config["ssim"]["pgd"],
        compare_epsilon=config["ssim"]["compare"]["epsilon"],
        batch_size=config["ssim"]["batch_size"],
        device=config["device"],
        seed=lambda w: job_seed("attack_ssim", w.model, w.chunk),
    script:
        "../scripts/attack_ssim.py"


rule ssim_tables:
    input:
        csv=ssim_chunks("results/p2/{model}/attack/chunk-{chunk}.csv"),
        prov=ssim_chunks("results/p2/{model}/attack/chunk-{chunk}.provenance.json"),
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
        data=lambda w: f"resources/data/{dataset_of(w.model)}",
        weights="resources/weights/{model}.pt",
        attack_csv="results/p2/{model}/attack/chunk-{chunk}.csv",
        attack_npz="results/p2/{model}/attack/chunk-{chunk}.npz",
        matched="results/tables/ssim_matched.csv",
        prov="results/p2/{model}/attack/chunk-{chunk}.provenance.json",
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
        spec=lambda w: MODELS[w.model],
        bounds=lambda w: ssim_bounds()[int(w.chunk)],
        pgd=config["ssim"]["pgd"],
        batch_size=config["ssim"]["batch_size"],
        device=config["device"],
        # the seed attack_ssim used, so PGD at the matched budget repeats its adversarials
        seed=lambda w: job_seed("attack_ssim", w.model, w.chunk),
    script:
        "../scripts/cam.py"


rule compare_maps:
    input:
        data=lambda w: f"resources/data/{dataset_of(config['ssim']['model'])}",
        cams=ssim_chunks("results/p2/{model}/cam/chunk-{chunk}.npz"),
        prov=ssim_chunks("results/p2/{model}/cam/chunk-{chunk}.provenance.json"),
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
        bounds=ssim_bounds(),
        topk_percent=config["ssim"]["compare"]["topk_percent"],
        bootstrap=config["ssim"]["compare"]["bootstrap"],
        ball=ssim_ball_settings(),
        primary=config["ssim"]["compare"]["primary"],
        grid_min_ratio=config["ssim"]["compare"]["grid_min_ratio"],
        success_tolerance=config["ssim"]["compare"]["success_tolerance"],
        epsilon=config["ssim"]["compare"]["epsilon"],
        seed=job_seed("compare_maps"),
    script:
        "../scripts/compare_maps.py"


rule ssim_solver_check:
    input:
        data=lambda w: f"resources/data/{dataset_of(config['ssim']['model'])}",
        weights=lambda w: f"resources/weights/{config['ssim']['model']}.pt",
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
        spec=MODELS.get(config["ssim"]["model"]),
        n_images=config["ssim"]["cross_check"]["n_images"],
        epsilon=config["ssim"]["compare"]["epsilon"],
        ball=ssim_ball_settings(),
        crop=config["ssim"]["cross_check"]["crop"],
        solvers=config["ssim"]["cross_check"]["solvers"],
        tol=config["ssim"]["tol"],
        device=config["device"],
        seed=job_seed("ssim_solver_check"),
    script:
        "../scripts/ssim_solver_check.py"


rule p2_ssim_sweep:
    input:
        table="results/tables/ssim_attack.csv",
        matched="results/tables/ssim_matched.csv",
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
        data=lambda w: f"resources/data/{dataset_of(config['ssim']['model'])}",
        cam=lambda w: ssim_chunks("results/p2/{model}/cam/chunk-{chunk}.npz"),
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
        bounds=lambda w: ssim_bounds(),
        examples=config["ssim"]["compare"]["examples"],
        topk_percent=config["ssim"]["compare"]["topk_percent"],
        ball=ssim_ball_settings(),
    script:
        "../scripts/p2_cam_grid.py"


rule p2_cam_distributions:
    input:
        "results/tables/ssim_cam_comparison.csv",
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


rule p2:
    input:
        p2_targets(),
