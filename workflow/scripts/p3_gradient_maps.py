"""Figure: gradient maps per model (rule p3_gradient_maps)."""

from pixelrobust.figures import p3_gradient_maps
from pixelrobust.runtime import job

with job(snakemake):
    p3_gradient_maps.plot(npz=list(snakemake.input), out=dict(snakemake.output.items()),
                          models=snakemake.params.models)
