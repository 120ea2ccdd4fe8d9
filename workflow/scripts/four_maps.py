"""The P1, P2, Grad-CAM++ and P3 maps of the images P1 searched for one model (rule four_maps)."""

from pixelrobust.runtime import job
from pixelrobust.synthesis import four_maps

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    four_maps(data=i.data, weights=i.weights, maps=list(i.maps), out=dict(snakemake.output.items()), spec=p.spec,
              bounds=p.bounds, n_images=p.n_images, epsilon=p.epsilon, ball=p.ball, p2_map=p.p2_map,
              batch_size=p.batch_size, device=device)
