"""Figure: pairwise agreement matrix of the four maps (rule synthesis_matrix)."""

from pixelrobust.figures import synthesis_matrix
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    synthesis_matrix.plot(snakemake.input.table, snakemake.output.png, snakemake.output.pdf)
