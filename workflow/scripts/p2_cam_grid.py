"""Figure: image | ‖δ‖² | 1 − SSIM on the constraint's windows | 1 − SSIM sliding | CAM | overlay per attack
(rule p2_cam_grid; the first ``ssim.compare.examples`` images of all CAM chunks)."""

from pixelrobust.figures import p2_cam_grid
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake.log[0]):
    p2_cam_grid.plot(list(snakemake.input.cam), snakemake.input.data, list(p.bounds), p.examples, p.topk_percent,
                     snakemake.output.png, snakemake.output.pdf, ball=p.ball)
