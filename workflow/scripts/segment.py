"""SLIC regions, Grad-CAM++ and semantic scores of one chunk (rule segment)."""

from pixelrobust.runtime import job
from pixelrobust.vulnerability import segment

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    segment(data=i.data, weights=i.weights, out={"npz": snakemake.output[0]}, spec=p.spec, bounds=p.bounds,
            slic=p.slic, occlusion=p.occlusion, batch_size=p.batch_size, device=device)
