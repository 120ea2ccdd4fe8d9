"""P1's claims, per image, from the saved maps, for every SLIC segment count (rule onepixel_claim_images)."""

from pixelrobust.runtime import job
from pixelrobust.vulnerability import run_claim_images

p = snakemake.params
i = snakemake.input
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    run_claim_images(p.spec, i.weights, i.data, i.segments, i.maps, *p.bounds, snakemake.output.table,
                     n_segments=p.slic["n_segments"], compactness=p.slic["compactness"], sensitivity=p.sensitivity,
                     occlusion=p.occlusion, semantic=p.semantic, restricted=p.restricted, batch_size=p.batch_size,
                     device=device)
