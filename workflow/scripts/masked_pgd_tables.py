"""Merge masked-PGD chunks into one table per norm (rule masked_pgd_tables)."""

from pixelrobust.masked_pgd import masked_pgd_tables
from pixelrobust.runtime import job

with job(snakemake.log[0], smk=snakemake):
    chunks = {m: list(snakemake.input[m]) for m in snakemake.params.datasets}
    masked_pgd_tables(chunks, snakemake.params.datasets, dict(snakemake.output.items()))
