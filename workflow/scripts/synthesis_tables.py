"""Pairwise agreement of the four maps per model (rule synthesis_tables)."""

from pixelrobust.runtime import job
from pixelrobust.synthesis import synthesis_tables

p = snakemake.params
with job(snakemake):
    synthesis_tables(maps={m: snakemake.input[m] for m in p.models}, out=dict(snakemake.output.items()),
                     datasets=p.datasets, topk_percent=p.topk_percent, n_boot=p.n_boot, seed=p.seed)
