"""Maps of the perturbations against Grad-CAM++ with the grid diagnostic: the per-image table and the bootstrap
summary (rule compare_maps)."""

from pixelrobust.map_compare import compare_maps
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake.log[0], smk=snakemake):
    compare_maps(list(snakemake.input.cams), p.bounds, snakemake.input.data, dict(snakemake.output.items()),
                 k_percent=p.topk_percent, n_boot=p.bootstrap, seed=p.seed, ball=p.ball, primary=p.primary,
                 grid_min_ratio=p.grid_min_ratio, epsilon=p.epsilon, success_tolerance=p.success_tolerance)
