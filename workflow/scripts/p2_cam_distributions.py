"""Figure: per-attack distributions of the map-agreement metrics (rule p2_cam_distributions)."""

import pandas as pd

from pixelrobust.figures import p2_cam_distributions
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    p2_cam_distributions.plot(pd.read_csv(snakemake.input[0], dtype={"image_id": str}), snakemake.output.png,
                              snakemake.output.pdf)
