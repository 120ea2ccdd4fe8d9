"""Figure: gradient maps per model (rule p3_gradient_maps)."""

from pixelrobust.figures import p3_gradient_maps
from pixelrobust.io import load_npz
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    maps = {m: load_npz(f) for m, f in zip(snakemake.params.models, snakemake.input)}
    p3_gradient_maps.plot(maps, snakemake.output.png, snakemake.output.pdf)
