"""Merge the chunk tables into the P1 tables (rule onepixel_tables)."""

from pixelrobust.runtime import job
from pixelrobust.vulnerability import write_tables

with job(snakemake.log[0], smk=snakemake):
    i = snakemake.input
    write_tables(list(i.images), list(i.regions), list(i.de_runs), snakemake.params.notes,
                 dict(snakemake.output.items()), snakemake.params.n_boot, snakemake.params.seed)
