"""P3's defence table: top-1 of each defence under each attack, gray-box and adaptive.

One job (rule ``defense_eval``) takes one model, one attack and one chunk of test images:

* attack ``clean``: every defence on the clean images;
* protocol ``graybox`` (the authors'): the attack is crafted on the deterministic model — the
  undefended classifier for ``none`` and the three baselines, the deterministic PRM model
  (λ = ``graybox_lambda``, no shift) for the stochastic PRM — and the images are classified by the
  defended model;
* protocol ``adaptive`` (ours, Athalye et al. 2018): the attack is crafted on the defence itself,
  through :class:`pixelrobust.defenses.EOT` over ``eot_samples`` draws (pixel deflection passes the
  gradient through, BPDA; the region-based vote is replaced by its mean-softmax surrogate). For
  ``none`` the adaptive attack is the white-box one, the same images as gray-box.

Each randomised defence is reseeded per (defence, protocol, chunk), so a rerun draws the same
noise. ``seconds`` is the wall time of the cell: crafting the adversarial images it uses (shared
gray-box images count in every cell that uses them) plus classifying them with the defence.

The table (rule ``defense_tables``) sums chunks and adds the defence rate of the authors' code,
``1 − (clean − defended) / (clean − attacked)`` with ``clean`` the undefended clean top-1 and
``attacked`` the undefended top-1 under the same attack (1: the defence recovers everything the
attack took; 0: nothing; empty when the attack took nothing).
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import torch
from torch import nn

from .attacks import build_attack
from .defenses import build_defense
from .evaluate import predict
from .runtime import derive_seed, model_device

log = logging.getLogger("pixelrobust")

ATTACKS = ["onepixel", "jsma", "deepfool", "cw", "pgd"]
DEFENSES = ["none", "stochastic_prm", "region_based", "randomization", "pixel_deflection"]
PROTOCOLS = ["graybox", "adaptive"]
CHUNK_COLUMNS = ["defense", "attack", "protocol", "n_images", "n_correct", "seconds"]
TABLE_COLUMNS = ["dataset", "model", "defense", "attack", "protocol", "n_images", "top1", "defense_rate", "seconds"]
TIMING_COLUMNS = ["seconds"]


def craft(attack: str, settings: dict, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seed: int,
          batch_size: int) -> tuple[torch.Tensor, float]:
    """Adversarial images of ``attack`` against ``model`` in batches, and the seconds it took (each
    batch's copy to the CPU waits for the device, so the time is complete)."""
    device = model_device(model)
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(images), batch_size):
        atk = build_attack(attack, model, settings, seed=derive_seed(seed, i))
        out.append(atk(images[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)).detach().cpu())
    return torch.cat(out), time.perf_counter() - t0


def defense_chunk(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, attack: str, attack_settings: dict,
                  defenses: dict[str, dict], protocols: list[str], eot_samples: int, seed: int, batch_size: int,
                  prms: list[nn.Module] | None = None) -> pd.DataFrame:
    """Correct predictions of ``none`` and every defence in ``defenses`` under ``attack`` (or ``clean``)."""
    names = ["none", *[d for d in DEFENSES if d in defenses]]
    unknown = set(defenses) - set(DEFENSES)
    if unknown:
        raise ValueError(f"unknown defences {sorted(unknown)}; known: {', '.join(DEFENSES[1:])}")
    if attack != "clean" and attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; known: clean, {', '.join(ATTACKS)}")
    bad = set(protocols) - set(PROTOCOLS)
    if bad or not protocols:
        raise ValueError(f"defense_eval.protocols must be a non-empty subset of {PROTOCOLS}, got {protocols}")
    device = model_device(classifier)
    labels = labels.cpu()

    def make(name: str, protocol: str, **kw) -> nn.Module:
        return build_defense(name, classifier, defenses.get(name), prms=prms, seed=derive_seed(seed, name, protocol), **kw)

    def evaluate(name: str, protocol: str, adv: torch.Tensor) -> tuple[int, float]:
        t0 = time.perf_counter()
        pred = predict(make(name, protocol), adv, batch_size, device).argmax(1)
        return int((pred == labels).sum()), time.perf_counter() - t0

    rows = []

    def add(name, protocol, correct, seconds):
        rows.append({"defense": name, "attack": attack, "protocol": protocol, "n_images": len(images),
                     "n_correct": correct, "seconds": round(seconds, 3)})
        log.info("%s / %s / %s: %d/%d correct (%.1f s)", attack, name, protocol, correct, len(images), seconds)

    if attack == "clean":
        for name in names:
            correct, secs = evaluate(name, "clean", images)
            for protocol in protocols:
                add(name, protocol, correct, secs)
        return pd.DataFrame(rows, columns=CHUNK_COLUMNS)

    crafted: dict[str, tuple[torch.Tensor, float]] = {}
    none_result = None
    for name in names if "graybox" in protocols else ["none"]:
        source = "prm" if name == "stochastic_prm" else "classifier"
        if source not in crafted:
            crafted[source] = craft(attack, attack_settings, make(name, "graybox", deterministic=True), images, labels,
                                    derive_seed(seed, "graybox", source), batch_size)
        adv, t_craft = crafted[source]
        correct, t_eval = evaluate(name, "graybox", adv)
        if name == "none":
            none_result = (correct, t_craft + t_eval)
        if "graybox" in protocols:
            add(name, "graybox", correct, t_craft + t_eval)
    if "adaptive" in protocols:
        for name in names:
            if name == "none":
                add(name, "adaptive", *none_result)
                continue
            adv, t_craft = craft(attack, attack_settings, make(name, "adaptive", eot_samples=eot_samples), images, labels,
                                 derive_seed(seed, "adaptive", name), batch_size)
            correct, t_eval = evaluate(name, "adaptive", adv)
            add(name, "adaptive", correct, t_craft + t_eval)
    return pd.DataFrame(rows, columns=CHUNK_COLUMNS)


def run_defense_eval(spec: dict, weights, data_dir, prm_paths: list, start: int, stop: int, out, *, attack: str,
                     attack_settings: dict, defenses: dict, protocols: list[str], eot_samples: int, seed: int,
                     batch_size: int, device) -> None:
    """Rule ``defense_eval``: one (model, attack, chunk) of the defence table.

    ``prm_paths``: the trained PRMs the stochastic-PRM defence draws from (its pool, in config
    order; the first is the deterministic gray-box model's).
    """
    from .data import load_split
    from .io import write_table
    from .models import build_model
    from .prm import freeze, load_prm

    split = load_split(data_dir, "test", start, stop)
    classifier = freeze(build_model(spec, weights, device))
    prms = None
    if "stochastic_prm" in defenses:  # an empty pool is refused by build_defense
        prms = [freeze(load_prm(path, device)[0]) for path in prm_paths]
        log.info("stochastic PRM pool: %d PRMs (%s)", len(prms), ", ".join(map(str, prm_paths)))
    table = defense_chunk(classifier, split.images, split.labels, attack=attack, attack_settings=attack_settings,
                          defenses=defenses, protocols=protocols, eot_samples=eot_samples, seed=seed,
                          batch_size=batch_size, prms=prms)
    write_table(table, out, float_format="%.6g")


def defense_rate(clean: float, attacked: float, defended: float) -> float:
    """``1 − (clean − defended)/(clean − attacked)``; NaN when the attack did not lower accuracy."""
    if clean - attacked <= 0:
        return float("nan")
    return 1 - (clean - defended) / (clean - attacked)


def defense_table(chunks: dict[str, list[str]], datasets: dict[str, str]) -> pd.DataFrame:
    """Sum chunks per (model, defence, attack, protocol); add top-1 and the defence rate."""
    frames = []
    for model, paths in chunks.items():
        df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
        df = df.groupby(["defense", "attack", "protocol"], sort=False, as_index=False)[["n_images", "n_correct", "seconds"]].sum()
        df.insert(0, "model", model)
        df.insert(0, "dataset", datasets[model])
        frames.append(df)
    t = pd.concat(frames, ignore_index=True)
    t["top1"] = t.n_correct / t.n_images
    top1 = t.set_index(["model", "defense", "attack", "protocol"]).top1
    rates = []
    for r in t.itertuples():
        if r.attack == "clean":
            rates.append(float("nan"))
            continue
        clean = top1[(r.model, "none", "clean", r.protocol)]
        attacked = top1[(r.model, "none", r.attack, r.protocol)]
        rates.append(defense_rate(clean, attacked, r.top1))
    t["defense_rate"] = rates
    order = {"defense": DEFENSES, "attack": ["clean", *ATTACKS], "protocol": PROTOCOLS}
    for col, cats in order.items():
        t[col] = pd.Categorical(t[col], [c for c in cats if c in set(t[col])], ordered=True)
    t = t.sort_values(["protocol", "dataset", "model", "defense", "attack"], kind="stable")
    for col in order:
        t[col] = t[col].astype(str)
    return t[TABLE_COLUMNS].reset_index(drop=True)


def pivot(table: pd.DataFrame, value: str = "top1") -> dict[tuple[str, str, str], pd.DataFrame]:
    """Per (protocol, dataset, model): defences × (clean + attacks) of ``value``, in the table's order."""
    out = {}
    for (protocol, dataset, model), g in table.groupby(["protocol", "dataset", "model"], sort=False):
        p = g.pivot(index="defense", columns="attack", values=value)
        out[protocol, dataset, model] = p.reindex(index=[d for d in DEFENSES if d in p.index],
                                                 columns=[a for a in ["clean", *ATTACKS] if a in p.columns])
    return out


def write_defense_tables(chunks: dict[str, list[str]], datasets: dict[str, str], out: dict) -> pd.DataFrame:
    """Rule ``defense_tables``: ``defense.csv`` and a Markdown rendering per protocol and model."""
    from .io import atomic_path, markdown_table, write_table

    table = defense_table(chunks, datasets)
    write_table(table, out["csv"], float_format="%.6g")
    parts = ["# Defence table (top-1; defence rate in parentheses)\n"]
    rates = pivot(table, "defense_rate")
    for key, top in pivot(table).items():
        protocol, dataset, model = key
        n = int(table[(table.model == model) & (table.protocol == protocol)].n_images.iloc[0])
        cells = top.copy().astype(object)
        for d in top.index:
            for a in top.columns:
                rate = rates[key].loc[d, a]
                cells.loc[d, a] = f"{top.loc[d, a]:.3f}" + ("" if pd.isna(rate) or d == "none" else f" ({rate:.2f})")
        parts.append(f"\n## {protocol}: {dataset}, {model} ({n} images)\n\n")
        parts.append(markdown_table(cells.reset_index()))
    with atomic_path(out["md"]) as tmp:
        tmp.write_text("".join(parts))
    return table


__all__ = ["ATTACKS", "DEFENSES", "PROTOCOLS", "TIMING_COLUMNS", "craft", "defense_chunk", "defense_rate", "defense_table",
           "pivot", "run_defense_eval", "write_defense_tables"]
