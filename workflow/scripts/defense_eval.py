"""One (model, attack, chunk) of the defence table (rule defense_eval)."""

from pixelrobust.defense_eval import run_defense_eval
from pixelrobust.runtime import job

p = snakemake.params
with job(snakemake.log[0], p.seed, snakemake.threads, p.device, smk=snakemake) as device:
    start, stop = p.bounds
    run_defense_eval(p.spec, snakemake.input.weights, snakemake.input.data, list(snakemake.input.get("prms", [])), start, stop,
                     snakemake.output[0], attack=snakemake.wildcards.attack, attack_settings=p.attack_settings,
                     defenses=p.defenses, protocols=p.protocols, eot_samples=p.eot_samples, seed=p.seed,
                     batch_size=p.batch_size, device=device, draws=p.draws, adaptive_pgd_settings=p.adaptive_pgd)
