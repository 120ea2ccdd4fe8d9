"""Figure: the defence table as heatmaps (rule p3_defense)."""

import pandas as pd

from pixelrobust.figures import p3_defense
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    p3_defense.plot(pd.read_csv(snakemake.input[0]), snakemake.output.png, snakemake.output.pdf)
