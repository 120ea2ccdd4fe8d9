"""Figure: the semantic claim within images and the claims across segment counts (rule p1_region_semantics)."""

from pixelrobust.figures import p1_region_semantics
from pixelrobust.runtime import job

with job(snakemake):
    p1_region_semantics.plot(claim_images=snakemake.input.claim_images, claims=snakemake.input.claims,
                             out=dict(snakemake.output.items()))
