# The targets: what each paper's target (p1, p2, p3, synthesis, robust) and the report build, listed
# from the rules' own outputs (rules.<name>.output), so that no path is spelled twice. Included last:
# every rule named here is defined by then.

_op_tables = rules.onepixel_tables.output
P1_TARGETS = (
    [
        _op_tables.success,
        _op_tables.success_md,
        _op_tables.summary,
        _op_tables.summary_md,
        _op_tables.claims,
        _op_tables.claims_md,
    ]
    + [_op_tables.regions, _op_tables.images, _op_tables.de_runs]
    + figure_files(rules.p1_region_semantics)
    + figure_files(rules.p1_vulnerability_grid, model=ONEPIXEL_MODELS)
)

# none when ssim.model is null
_ssim = rules.ssim_tables.output
_maps = rules.compare_maps.output
_check = rules.ssim_solver_check.output
P2_TARGETS = (
    [_ssim.csv, _ssim.md, _maps.summary, _maps.summary_md, _ssim.matched, _ssim.matched_md]
    + [_check.csv, _check.md, _maps.csv]
    + figure_files(rules.p2_ssim_sweep)
    + figure_files(rules.p2_cam_grid)
    + figure_files(rules.p2_cam_distributions)
    if SSIM_MODEL is not None
    else []
)

# parts 1 and 2 (the defence table: none when defense_eval.models is empty)
_pgd, _prm = rules.masked_pgd_tables.output, rules.prm_tables.output
P3_TARGETS = (
    [_pgd[name] for norm in PGD_ATTACKS for name in (norm, f"{norm}_md")]
    + [_pgd.prov]
    + figure_files(rules.p3_gradient_maps)
    + figure_files(rules.p3_masked_pgd, norm=list(PGD_ATTACKS))
    + ([_prm.csv, _prm.md] if PRM_MODELS else [])
    + [
        f
        for m in PRM_MODELS
        for f in figure_files(rules.p3_prm_training, model=m)
        + figure_files(rules.p3_prm_lambda, model=m)
    ]
    + (
        [rules.defense_tables.output.csv, rules.defense_tables.output.md]
        + figure_files(rules.p3_defense)
        if DEFENSE_EVAL["models"]
        else []
    )
)

# none when synthesis.models is empty
SYNTHESIS_TARGETS = (
    [rules.synthesis_tables.output.csv, rules.synthesis_tables.output.md]
    + figure_files(rules.synthesis_maps)
    + figure_files(rules.synthesis_matrix)
    if SYNTHESIS_MODELS
    else []
)

# none when robust_compare.pairs is empty
ROBUST_TARGETS = (
    [rules.robust_compare.output.csv, rules.robust_compare.output.md]
    + figure_files(rules.robust_compare_figure)
    if ROBUST_PAIRS
    else []
)

# every table and figure of the default target (what the HTML report shows)
_clean, _summary = rules.clean_accuracy.output, rules.summary.output
REPORT_INPUTS = (
    [_clean.csv, _clean.md, _clean.prov]
    + P1_TARGETS
    + P2_TARGETS
    + P3_TARGETS
    + SYNTHESIS_TARGETS
    + ROBUST_TARGETS
    + [_summary.md, _summary.claims, _summary.front]
)
# the files the report must embed: every PNG figure, the summary and the claims
REPORT_EXPECTED = [str(f) for f in REPORT_INPUTS if f.endswith(".png")] + [
    str(_summary.md),
    str(_summary.claims),
]


rule p1:
    input:
        P1_TARGETS,


rule p2:
    input:
        P2_TARGETS,


rule p3:
    input:
        P3_TARGETS,


rule synthesis:
    input:
        SYNTHESIS_TARGETS,


rule robust:
    input:
        ROBUST_TARGETS,


rule html_report:
    input:
        REPORT_INPUTS,
    output:
        "results/report.html",
    log:
        "results/logs/html_report.log",
    localrule: True
    params:
        config=config,
        expected=REPORT_EXPECTED,
    run:
        prreport.build_report(
            workflow.main_snakefile,
            Path.cwd(),
            params.config,
            output[0],
            params.expected,
            log[0],
        )
