"""Figure: PRM training curves (rule p3_prm_training)."""

import pandas as pd

from pixelrobust.figures import p3_prm_training
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    p3_prm_training.plot(pd.read_csv(snakemake.input[0]), snakemake.wildcards.model, snakemake.output.png, snakemake.output.pdf)
