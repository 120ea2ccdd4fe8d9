"""Maps of the perturbations against Grad-CAM++ with the grid diagnostic: the per-image table and the bootstrap
summary (rule compare_maps)."""

from pixelrobust.map_compare import compare_maps
from pixelrobust.runtime import job

i, p = snakemake.input, snakemake.params
with job(snakemake):
    compare_maps(data=i.data, cams=list(i.cams), out=dict(snakemake.output.items()), bounds=p.bounds,
                 topk_percent=p.topk_percent, bootstrap=p.bootstrap, ball=p.ball, primary=p.primary,
                 grid_min_ratio=p.grid_min_ratio, success_tolerance=p.success_tolerance, epsilon=p.epsilon,
                 seed=p.seed)
