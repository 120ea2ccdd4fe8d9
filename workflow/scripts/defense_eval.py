"""One (model, attack, chunk) of the defence table (rule defense_eval)."""

from pixelrobust.defense_eval import defense_eval
from pixelrobust.runtime import job

i, p = snakemake.input, snakemake.params
with job(snakemake) as device:
    defense_eval(data=i.data, weights=i.weights, prms=list(i.get("prms", [])), out={"csv": snakemake.output[0]},
                 attack=snakemake.wildcards.attack, spec=p.spec, bounds=p.bounds, attack_settings=p.attack_settings,
                 defenses=p.defenses, protocols=p.protocols, eot_samples=p.eot_samples, draws=p.draws,
                 adaptive_pgd=p.adaptive_pgd, batch_size=p.batch_size, seed=p.seed, device=device)
