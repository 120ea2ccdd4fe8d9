"""Figure: top-1 against masked pixel share (rule p3_masked_pgd)."""

from pixelrobust.figures import p3_masked_pgd
from pixelrobust.runtime import job

with job(snakemake):
    p3_masked_pgd.plot(csv=snakemake.input[0], out=dict(snakemake.output.items()), norm=snakemake.wildcards.norm)
