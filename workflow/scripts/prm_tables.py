"""Merge the per-model λ sweeps (rule prm_tables)."""

from pixelrobust.prm import prm_tables
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    prm_tables(list(snakemake.input), dict(snakemake.output.items()))
