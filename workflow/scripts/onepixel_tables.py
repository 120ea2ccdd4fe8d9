"""Merge the chunk tables into the P1 tables (rule onepixel_tables)."""

from pixelrobust.runtime import job
from pixelrobust.vulnerability import write_tables

with job(snakemake.log[0], smk=snakemake):
    i, p = snakemake.input, snakemake.params
    write_tables(list(i.images), list(i.regions), list(i.de_runs), list(i.claim_images), p.notes,
                 dict(snakemake.output.items()), semantic=p.semantic, restricted=p.restricted, n_boot=p.n_boot,
                 seed=p.seed)
