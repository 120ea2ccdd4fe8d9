"""Figure: success rate and mean SSIM over the ε sweep beside the PGD budgets (rule p2_ssim_sweep)."""

from pixelrobust.figures import p2_ssim_sweep
from pixelrobust.runtime import job

with job(snakemake):
    p2_ssim_sweep.plot(table=snakemake.input.table, matched=snakemake.input.matched,
                       out=dict(snakemake.output.items()))
