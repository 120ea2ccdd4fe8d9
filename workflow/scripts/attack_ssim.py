"""SSIM-ball attacks over the ε sweep and the PGD baselines on one chunk (rule attack_ssim)."""

from pixelrobust.runtime import job
from pixelrobust.ssim_study import attack_ssim

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    attack_ssim(data=i.data, weights=i.weights, out=dict(snakemake.output.items()), spec=p.spec, bounds=p.bounds,
                epsilons=p.epsilons, ball=p.ball, pgd=p.pgd, compare_epsilon=p.compare_epsilon,
                batch_size=p.batch_size, seed=p.seed, device=device)
