"""Figure: the semantic claim within images and the claims across segment counts (rule p1_region_semantics)."""

import pandas as pd

from pixelrobust.figures import p1_region_semantics
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    p1_region_semantics.plot(pd.read_csv(snakemake.input.claim_images), pd.read_csv(snakemake.input.claims),
                             snakemake.output.png, snakemake.output.pdf)
