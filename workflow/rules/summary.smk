# The tables the claims are read from, for the stages this config runs (input name: the rule and
# its output's name), and each table rule's provenance record.
_tables = [(rules.clean_accuracy, {"clean_accuracy": "csv"})]
if config["onepixel"]["models"]:
    _claims = {"onepixel_summary": "summary", "onepixel_claims": "claims"}
    _tables.append((rules.onepixel_tables, _claims))
if config["ssim"]["model"] is not None:
    _tables.append((rules.compare_maps, {"ssim_cam_summary": "summary"}))
if config["masked_pgd"]["models"]:
    _norms = {"masked_pgd": "linf", "masked_pgd_l2": "l2"}
    _by_norm = {table: norm for table, norm in _norms.items() if norm in PGD_ATTACKS}
    _tables.append((rules.masked_pgd_tables, {**_by_norm, "masked_pgd_images": "images"}))
if config["prm"]["models"]:
    _sweep = {"prm_lambda_sweep": "csv", "prm_lambda_sweep_detail": "detail"}
    _tables.append((rules.prm_tables, {**_sweep, "prm_lambda_sweep_images": "images"}))
if config["defense_eval"]["models"]:
    _tables.append((rules.defense_tables, {"defense": "csv"}))
if config["synthesis"]["models"]:
    _tables.append((rules.synthesis_tables, {"synthesis": "csv"}))
if config["robust_compare"]["pairs"]:
    _tables.append((rules.robust_compare, {"robust_compare": "csv"}))
SUMMARY_INPUTS = {
    **{name: rule.output[out] for rule, names in _tables for name, out in names.items()},
    "prov": sorted(rule.output.prov for rule, _ in _tables),
}


rule summary:
    input:
        **SUMMARY_INPUTS,
    output:
        md=report(
            "results/SUMMARY.md",
            caption="../report/summary.rst",
            category="Synthesis",
            labels={"table": "claims (SUMMARY.md)"},
        ),
        claims=report(
            "results/tables/claims.csv",
            caption="../report/claims.rst",
            category="Synthesis",
            labels={"table": "claims"},
        ),
        prov=report(
            "results/tables/claims.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"table": "claims (SUMMARY.md)"},
        ),
        front="results/report/front_page.rst",
    log:
        "results/logs/summary.log",
    localrule: True
    conda:
        ENV
    params:
        config=config,
        config_sha256=CONFIG_SHA256,
        configfiles=[str(f) for f in workflow.configfiles],
        ssim_dataset=(dataset_of(config["ssim"]["model"]) if config["ssim"]["model"] else None),
        n_boot=config["onepixel"]["bootstrap"],
        seed=job_seed("summary"),
    script:
        "../scripts/summary.py"
