"""Train the PRM in front of a frozen classifier, resuming from its checkpoint (rule train_prm)."""

from pixelrobust.prm import run_train_prm
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_train_prm(p.spec, snakemake.input.weights, snakemake.input.data, dict(snakemake.output.items()), p.checkpoint,
                  lattice=p.lattice, depth=p.depth, start_filters=p.start_filters, residual=p.residual, first_conv=p.first_conv,
                  train_cfg=p.train, images=p.images,
                  seed=p.seed, device=device)
