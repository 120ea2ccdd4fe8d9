"""Merge the defence chunks into results/tables/defense.csv (rule defense_tables)."""

from pixelrobust.defense_eval import defense_tables
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake):
    defense_tables(chunks={m: list(snakemake.input[m]) for m in p.datasets}, out=dict(snakemake.output.items()),
                   datasets=p.datasets, n_boot=p.n_boot, seed=p.seed)
