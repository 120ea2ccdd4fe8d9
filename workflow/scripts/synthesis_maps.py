"""Figure: example images with their four maps (rule synthesis_maps)."""

from pixelrobust.figures import synthesis_maps
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake):
    synthesis_maps.plot(maps={m: snakemake.input[m] for m in p.models}, out=dict(snakemake.output.items()),
                        examples=p.examples)
