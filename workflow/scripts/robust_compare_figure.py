"""Figure: robust vs standard, mean maps side by side and the comparisons' effects (rule robust_compare_figure)."""

from pathlib import Path

import pandas as pd

from pixelrobust.figures import robust_compare
from pixelrobust.io import load_npz
from pixelrobust.runtime import job

with job(snakemake.log[0]):
    maps = {Path(p).stem: load_npz(p) for p in snakemake.input.maps}
    robust_compare.plot(pd.read_csv(snakemake.input.table), maps, snakemake.output.png, snakemake.output.pdf)
