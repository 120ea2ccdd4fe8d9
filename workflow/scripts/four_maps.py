"""The P1, P2, Grad-CAM++ and P3 maps of the images P1 searched for one model (rule four_maps)."""

from pixelrobust.runtime import job
from pixelrobust.synthesis import run_maps

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_maps(p.spec, snakemake.input.weights, snakemake.input.data, list(snakemake.input.maps), p.bounds,
             snakemake.output.npz, n_images=p.n_images, epsilon=p.epsilon, ball=p.ball, batch_size=p.batch_size,
             device=device, p2_map=p.p2_map)
