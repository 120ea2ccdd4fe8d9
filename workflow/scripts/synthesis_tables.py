"""Pairwise agreement of the four maps per model (rule synthesis_tables)."""

from pixelrobust.runtime import job
from pixelrobust.synthesis import run_tables

p = snakemake.params
with job(snakemake.log[0], smk=snakemake):
    run_tables({m: snakemake.input[m] for m in p.models}, p.datasets, dict(snakemake.output.items()),
               k_percent=p.topk_percent, n_boot=p.n_boot, seed=p.seed)
