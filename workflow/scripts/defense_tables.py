"""Merge the defence chunks into results/tables/defense.csv (rule defense_tables)."""

from pixelrobust.defense_eval import write_defense_tables
from pixelrobust.runtime import job

with job(snakemake.log[0], smk=snakemake):
    chunks = {m: list(snakemake.input[m]) for m in snakemake.params.datasets}
    write_defense_tables(chunks, snakemake.params.datasets, dict(snakemake.output.items()), snakemake.params.n_boot,
                         snakemake.params.seed)
