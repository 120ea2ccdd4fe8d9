"""Merge the attack_ssim chunks: ssim_attack.csv/.md and the matched PGD budgets (rule ssim_tables)."""

from pixelrobust.runtime import job
from pixelrobust.ssim_study import ssim_tables

with job(snakemake.log[0], smk=snakemake):
    ssim_tables(list(snakemake.input.csv), dict(snakemake.output.items()), snakemake.params.compare_epsilon)
