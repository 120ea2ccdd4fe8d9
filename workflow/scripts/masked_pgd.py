"""PGD on top / bottom / random gradient-map masks for one chunk (rule masked_pgd)."""

from pixelrobust.masked_pgd import run_masked_pgd
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_masked_pgd(p.spec, snakemake.input.weights, snakemake.input.data, snakemake.input.maps, *p.bounds,
                   snakemake.output[0], masks=p.masks, k_percent=p.k_percent, attacks=p.attacks, mask_seed=p.mask_seed,
                   seed=p.seed, batch_size=p.batch_size, device=device)
