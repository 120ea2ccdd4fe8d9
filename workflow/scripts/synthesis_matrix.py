"""Figure: pairwise agreement matrix of the four maps (rule synthesis_matrix)."""

from pixelrobust.figures import synthesis_matrix
from pixelrobust.runtime import job

with job(snakemake):
    synthesis_matrix.plot(table=snakemake.input.table, out=dict(snakemake.output.items()))
