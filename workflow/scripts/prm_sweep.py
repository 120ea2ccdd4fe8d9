"""Accuracy and lattice IoU of the PRM-wrapped model over λ (rule prm_sweep)."""

from pixelrobust.prm import run_prm_sweep
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_prm_sweep(p.spec, snakemake.input.weights, snakemake.input.data, snakemake.input.prm, dict(snakemake.output.items()),
                  lambdas=p.lambdas, n_images=p.n_images, topk_percent=p.topk_percent, batch_size=p.batch_size, device=device,
                  control_seed=p.control_seed)
