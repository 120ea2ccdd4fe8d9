"""Check a model's weights (checksum, loads into the architecture) and store them (rule get_weights)."""

from pixelrobust.models import get_weights
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake):
    get_weights(source=snakemake.input[0], out={"weights": snakemake.output[0]}, spec=p.spec, sha256=p.sha256)
