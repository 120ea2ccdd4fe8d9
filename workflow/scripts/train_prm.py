"""Train the PRM in front of a frozen classifier, resuming from its checkpoint (rule train_prm)."""

from pixelrobust.prm import train_prm
from pixelrobust.runtime import job

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    train_prm(data=i.data, weights=i.weights, out=dict(snakemake.output.items()), spec=p.spec, checkpoint=p.checkpoint,
              lattice=p.lattice, depth=p.depth, start_filters=p.start_filters, residual=p.residual,
              first_conv=p.first_conv, train_cfg=p.train, images=p.images, seed=p.seed, device=device)
