"""Check a model's weights (checksum, loads into the architecture) and store them (rule get_weights)."""

from pixelrobust.models import prepare_weights
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    prepare_weights(snakemake.params.spec, snakemake.input[0], snakemake.output[0], snakemake.params.sha256)
