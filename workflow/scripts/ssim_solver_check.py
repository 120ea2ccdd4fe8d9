"""The fast SSIM-ball solver against CVXPY on the first images' first step (rule ssim_solver_check)."""

from pixelrobust.runtime import job
from pixelrobust.ssim_study import run_solver_check

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_solver_check(p.spec, snakemake.input.weights, snakemake.input.data, p.n_images, snakemake.output.csv,
                     epsilon=p.epsilon, ball=p.ball, crop=p.crop, solvers=p.solvers, tol=p.tol, device=device,
                     md=snakemake.output.md)
