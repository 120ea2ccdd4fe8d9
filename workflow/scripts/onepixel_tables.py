"""Merge the chunk tables into the P1 tables (rule onepixel_tables)."""

from pixelrobust.runtime import job
from pixelrobust.vulnerability import onepixel_tables

i, p = snakemake.input, snakemake.params
with job(snakemake):
    onepixel_tables(images=list(i.images), regions=list(i.regions), de_runs=list(i.de_runs),
                    claim_images=list(i.claim_images), out=dict(snakemake.output.items()), notes=p.notes,
                    semantic=p.semantic, restricted=p.restricted, n_boot=p.n_boot, seed=p.seed)
