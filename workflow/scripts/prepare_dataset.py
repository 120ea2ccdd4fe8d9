"""Build resources/data/<dataset> from the mirror or the downloads (rule prepare_dataset)."""

from pathlib import Path

from pixelrobust.data import prepare_dataset
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake):
    # the inputs that are not downloads: the mirror's and a folder source's files (inputs so that edits rerun it)
    prepare_dataset(snakemake.wildcards.dataset, p.settings, snakemake.output[0],
                    mirror=Path(p.mirror) if p.mirror else None,
                    downloaded={k: v for k, v in snakemake.input.items()
                                if k not in ("mirror", "mirror_images", "labels", "folder", "class_index")})
