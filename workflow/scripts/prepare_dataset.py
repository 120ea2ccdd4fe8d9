"""Build resources/data/<dataset> from the mirror or the downloads (rule prepare_dataset)."""

from pathlib import Path

from pixelrobust.data import prepare_dataset
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    mirror = snakemake.params.mirror
    prepare_dataset(
        snakemake.wildcards.dataset,
        snakemake.params.settings,
        snakemake.output[0],
        mirror=Path(mirror) if mirror else None,
        downloaded={k: v for k, v in snakemake.input.items() if k not in ("mirror", "mirror_images", "labels", "folder", "class_index")},
    )
