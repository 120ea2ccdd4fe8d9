"""Merge the attack_ssim chunks: ssim_attack.csv/.md and the matched PGD budgets (rule ssim_tables)."""

from pixelrobust.runtime import job
from pixelrobust.ssim_study import ssim_tables

with job(snakemake):
    ssim_tables(csv=list(snakemake.input.csv), out=dict(snakemake.output.items()),
                compare_epsilon=snakemake.params.compare_epsilon)
