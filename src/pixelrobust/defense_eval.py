"""P3's defence table: per image, is each defence right under each attack, gray-box and adaptive?

One job (rule ``defense_eval``) takes one model, one attack and one chunk of test images and writes
one row per image, defence, protocol and **draw** (``CHUNK_COLUMNS``):

* attack ``clean``: every defence on the clean images (protocol ``clean``);
* protocol ``graybox`` (the authors'): the attack is crafted on the deterministic model — the
  undefended classifier for ``none`` and the three baselines, the deterministic PRM model
  (λ = ``graybox_lambda``, no shift) for the stochastic PRM — and the images are classified by the
  defended model. **Transfer control** (ours): the PRM-crafted images are also classified by the
  undefended classifier (``transfer_none``) and by the stochastic PRM's shift-only component
  (``prm_shift_only``: built with the stochastic PRM's seed, so the same draws of passes, PRMs and
  shifts with λ = 0), so the stochastic PRM's gain splits into what is lost by transferring from the
  stand-in and what the defence adds; and the stochastic PRM also classifies the images crafted on the
  classifier (``prm_on_classifier``, the baselines' protocol, the same draws);
* protocol ``adaptive`` (ours, Athalye et al. 2018): the attack is crafted on the defence itself
  through :class:`pixelrobust.defenses.EOT` over ``eot_samples`` draws (pixel deflection passes the
  gradient through, BPDA; the region-based vote is replaced by its mean-softmax surrogate). PGD is
  replaced by :func:`adaptive_pgd` (``adaptive_pgd``: many steps, random restarts, the restart whose
  result the EOT model finds least likely correct kept per image), with the defended top-1 recorded
  at ``checkpoints`` to show whether more steps still help. ``none`` is the same attack on the
  undefended classifier (for PGD the strong one, otherwise the gray-box images). ``prm_shift_only``
  (randomness alone) is attacked through its own EOT too, with the stochastic PRM's EOT seed.

Randomness (ours): a randomised defence is evaluated ``draws`` times per image, draw ``d`` of image
``i`` seeded by a hash of (model seed, defence, ``i``, ``d``) — the same in every chunking, batch
size, attack and protocol (common random numbers across the table). Adaptive PGD keys EOT's fresh
draws to the image ids and its random starts to (seed, image id, restart), so it is chunk-invariant
too. The other attacks' crafted images are not: :func:`craft` seeds a batch's attack from its first
id, One Pixel draws a batch's population from one generator, and EOT calls on subsets of a batch
(DeepFool, One Pixel) use the defence's own stream (docs/p3.md).

``seconds`` is the row's share of its cell's wall time (crafting the adversarial images it uses —
shared gray-box images count in every cell that uses them — plus classifying), so rows sum to cells;
adaptive PGD's checkpoint evaluations (trace rows, ``seconds`` 0) are not counted.

The table (rule ``defense_tables``, :func:`defense_table`) pools the rows per (model, defence,
attack, protocol): top-1 with a Wilson interval on images, the defence's clean top-1 (its cost), and
the **effect**: the defended top-1 minus the top-1 of its reference on the same images (paired,
bootstrap over images), and ``shift_effect``: the same against ``prm_shift_only`` (:func:`shift_control`);
the authors' defence rate is kept for comparison with the paper.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from . import schema
from .attacks import build_attack
from .cost import Progress
from .data import load_split
from .defenses import build_defense
from .io import atomic_path, markdown_table, write_table
from .models import build_model, freeze
from .prm import load_prm
from .runtime import derive_seed, model_device
from .stats import discordant, paired_diff_ci, wilson_ci

log = logging.getLogger("pixelrobust")

ATTACKS = ["onepixel", "jsma", "deepfool", "cw", "pgd"]
DEFENSES = ["none", "stochastic_prm", "region_based", "randomization", "pixel_deflection"]
CONTROLS = [
    "transfer_none",
    "prm_shift_only",
    "prm_on_classifier",
]  # controls of the stochastic PRM (ours, module doc)
ROWS = DEFENSES + CONTROLS
RANDOMISED = {
    "stochastic_prm",
    "region_based",
    "randomization",
    "pixel_deflection",
    "prm_shift_only",
    "prm_on_classifier",
}
SAME_DRAWS = {
    "prm_shift_only": "stochastic_prm",
    "prm_on_classifier": "stochastic_prm",
}  # seeded as the stochastic PRM
MINIMAL = {
    "onepixel",
    "jsma",
    "deepfool",
    "cw",
}  # minimal-perturbation attacks: stop just past the (EOT) boundary
PROTOCOLS = ["graybox", "adaptive"]
CHUNK_COLUMNS = [
    "image_id",
    "label",
    "defense",
    "attack",
    "protocol",
    "draw",
    "correct",
    "seconds",
    "trace_restart",
    "trace_step",
]
TABLE_COLUMNS = [
    "dataset",
    "model",
    "defense",
    "attack",
    "protocol",
    "n_images",
    "draws",
    "n",
    "k",
    "top1",
    "ci_low",
    "ci_high",
    "clean_top1",
    "reference",
    "reference_top1",
    "effect",
    "effect_low",
    "effect_high",
    "shift_effect",
    "shift_effect_low",
    "shift_effect_high",
    "effect_discordant",
    "shift_discordant",
    "defense_rate",
    "seconds",
]
SATURATION_COLUMNS = ["dataset", "model", "defense", "restart", "step", "n_images", "top1"]
TIMING_COLUMNS = ["seconds"]


def keyed(model: nn.Module, ids, draw: int | None = None):
    """The defence's per-image randomness keyed to ``ids`` (a no-op for deterministic models)."""
    return model.images(ids, draw) if hasattr(model, "images") else nullcontext()


def check_adaptive_pgd(settings: dict | None, attack_settings: dict | None = None) -> dict:
    """``defense_eval.adaptive_pgd`` with defaults filled in; a clear error for settings that cannot run."""
    known = list(schema.node("defense_eval.adaptive_pgd")["properties"])
    unknown = set(settings or {}) - set(known)
    if unknown:
        raise ValueError(
            f"defense_eval.adaptive_pgd: unknown keys {sorted(unknown)}; known: {', '.join(known)}"
        )
    s = schema.with_defaults("defense_eval.adaptive_pgd", settings)
    if int(s["steps"]) < 1 or int(s["restarts"]) < 1 or float(s["alpha"]) <= 0:
        raise ValueError(
            f"defense_eval.adaptive_pgd needs steps >= 1, restarts >= 1 and alpha > 0, got {s}"
        )
    bad = [c for c in s["checkpoints"] if not 1 <= int(c) <= int(s["steps"])]
    if bad:
        raise ValueError(
            f"defense_eval.adaptive_pgd.checkpoints {bad} lie outside 1..steps ({s['steps']}); "
            "set checkpoints to step counts up to adaptive_pgd.steps"
        )
    if schema.with_defaults("defense_eval.attack_settings.pgd", attack_settings)["norm"] != "linf":
        raise ValueError(
            "defense_eval.adaptive_pgd runs L-inf PGD; set defense_eval.attack_settings.pgd.norm: linf"
        )
    s["checkpoints"] = sorted({int(c) for c in s["checkpoints"]} | {int(s["steps"])})
    return s


def craft(
    attack: str,
    settings: dict,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    ids: list[str],
    seed: int,
    batch_size: int,
) -> tuple[torch.Tensor, float]:
    """Adversarial images of ``attack`` against ``model`` in batches, and the seconds it took (each
    batch's copy to the CPU waits for the device, so the time is complete). A randomised ``model``
    draws fresh randomness per call, keyed to the image ids."""
    device = model_device(model)
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(images), batch_size):
        atk = build_attack(attack, model, settings, seed=derive_seed(seed, ids[i]))
        with keyed(model, ids[i : i + batch_size]):
            out.append(
                atk(images[i : i + batch_size].to(device), labels[i : i + batch_size].to(device))
                .detach()
                .cpu()
            )
    return torch.cat(out), time.perf_counter() - t0


def adaptive_pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    ids: list[str],
    *,
    eps: float,
    alpha: float,
    steps: int,
    restarts: int,
    checkpoints: list[int],
    seed: int,
    batch_size: int,
    probe=None,
) -> tuple[torch.Tensor, float, list[tuple[int, int, list[str], np.ndarray]]]:
    """L∞ PGD on the cross-entropy of ``model`` (an EOT model for a randomised defence) with restarts.

    Restart 0 starts at the image (the authors' PGD), restart r ≥ 1 at a uniform point of the ε-ball
    drawn from (``seed``, image id, r). Per image the restart whose final image ``model`` gives the
    lowest true-class probability is kept (decided by the attack's own EOT estimate, not by the
    evaluation draws). ``probe(adv, ids)`` (correct flags of the evaluated defence) runs at every
    checkpoint of every restart; returns (images, seconds, trace rows (restart, step, ids, correct)).
    """
    device = model_device(model)
    t0 = time.perf_counter()
    out, trace, probe_seconds = [], [], 0.0
    for i in range(0, len(images), batch_size):
        x, y, bid = (
            images[i : i + batch_size].to(device),
            labels[i : i + batch_size].to(device),
            ids[i : i + batch_size],
        )
        best, best_p = x.clone(), torch.full((len(x),), float("inf"), device=device)
        with keyed(model, bid):
            for r in range(restarts):
                if r == 0:
                    delta = torch.zeros_like(x)
                else:
                    noise = [
                        torch.rand(
                            x.shape[1:],
                            generator=torch.Generator().manual_seed(
                                derive_seed(seed, j, "restart", r)
                            ),
                        )
                        for j in bid
                    ]
                    delta = (x + (torch.stack(noise).to(device) * 2 - 1) * eps).clamp(0, 1) - x
                for t in range(1, steps + 1):
                    delta.requires_grad_(True)
                    loss = F.cross_entropy(
                        model(x + delta), y, reduction="sum"
                    )  # per-image terms: batch-independent
                    (grad,) = torch.autograd.grad(loss, delta)
                    with torch.no_grad():
                        delta = (x + (delta + alpha * grad.sign()).clamp(-eps, eps)).clamp(0, 1) - x
                    if probe is not None and t in checkpoints:
                        tp = time.perf_counter()
                        trace.append((r, t, list(bid), probe((x + delta).detach().cpu(), bid)))
                        probe_seconds += time.perf_counter() - tp
                with torch.no_grad():
                    adv = (x + delta).detach()
                    p = model(adv).log_softmax(1).gather(1, y[:, None]).squeeze(1)
                    better = p < best_p
                    best[better], best_p[better] = adv[better], p[better]
        out.append(best.cpu())
    return torch.cat(out), time.perf_counter() - t0 - probe_seconds, trace


def defense_chunk(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    ids: list[str] | None = None,
    *,
    attack: str,
    attack_settings: dict,
    defenses: dict[str, dict],
    protocols: list[str],
    eot_samples: int,
    seed: int,
    batch_size: int,
    draws: int = 1,
    adaptive_pgd_settings: dict | None = None,
    prms: list[nn.Module] | None = None,
) -> pd.DataFrame:
    """Per-image rows (``CHUNK_COLUMNS``) of ``none`` and every defence in ``defenses`` under ``attack``.

    ``seed`` is the model's base seed (not the chunk's): every per-image draw derives from it and the
    image id, so a chunk's rows do not depend on how the images were split into chunks.
    """
    names = ["none", *[d for d in DEFENSES if d in defenses]]
    unknown = set(defenses) - set(DEFENSES)
    if unknown:
        raise ValueError(f"unknown defences {sorted(unknown)}; known: {', '.join(DEFENSES[1:])}")
    if attack != "clean" and attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; known: clean, {', '.join(ATTACKS)}")
    bad = set(protocols) - set(PROTOCOLS)
    if bad or not protocols:
        raise ValueError(
            f"defense_eval.protocols must be a non-empty subset of {PROTOCOLS}, got {protocols}"
        )
    if int(draws) < 1:
        raise ValueError(f"defense_eval.draws must be >= 1, got {draws}")
    ids = [str(i) for i in (ids if ids is not None else range(len(images)))]
    if len(ids) != len(images) or len(set(ids)) != len(ids):
        raise ValueError(
            f"defense_chunk needs one distinct id per image: {len(ids)} ids for {len(images)} images"
        )
    if attack == "pgd":  # the schema's defaults for what the caller leaves out
        attack_settings = schema.with_defaults("defense_eval.attack_settings.pgd", attack_settings)
    apgd = (
        check_adaptive_pgd(adaptive_pgd_settings, attack_settings)
        if attack == "pgd" and "adaptive" in protocols
        else None
    )
    device = model_device(classifier)
    labels = labels.cpu()
    if "stochastic_prm" in names:
        names_clean = [*names, "prm_shift_only"]
    else:
        names_clean = names

    def make(name: str, role: str, **kw) -> nn.Module:
        settings, base = defenses.get(name), name
        if (
            name == "prm_shift_only"
        ):  # the stochastic PRM's draws of passes and shifts, λ = 0: no PRM applied
            settings, base = {**defenses["stochastic_prm"], "lambdas": [0.0]}, "stochastic_prm"
        elif (
            name == "prm_on_classifier"
        ):  # the stochastic PRM itself, on the images crafted on the classifier
            settings, base = defenses["stochastic_prm"], "stochastic_prm"
        elif name == "transfer_none":
            base = "none"
        # the controls share the stochastic PRM's seed: the same passes, PRMs and shifts per (image, draw)
        return build_defense(
            base,
            classifier,
            settings,
            prms=prms,
            seed=derive_seed(seed, SAME_DRAWS.get(name, name), role),
            **kw,
        )

    evaluators: dict[str, nn.Module] = {}

    def evaluate(
        name: str, adv: torch.Tensor, only_draw: int | None = None, which: list[str] | None = None
    ) -> np.ndarray:
        """Correct flags, draws × images; every draw keyed to (defence, image id, draw)."""
        model = evaluators.setdefault(name, make(name, "evaluate"))
        which = ids if which is None else which
        rng = [only_draw] if only_draw is not None else range(draws if name in RANDOMISED else 1)
        out = []
        with torch.no_grad():
            for d in rng:
                pred = []
                for i in range(0, len(adv), batch_size):
                    with keyed(model, which[i : i + batch_size], d):
                        pred.append(model(adv[i : i + batch_size].to(device)).argmax(1).cpu())
                out.append((torch.cat(pred) == labels[[ids.index(j) for j in which]]).numpy())
        return np.stack(out)

    rows: list[dict] = []

    def add(
        name,
        protocol,
        correct: np.ndarray,
        seconds: float,
        restart: int = -1,
        step: int = -1,
        which=None,
    ):
        which = ids if which is None else which
        share = seconds / correct.size
        index = {j: k for k, j in enumerate(ids)}
        for d, flags in enumerate(correct):
            for j, ok in zip(which, flags):
                rows.append(
                    {
                        "image_id": j,
                        "label": int(labels[index[j]]),
                        "defense": name,
                        "attack": attack,
                        "protocol": protocol,
                        "draw": d,
                        "correct": int(ok),
                        "seconds": share,
                        "trace_restart": restart,
                        "trace_step": step,
                    }
                )
        if restart < 0:
            log.info(
                "%s / %s / %s: %.3f top-1 (%d images x %d draws, %.1f s)",
                attack,
                name,
                protocol,
                correct.mean(),
                correct.shape[1],
                correct.shape[0],
                seconds,
            )

    def timed_eval(name, adv):
        t0 = time.perf_counter()
        c = evaluate(name, adv)
        return c, time.perf_counter() - t0

    if attack == "clean":
        for name in names_clean:
            c, secs = timed_eval(name, images)
            add(name, "clean", c, secs)
        return pd.DataFrame(rows, columns=CHUNK_COLUMNS)

    crafted: dict[str, tuple[torch.Tensor, float]] = {}

    def source(src: str) -> tuple[torch.Tensor, float]:
        if src not in crafted:
            model = make(
                "stochastic_prm" if src == "prm" else "none", "graybox", deterministic=True
            )
            crafted[src] = craft(
                attack,
                attack_settings,
                model,
                images,
                labels,
                ids,
                derive_seed(seed, attack, "graybox", src),
                batch_size,
            )
        return crafted[src]

    if "graybox" in protocols:
        for name in Progress.over(
            f"{attack} gray-box cells", [*names, *(CONTROLS if "stochastic_prm" in names else [])]
        ):
            adv, t_craft = source(
                "prm"
                if name in ("stochastic_prm", "transfer_none", "prm_shift_only")
                else "classifier"
            )
            c, t_eval = timed_eval(name, adv)
            add(name, "graybox", c, t_craft + t_eval)
    if (
        "adaptive" in protocols
    ):  # the shift-only control (randomness alone) is attacked through its own EOT too
        for name in Progress.over(
            f"{attack} adaptive cells",
            [*names, *(["prm_shift_only"] if "stochastic_prm" in names else [])],
        ):
            model = make(
                name, f"adaptive-{attack}", eot_samples=None if name == "none" else eot_samples
            )
            if apgd is not None:

                def probe(adv, which, name=name):
                    return evaluate(name, adv, only_draw=0, which=list(which))[0]

                adv, t_craft, trace = adaptive_pgd(
                    model,
                    images,
                    labels,
                    ids,
                    eps=float(attack_settings["eps"]),
                    alpha=float(apgd["alpha"]),
                    steps=int(apgd["steps"]),
                    restarts=int(apgd["restarts"]),
                    checkpoints=apgd["checkpoints"],
                    seed=derive_seed(seed, attack, "adaptive", name),
                    batch_size=batch_size,
                    probe=probe,
                )
                for r, t, which, flags in trace:
                    add(name, "adaptive", flags[None], 0.0, restart=r, step=t, which=which)
            elif name == "none":
                adv, t_craft = source("classifier")
            else:
                adv, t_craft = craft(
                    attack,
                    attack_settings,
                    model,
                    images,
                    labels,
                    ids,
                    derive_seed(seed, attack, "adaptive", name),
                    batch_size,
                )
            c, t_eval = timed_eval(name, adv)
            add(name, "adaptive", c, t_craft + t_eval)
    return pd.DataFrame(rows, columns=CHUNK_COLUMNS)


def defense_eval(
    *,
    data,
    weights,
    prms: list,
    out: dict,
    attack: str,
    spec: dict,
    bounds: tuple[int, int],
    attack_settings: dict,
    defenses: dict,
    protocols: list[str],
    eot_samples: int,
    draws: int,
    adaptive_pgd: dict,
    batch_size: int,
    seed: int,
    device,
) -> None:
    """Rule ``defense_eval``: one (model, ``attack``, chunk: test images ``bounds``) of the defence table,
    to ``out["csv"]``.

    ``prms``: the trained PRMs' paths the stochastic-PRM defence draws from (its pool, in config
    order; the first is the deterministic gray-box model's). ``seed``: the model's, not the chunk's.
    """
    split = load_split(data, "test", *bounds)
    classifier = freeze(build_model(spec, weights, device))
    pool = None
    if "stochastic_prm" in defenses:  # an empty pool is refused by build_defense
        pool = [freeze(load_prm(path, device)[0]) for path in prms]
        log.info("stochastic PRM pool: %d PRMs (%s)", len(pool), ", ".join(map(str, prms)))
    table = defense_chunk(
        classifier,
        split.images,
        split.labels,
        split.ids,
        attack=attack,
        attack_settings=attack_settings,
        defenses=defenses,
        protocols=protocols,
        eot_samples=eot_samples,
        seed=seed,
        batch_size=batch_size,
        draws=draws,
        adaptive_pgd_settings=adaptive_pgd,
        prms=pool,
    )
    write_table(table, out["csv"], float_format="%.6g")


def defense_rate(clean: float, attacked: float, defended: float) -> float:
    """The authors' ``1 − (clean − defended)/(clean − attacked)``; NaN when the attack did not lower accuracy.

    Kept for comparison with the paper only: with few images its denominator is a handful of images and
    the ratio swings far outside [0, 1]; the verdicts use :func:`defense_table`'s effect and interval."""
    if clean - attacked <= 0:
        return float("nan")
    return 1 - (clean - defended) / (clean - attacked)


def reference_of(defense: str, attack: str, protocol: str, present: set[str]) -> str | None:
    """The undefended row a defence is compared with on the same images (``None``: no comparison).

    Clean: ``none`` (the clean-accuracy cost). Gray-box: ``none`` for the baselines and for
    ``prm_on_classifier`` (the same images, crafted on the classifier) and for ``transfer_none`` (its
    effect is the transfer loss); ``transfer_none`` for the stochastic
    PRM and its shift-only component (the same PRM-crafted images). Adaptive: ``none`` under the same
    attack on the undefended classifier."""
    if defense == "none":
        return None
    if (
        attack != "clean"
        and protocol == "graybox"
        and defense in ("stochastic_prm", "prm_shift_only")
        and "transfer_none" in present
    ):
        return "transfer_none"
    return "none"


def shift_control(defense: str, attack: str, protocol: str) -> tuple[str, str, str] | None:
    """The second control (ours): the stochastic PRM's shift-only component (λ = 0, the same draws) under the
    same attack and protocol. Gray-box: for the stochastic PRM (the same PRM-crafted images). Adaptive: for
    every randomised defence (each attacked through its own EOT), so a defence is not credited with what any
    random shift of the input gives against an attack that stops just past the averaged boundary."""
    if attack == "clean" or defense in (
        "none",
        "transfer_none",
        "prm_shift_only",
        "prm_on_classifier",
    ):
        return None
    if protocol == "graybox" and defense != "stochastic_prm":
        return None
    return ("prm_shift_only", attack, protocol) if defense in RANDOMISED else None


def same_images(model: str, key: tuple, s: pd.Series, ref_key: tuple, r: pd.Series) -> pd.Series:
    """``r`` in the order of ``s``; a clear error when the two rows do not cover the same images (an effect on
    the intersection with the reference's top-1 on all images would compare different sets)."""
    a, b = set(s.index), set(r.index)
    if a != b:
        only_a, only_b = sorted(a - b)[:5], sorted(b - a)[:5]
        raise ValueError(
            f"defense table, model {model}: {'/'.join(key)} and {'/'.join(ref_key)} cover different images "
            f"(only in the first: {only_a}, only in the second: {only_b}); a defense_eval chunk is missing or "
            "comes from another run: rerun defense_eval for the chunks holding those image ids"
        )
    return r.loc[s.index]


def _order(t: pd.DataFrame, sort: list[str]) -> pd.DataFrame:
    order = {"defense": ROWS, "attack": ["clean", *ATTACKS], "protocol": PROTOCOLS}
    for col, cats in order.items():
        if col in t:
            t[col] = pd.Categorical(t[col], [c for c in cats if c in set(t[col])], ordered=True)
    t = t.sort_values(sort, kind="stable")
    for col in order:
        if col in t:
            t[col] = t[col].astype(str)
    return t.reset_index(drop=True)


def defense_table(
    chunks: dict[str, list[str]], datasets: dict[str, str], n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Pool the per-image rows per (model, defence, attack, protocol) (module doc).

    ``n`` rows (images × draws), ``k`` of them correct, ``top1`` = k / n. ``ci_low``/``ci_high``: the
    Wilson 95 % interval with the *image* as the unit (an image's share of correct draws counts as its
    outcome, n = images): the draws of one image are correlated, so counting images × draws as
    independent trials would narrow the interval spuriously; with one draw it is Wilson on k of n.
    ``effect``: top-1 minus the ``reference`` row's on the same images, its interval from
    :func:`pixelrobust.stats.paired_diff_ci` over images: the exact-conservative paired 0/1 interval when
    every image's score is 0 or 1 on both sides, else a percentile bootstrap of the paired per-image
    differences (pairing rules out Newcombe's independent-proportions interval); ``effect_discordant`` (and
    ``shift_discordant``): the images whose 0/1 scores differ when the exact interval was used, else empty (what
    the exact detectable effect of SUMMARY.md needs, :func:`pixelrobust.stats.detectable_paired_binary`). ``clean_top1``: the defence's clean
    top-1 (``transfer_none``: the classifier's). The clean column appears in both protocols' rows.
    """
    frames = []
    rng = np.random.default_rng(seed)
    for model, paths in chunks.items():
        df = pd.concat([pd.read_csv(p, dtype={"image_id": str}) for p in paths], ignore_index=True)
        df = df[df.trace_restart < 0]
        protocols = [p for p in PROTOCOLS if p in set(df.protocol)] or ["graybox"]
        clean, attacked = df[df.protocol == "clean"], df[df.protocol != "clean"]
        keep = {p: set(attacked[attacked.protocol == p].defense) | {"none"} for p in protocols}
        if attacked.empty:
            keep = {p: set(clean.defense) for p in protocols}
        df = pd.concat(
            [attacked, *[clean[clean.defense.isin(keep[p])].assign(protocol=p) for p in protocols]],
            ignore_index=True,
        )
        scores = {
            key: g.groupby("image_id").correct.mean()
            for key, g in df.groupby(["defense", "attack", "protocol"])
        }
        present = set(df.defense)
        rows = []
        for (d, a, p), g in df.groupby(["defense", "attack", "protocol"], sort=False):
            s = scores[d, a, p]
            n_images, n, k = len(s), len(g), int(g.correct.sum())
            lo, hi = wilson_ci(float(s.sum()), n_images)
            clean_key = (
                {"transfer_none": "none", "prm_on_classifier": "stochastic_prm"}.get(d, d),
                "clean",
                p,
            )
            ref = reference_of(d, a, p, present)
            ref_top1 = eff = eff_lo = eff_hi = eff_disc = np.nan
            if ref is not None and (ref, a, p) in scores:
                r = same_images(model, (d, a, p), s, (ref, a, p), scores[ref, a, p])
                ref_top1 = float(r.mean())
                eff, eff_lo, eff_hi = paired_diff_ci(s.to_numpy(), r.to_numpy(), n_boot, rng)
                eff_disc = discordant(s.to_numpy(), r.to_numpy())
            sh = sh_lo = sh_hi = sh_disc = np.nan
            ctl = shift_control(d, a, p)
            if ctl is not None and ctl in scores:
                r = same_images(model, (d, a, p), s, ctl, scores[ctl])
                sh, sh_lo, sh_hi = paired_diff_ci(s.to_numpy(), r.to_numpy(), n_boot, rng)
                sh_disc = discordant(s.to_numpy(), r.to_numpy())
            rate = np.nan
            if a != "clean" and ("none", "clean", p) in scores and ("none", a, p) in scores:
                rate = defense_rate(
                    float(scores["none", "clean", p].mean()),
                    float(scores["none", a, p].mean()),
                    k / n,
                )
            rows.append(
                {
                    "dataset": datasets[model],
                    "model": model,
                    "defense": d,
                    "attack": a,
                    "protocol": p,
                    "n_images": n_images,
                    "draws": n // n_images,
                    "n": n,
                    "k": k,
                    "top1": k / n,
                    "ci_low": lo,
                    "ci_high": hi,
                    "clean_top1": float(scores[clean_key].mean())
                    if clean_key in scores
                    else np.nan,
                    "reference": ref or "",
                    "reference_top1": ref_top1,
                    "effect": eff,
                    "effect_low": eff_lo,
                    "effect_high": eff_hi,
                    "shift_effect": sh,
                    "shift_effect_low": sh_lo,
                    "shift_effect_high": sh_hi,
                    "effect_discordant": eff_disc,
                    "shift_discordant": sh_disc,
                    "defense_rate": rate,
                    "seconds": float(g.seconds.sum()),
                }
            )
        frames.append(pd.DataFrame(rows, columns=TABLE_COLUMNS))
    t = pd.concat(frames, ignore_index=True)
    return _order(t, ["protocol", "dataset", "model", "defense", "attack"])[TABLE_COLUMNS]


def saturation_table(chunks: dict[str, list[str]], datasets: dict[str, str]) -> pd.DataFrame:
    """Adaptive PGD's defended top-1 (draw 0) after each checkpoint of each restart, and of the image kept
    over restarts (``restart`` = ``best``): does the attack still gain from more steps or restarts?"""
    rows = []
    for model, paths in chunks.items():
        df = pd.concat([pd.read_csv(p, dtype={"image_id": str}) for p in paths], ignore_index=True)
        df = df[(df.attack == "pgd") & (df.protocol == "adaptive")]
        trace = df[df.trace_restart >= 0]
        for (d, r, t), g in trace.groupby(["defense", "trace_restart", "trace_step"], sort=False):
            rows.append(
                {
                    "dataset": datasets[model],
                    "model": model,
                    "defense": d,
                    "restart": str(int(r)),
                    "step": int(t),
                    "n_images": g.image_id.nunique(),
                    "top1": g.correct.mean(),
                }
            )
        final = df[(df.trace_restart < 0) & (df.draw == 0)]
        for d, g in final.groupby("defense", sort=False):
            steps = trace[trace.defense == d].trace_step
            rows.append(
                {
                    "dataset": datasets[model],
                    "model": model,
                    "defense": d,
                    "restart": "best",
                    "step": int(steps.max()) if len(steps) else -1,
                    "n_images": g.image_id.nunique(),
                    "top1": g.correct.mean(),
                }
            )
    t = pd.DataFrame(rows, columns=SATURATION_COLUMNS)
    if t.empty:
        return t
    t["rank"] = t.restart.map(lambda r: 10**9 if r == "best" else int(r))
    return _order(t, ["dataset", "model", "defense", "rank", "step"]).drop(columns="rank")[
        SATURATION_COLUMNS
    ]


def pivot(table: pd.DataFrame, value: str = "top1") -> dict[tuple[str, str, str], pd.DataFrame]:
    """Per (protocol, dataset, model): defences × (clean + attacks) of ``value``, in the table's order."""
    out = {}
    for (protocol, dataset, model), g in table.groupby(
        ["protocol", "dataset", "model"], sort=False
    ):
        p = g.pivot(index="defense", columns="attack", values=value)
        out[protocol, dataset, model] = p.reindex(
            index=[d for d in ROWS if d in p.index],
            columns=[a for a in ["clean", *ATTACKS] if a in p.columns],
        )
    return out


def _fmt(v: float, lo: float, hi: float, signed: bool = False) -> str:
    if pd.isna(v):
        return ""
    f = "{:+.2f}" if signed else "{:.2f}"
    return f.format(v) + ("" if pd.isna(lo) else f" [{f.format(lo)}, {f.format(hi)}]")


def defense_tables(
    *,
    chunks: dict[str, list[str]],
    out: dict,
    datasets: dict[str, str],
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """Rule ``defense_tables``: the defense_eval chunk tables (``chunks``: model -> files) into
    ``defense.csv``, its Markdown grids per protocol and model, and the adaptive-PGD saturation table
    (``defense_saturation.csv`` + ``.md``)."""
    table = defense_table(chunks, datasets, n_boot, seed)
    write_table(table, out["csv"], float_format="%.6g")
    parts = [
        "# Defence table\n\nTop-1 with its Wilson 95 % interval (images as units), and the effect: top-1 minus the "
        "reference's on the same images (gray-box stochastic PRM and shift-only: the undefended classifier on the "
        "PRM-crafted images, `transfer_none`; otherwise `none`), with a paired bootstrap 95 % interval over images; and the "
        "effect against the shift-only randomisation `prm_shift_only` (lambda 0, the same draws) under the same attack "
        "and protocol. Adaptive rows of the minimal-perturbation attacks (onepixel, jsma, deepfool, cw) against `none` "
        "are attack diagnostics: any randomised defence recovers images those attacks leave just past the averaged "
        "boundary; read their effect against the shift-only randomisation.\n"
    ]
    cols = {
        "top1": ("ci_low", "ci_high", False),
        "effect": ("effect_low", "effect_high", True),
        "shift_effect": ("shift_effect_low", "shift_effect_high", True),
    }
    titles = {
        "top1": "top-1",
        "effect": "effect against the reference",
        "shift_effect": "effect against prm_shift_only",
    }
    for key, g in table.groupby(["protocol", "dataset", "model"], sort=False):
        protocol, dataset, model = key
        n, draws = int(g.n_images.max()), int(g.draws.max())
        parts.append(
            f"\n## {protocol}: {dataset}, {model} ({n} images, up to {draws} draws per image)\n"
        )
        for value, (lo, hi, signed) in cols.items():
            cells = g.assign(cell=[_fmt(r[value], r[lo], r[hi], signed) for _, r in g.iterrows()])
            grid = pivot(cells, "cell")[key].fillna("")
            if value == "shift_effect" and g.shift_effect.isna().all():
                continue
            parts.append(f"\n### {titles[value]}\n\n")
            parts.append(markdown_table(grid.reset_index()))
    with atomic_path(out["md"]) as tmp:
        tmp.write_text("".join(parts))
    if "saturation" in out:
        write_table(
            saturation_table(chunks, datasets),
            out["saturation"],
            out.get("saturation_md"),
            float_format="%.4f",
        )
    return table


__all__ = [
    "ATTACKS",
    "CONTROLS",
    "DEFENSES",
    "MINIMAL",
    "PROTOCOLS",
    "ROWS",
    "SATURATION_COLUMNS",
    "TABLE_COLUMNS",
    "TIMING_COLUMNS",
    "adaptive_pgd",
    "check_adaptive_pgd",
    "craft",
    "defense_chunk",
    "defense_eval",
    "defense_rate",
    "defense_table",
    "defense_tables",
    "pivot",
    "reference_of",
    "same_images",
    "saturation_table",
    "shift_control",
]
