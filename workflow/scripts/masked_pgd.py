"""PGD on top / bottom / random gradient-map masks for one chunk (rule masked_pgd)."""

from pixelrobust.masked_pgd import masked_pgd
from pixelrobust.runtime import job

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    masked_pgd(data=i.data, weights=i.weights, maps=i.maps, out={"csv": snakemake.output[0]}, spec=p.spec,
               bounds=p.bounds, masks=p.masks, k_percent=p.k_percent, attacks=p.attacks, mask_seed=p.mask_seed,
               batch_size=p.batch_size, seed=p.seed, device=device)
