"""Figure: the PRM λ sweep with per-λ gradient maps (rule p3_prm_lambda)."""

import pandas as pd

from pixelrobust.figures import p3_prm_lambda
from pixelrobust.io import load_npz
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    sweep = pd.read_csv(snakemake.input.table)
    p3_prm_lambda.plot(sweep, load_npz(snakemake.input.maps)["maps"], snakemake.wildcards.model,
                       png=snakemake.output.png, pdf=snakemake.output.pdf)
