"""Predictions of one model on one chunk of its test images (rule clean_accuracy_chunk)."""

from pixelrobust.evaluate import clean_accuracy_chunk
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    start, stop = p.bounds
    clean_accuracy_chunk(p.spec, snakemake.input.weights, snakemake.input.data, start, stop,
                         snakemake.output[0], p.batch_size, device)
