"""Grad-CAM++ of clean and adversarial images of one chunk (rule cam)."""

from pixelrobust.map_compare import run_cam
from pixelrobust.runtime import job

p = snakemake.params
i = snakemake.input
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_cam(p.spec, i.weights, i.data, *p.bounds, i.attack_csv, i.attack_npz, i.matched, snakemake.output.npz, pgd=p.pgd,
            seed=p.seed, batch_size=p.batch_size, device=device)
