"""The fast SSIM-ball solver against CVXPY on the first images' first step (rule ssim_solver_check)."""

from pixelrobust.runtime import job
from pixelrobust.ssim_study import ssim_solver_check

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    ssim_solver_check(data=i.data, weights=i.weights, out=dict(snakemake.output.items()), spec=p.spec,
                      n_images=p.n_images, epsilon=p.epsilon, ball=p.ball, crop=p.crop, solvers=p.solvers,
                      tol=p.tol, device=device)
