"""Merge the per-model λ sweeps (rule prm_tables)."""

from pixelrobust.prm import prm_tables
from pixelrobust.runtime import job

with job(snakemake.log[0], smk=snakemake):
    prm_tables(list(snakemake.input.tables), list(snakemake.input.images), dict(snakemake.output.items()))
