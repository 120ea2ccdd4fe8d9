"""Build resources/data/<dataset> from the mirror or the downloads (rule prepare_dataset)."""

from pixelrobust.data import prepare_dataset
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake):
    # inputs: the downloads under their file names; the mirror's and a folder source's files (inputs so that
    # edits rerun it) are read through mirror and settings
    prepare_dataset(dataset=snakemake.wildcards.dataset, settings=p.settings, out=dict(snakemake.output.items()),
                    mirror=p.mirror, inputs=dict(snakemake.input.items()))
