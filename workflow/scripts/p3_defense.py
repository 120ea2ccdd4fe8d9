"""Figure: the defence table as heatmaps (rule p3_defense)."""

from pixelrobust.figures import p3_defense
from pixelrobust.runtime import job

with job(snakemake):
    p3_defense.plot(csv=snakemake.input[0], out=dict(snakemake.output.items()))
