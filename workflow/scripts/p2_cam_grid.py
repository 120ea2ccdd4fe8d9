"""Figure: image | ‖δ‖² | 1 − SSIM on the constraint's windows | 1 − SSIM sliding | CAM | overlay per attack
(rule p2_cam_grid; the first ``ssim.compare.examples`` images of all CAM chunks)."""

from pixelrobust.figures import p2_cam_grid
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake):
    p2_cam_grid.plot(data=snakemake.input.data, cam=list(snakemake.input.cam), out=dict(snakemake.output.items()),
                     bounds=list(p.bounds), examples=p.examples, topk_percent=p.topk_percent, ball=p.ball)
