"""Figure: the PRM λ sweep with per-λ gradient maps (rule p3_prm_lambda)."""

from pixelrobust.figures import p3_prm_lambda
from pixelrobust.runtime import job

with job(snakemake):
    p3_prm_lambda.plot(table=snakemake.input.table, maps=snakemake.input.maps, out=dict(snakemake.output.items()),
                       model=snakemake.wildcards.model)
