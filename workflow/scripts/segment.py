"""SLIC regions, Grad-CAM++ and semantic scores of one chunk (rule segment)."""

from pixelrobust.runtime import job
from pixelrobust.vulnerability import run_segment

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_segment(p.spec, snakemake.input.weights, snakemake.input.data, *p.bounds, snakemake.output[0],
                n_segments=p.slic["n_segments"], compactness=p.slic["compactness"], occlusion=p.occlusion,
                batch_size=p.batch_size, device=device)
