"""Figure: image | adversarial | |δ| | SSIM change map | CAM | overlay per attack (rule p2_cam_grid)."""

from pixelrobust.figures import p2_cam_grid
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake.log[0]):
    p2_cam_grid.plot(snakemake.input.cam, snakemake.input.data, p.bounds, p.examples, p.topk_percent, snakemake.output.png,
                     snakemake.output.pdf)
