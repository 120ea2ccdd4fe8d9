"""Grad-CAM++ of clean and adversarial images of one chunk (rule cam)."""

from pixelrobust.map_compare import cam
from pixelrobust.runtime import job

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    cam(data=i.data, weights=i.weights, attack_csv=i.attack_csv, attack_npz=i.attack_npz, matched=i.matched,
        out=dict(snakemake.output.items()), spec=p.spec, bounds=p.bounds, pgd=p.pgd, batch_size=p.batch_size,
        seed=p.seed, device=device)
