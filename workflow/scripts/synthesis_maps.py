"""Figure: example images with their four maps (rule synthesis_maps)."""

from pixelrobust.figures import synthesis_maps
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake.log[0]):
    synthesis_maps.plot({m: snakemake.input[m] for m in p.models}, p.examples, snakemake.output.png, snakemake.output.pdf)
