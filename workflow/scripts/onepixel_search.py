"""Exhaustive one-pixel maps and DE runs of one chunk (rule onepixel_search)."""

from pixelrobust.runtime import job
from pixelrobust.vulnerability import run_search

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_search(p.spec, snakemake.input.weights, snakemake.input.data, snakemake.input.segments, *p.bounds,
               dict(snakemake.output.items()), palette=p.palette, grid_stride=p.grid_stride, de=p.de,
               de_regions=p.de_regions, seed=p.seed, batch_size=p.batch_size, device=device,
               targeted=p.targeted, precision=p.precision, screening=p.screening,
               incremental=p.incremental)
