"""Exhaustive one-pixel maps and DE runs of one chunk (rule onepixel_search)."""

from pixelrobust.runtime import job
from pixelrobust.vulnerability import onepixel_search

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    onepixel_search(data=i.data, weights=i.weights, segments=i.segments, out=dict(snakemake.output.items()),
                    spec=p.spec, bounds=p.bounds, palette=p.palette, grid_stride=p.grid_stride, de=p.de,
                    de_regions=p.de_regions, targeted=p.targeted, precision=p.precision, screening=p.screening,
                    incremental=p.incremental, batch_size=p.batch_size, seed=p.seed, device=device)
