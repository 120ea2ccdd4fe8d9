"""SSIM-ball attacks over the ε sweep and the PGD baselines on one chunk (rule attack_ssim)."""

from pixelrobust.runtime import job
from pixelrobust.ssim_study import run_attack_ssim

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_attack_ssim(p.spec, snakemake.input.weights, snakemake.input.data, *p.bounds, snakemake.output.csv,
                    snakemake.output.npz, epsilons=p.epsilons, ball=p.ball, pgd=p.pgd, compare_epsilon=p.compare_epsilon,
                    seed=p.seed, batch_size=p.batch_size, device=device)
