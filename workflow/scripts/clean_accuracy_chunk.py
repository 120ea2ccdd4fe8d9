"""Predictions of one model on one chunk of its test images (rule clean_accuracy_chunk)."""

from pixelrobust.evaluate import clean_accuracy_chunk
from pixelrobust.runtime import job

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    clean_accuracy_chunk(data=i.data, weights=i.weights, out={"csv": snakemake.output[0]}, spec=p.spec,
                         bounds=p.bounds, batch_size=p.batch_size, device=device)
