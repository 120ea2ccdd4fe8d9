"""Figure: top-1 against masked pixel share (rule p3_masked_pgd)."""

import pandas as pd

from pixelrobust.figures import p3_masked_pgd
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    title = {"linf": "L∞ PGD", "l2": "L2 PGD"}[snakemake.wildcards.norm]
    p3_masked_pgd.plot(pd.read_csv(snakemake.input[0]), snakemake.output.png, snakemake.output.pdf, title)
