"""Figure: region vulnerability against semantic scores (rule p1_region_semantics)."""

import pandas as pd

from pixelrobust.figures import p1_region_semantics
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    p1_region_semantics.plot(pd.read_csv(snakemake.input.regions), pd.read_csv(snakemake.input.summary),
                             snakemake.output.png, snakemake.output.pdf)
