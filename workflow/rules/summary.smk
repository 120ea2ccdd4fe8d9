rule summary:
    input:
        unpack(summary_inputs),
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


rule html_report:
    input:
        report_inputs(),
    output:
        "results/report.html",
    log:
        "results/logs/html_report.log",
    localrule: True
    params:
        config=config,
        expected=report_expected(),
    run:
        prreport.build_report(
            workflow.main_snakefile,
            Path.cwd(),
            params.config,
            output[0],
            params.expected,
            log[0],
        )
