"""Figure: success rate and mean SSIM over the ε sweep beside the PGD budgets (rule p2_ssim_sweep)."""

import pandas as pd

from pixelrobust.figures import p2_ssim_sweep
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    p2_ssim_sweep.plot(pd.read_csv(snakemake.input.table), pd.read_csv(snakemake.input.matched), snakemake.output.png,
                       snakemake.output.pdf)
