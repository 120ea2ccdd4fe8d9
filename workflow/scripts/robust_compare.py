"""Robust vs standard (ours): the pairs' comparison table and mean maps (rule robust_compare)."""

from pixelrobust.robust_compare import robust_compare
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake):
    robust_compare(inputs={k: v for k, v in snakemake.input.items() if k != "prov"},
                   out={"csv": snakemake.output.csv, "md": snakemake.output.md, "maps": list(snakemake.output.maps)},
                   pairs=p.pairs, models=p.models, datasets=p.datasets, specs=p.specs, stages=p.stages,
                   topk_percent=p.topk_percent, border=p.border, max_k=p.max_k, n_boot=p.n_boot, seed=p.seed,
                   untrained_copies=p.untrained_copies)
