"""Download one file and verify its checksum (rule download)."""

from pixelrobust.io import download
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    src = snakemake.params.source
    download(src["url"], snakemake.output[0], src["checksum"], src["algorithm"])
