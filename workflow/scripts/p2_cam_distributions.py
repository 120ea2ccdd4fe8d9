"""Figure: per-attack distributions of the map-agreement metrics (rule p2_cam_distributions)."""

from pixelrobust.figures import p2_cam_distributions
from pixelrobust.runtime import job

with job(snakemake):
    p2_cam_distributions.plot(csv=snakemake.input[0], out=dict(snakemake.output.items()))
