"""results/SUMMARY.md and results/tables/claims.csv: each claim's verdict from the tables (rule summary)."""

from pixelrobust.runtime import job
from pixelrobust.summary import summary

p = snakemake.params
with job(snakemake):
    summary(inputs={k: v for k, v in snakemake.input.items() if k != "prov"}, out=dict(snakemake.output.items()),
            config=p.config, config_sha256=p.config_sha256, configfiles=p.configfiles, ssim_dataset=p.ssim_dataset,
            n_boot=p.n_boot, seed=p.seed)
