"""Merge per-chunk predictions into results/tables/clean_accuracy.csv (rule clean_accuracy)."""

from pixelrobust.evaluate import summarise_clean_accuracy
from pixelrobust.runtime import job

with job(snakemake.log[0], smk=snakemake):
    datasets = snakemake.params.datasets
    chunks = {model: list(snakemake.input[model]) for model in datasets}
    summarise_clean_accuracy(chunks, datasets, snakemake.output.csv, snakemake.output.md)
