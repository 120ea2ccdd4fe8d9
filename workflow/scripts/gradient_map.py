"""Dataset and architecture input-gradient maps of one model (rule gradient_map)."""

from pixelrobust.gradients import gradient_map
from pixelrobust.runtime import job

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    gradient_map(data=i.data, weights=i.weights, out={"npz": snakemake.output[0]}, spec=p.spec, split=p.split,
                 n_images=p.n_images, start=p.start, constant=p.constant, batch_size=p.batch_size, device=device)
