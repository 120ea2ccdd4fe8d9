"""Figure: PRM training curves (rule p3_prm_training)."""

from pixelrobust.figures import p3_prm_training
from pixelrobust.runtime import job

with job(snakemake):
    p3_prm_training.plot(csv=snakemake.input[0], out=dict(snakemake.output.items()), model=snakemake.wildcards.model)
