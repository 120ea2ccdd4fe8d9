"""Merge per-chunk predictions into results/tables/clean_accuracy.csv (rule clean_accuracy)."""

from pixelrobust.evaluate import clean_accuracy
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake):
    clean_accuracy(chunks={m: list(snakemake.input[m]) for m in p.datasets}, out=dict(snakemake.output.items()),
                   datasets=p.datasets)
