"""Dataset and architecture input-gradient maps of one model (rule gradient_map)."""

from pixelrobust.gradients import run_gradient_map
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_gradient_map(p.spec, snakemake.input.weights, snakemake.input.data, snakemake.output[0], split=p.split,
                     n_images=p.n_images, constant=p.constant, batch_size=p.batch_size, device=device,
                     start=p.start)
