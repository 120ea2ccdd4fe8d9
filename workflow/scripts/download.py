"""Download one file and verify its checksum (rule download)."""

from pixelrobust.io import download
from pixelrobust.runtime import job

with job(snakemake):
    download(out={"file": snakemake.output[0]}, source=snakemake.params.source)
