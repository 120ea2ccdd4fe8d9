"""Accuracy and lattice IoU of the PRM-wrapped model over λ (rule prm_sweep)."""

from pixelrobust.prm import prm_sweep
from pixelrobust.runtime import job

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    prm_sweep(data=i.data, weights=i.weights, prm=i.prm, out=dict(snakemake.output.items()), spec=p.spec,
              lambdas=p.lambdas, n_images=p.n_images, topk_percent=p.topk_percent, batch_size=p.batch_size,
              control_seed=p.control_seed, device=device)
