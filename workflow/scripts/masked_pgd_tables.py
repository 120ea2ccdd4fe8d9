"""Merge masked-PGD chunks into one table per norm (rule masked_pgd_tables)."""

from pixelrobust.masked_pgd import masked_pgd_tables
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake):
    masked_pgd_tables(chunks={m: list(snakemake.input[m]) for m in p.datasets}, out=dict(snakemake.output.items()),
                      datasets=p.datasets)
