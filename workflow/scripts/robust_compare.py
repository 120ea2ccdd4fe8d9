"""Robust vs standard (ours): the pairs' comparison table and mean maps (rule robust_compare)."""

from pixelrobust.robust_compare import run_compare
from pixelrobust.runtime import job

p = snakemake.params
inp = snakemake.input
inputs = {
    "onepixel": {m: list(inp[f"p1_{m}"]) for m in p.models if f"p1_{m}" in inp.keys()},
    "gradients": {m: inp[f"gradients_{m}"] for m in p.models if f"gradients_{m}" in inp.keys()},
    "synthesis": {m: inp[f"synthesis_{m}"] for m in p.models if f"synthesis_{m}" in inp.keys()},
}
if "masked_pgd_images" in inp.keys():
    inputs["masked_pgd_images"] = inp.masked_pgd_images
with job(snakemake.log[0], smk=snakemake):
    run_compare(p.pairs, p.datasets, inputs, {"csv": snakemake.output.csv, "md": snakemake.output.md,
                                              "maps": list(snakemake.output.maps)},
                stages=p.stages, k_percent=p.topk_percent, border=p.border, max_k=p.max_k, n_boot=p.n_boot, seed=p.seed,
                specs=p.specs, device="cpu")
