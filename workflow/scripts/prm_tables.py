"""Merge the per-model λ sweeps (rule prm_tables)."""

from pixelrobust.prm import prm_tables
from pixelrobust.runtime import job

with job(snakemake):
    prm_tables(tables=list(snakemake.input.tables), images=list(snakemake.input.images),
               out=dict(snakemake.output.items()))
