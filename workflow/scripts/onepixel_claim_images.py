"""P1's claims, per image, from the saved maps, for every SLIC segment count (rule onepixel_claim_images)."""

from pixelrobust.runtime import job
from pixelrobust.vulnerability import onepixel_claim_images

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    onepixel_claim_images(data=i.data, weights=i.weights, segments=i.segments, maps=i.maps,
                          out=dict(snakemake.output.items()), spec=p.spec, bounds=p.bounds, slic=p.slic,
                          sensitivity=p.sensitivity, occlusion=p.occlusion, semantic=p.semantic,
                          restricted=p.restricted, batch_size=p.batch_size, device=device)
