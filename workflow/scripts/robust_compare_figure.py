"""Figure: robust vs standard, mean maps side by side and the comparisons' effects (rule robust_compare_figure)."""

from pixelrobust.figures import robust_compare_figure
from pixelrobust.runtime import job

with job(snakemake):
    robust_compare_figure.plot(table=snakemake.input.table, maps=list(snakemake.input.maps),
                               out=dict(snakemake.output.items()))
