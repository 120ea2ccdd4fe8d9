"""What a run will cost before it is spent: evaluation counts per job, per-unit costs, an estimate.

Three parts (config key ``estimate`` in config/README.md):

* :func:`job_units` counts, for one workflow job (a rule name and its wildcards), the model evaluations
  it makes, derived from the config: ``fwd`` (one image through the classifier), ``grad`` (one image
  forward and backward to the input), ``fwd_bf16`` (one image through the classifier under bf16 autocast:
  the bf16 DE's fitness, ``onepixel.de.precision``), ``fwd_incremental`` (one one-pixel candidate of the
  exhaustive map through :class:`~pixelrobust.incremental.Incremental`, ``onepixel.incremental``: auto;
  equal to ``fwd`` where that path does not run), ``incremental_check`` (one candidate of that path's fp32
  check batches: ``fwd`` where the path runs, 0 where it does not, as those candidates are then counted in
  the full batches at ``fwd_incremental`` = ``fwd``), ``prm_fwd`` / ``prm_grad`` (one image through the PRM alone),
  ``ssim_step`` (one SSIM-ball step of one image: gradient, convex solve, check) and ``job`` (a job's
  start-up: interpreter, imports, model load). Counts are upper bounds where a search stops early:
  every image is taken as correctly classified and every DE run, minimal attack and SSIM-ball attack
  as spending its whole budget (``breakable_share`` = 0, the conservative choice: images that break
  stop early and cost less).
* :func:`calibrate` times a few batches per model on the run's device (a few seconds in all) and
  caches the per-unit seconds in a JSON file keyed by machine, torch, device, threads and model, so a
  rerun does not pay it again.
* :func:`estimate` multiplies the two and sums per stage; :func:`format_estimate` prints it. The
  Snakefile calls :func:`snakemake_estimate` at ``onstart`` (not on ``-n`` dry runs) with the jobs
  Snakemake is about to run (finished outputs excluded); config key ``estimate: false`` turns it off.

:class:`Progress` writes done/total, elapsed and ETA lines for long loops through the job's log.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from . import schema

log = logging.getLogger("pixelrobust")

STAGES = [
    "P1 onepixel",
    "P2 ssim",
    "P3 gradients",
    "P3 masked_pgd",
    "P3 prm",
    "P3 defences",
    "synthesis",
    "clean accuracy",
    "data, weights, tables, figures",
]
RULE_STAGE = {
    "segment": "P1 onepixel",
    "onepixel_search": "P1 onepixel",
    "onepixel_claim_images": "P1 onepixel",
    "onepixel_tables": "P1 onepixel",
    "p1_vulnerability_grid": "P1 onepixel",
    "p1_region_semantics": "P1 onepixel",
    "attack_ssim": "P2 ssim",
    "cam": "P2 ssim",
    "ssim_tables": "P2 ssim",
    "compare_maps": "P2 ssim",
    "ssim_solver_check": "P2 ssim",
    "p2_ssim_sweep": "P2 ssim",
    "p2_cam_grid": "P2 ssim",
    "p2_cam_distributions": "P2 ssim",
    "gradient_map": "P3 gradients",
    "p3_gradient_maps": "P3 gradients",
    "masked_pgd": "P3 masked_pgd",
    "masked_pgd_tables": "P3 masked_pgd",
    "p3_masked_pgd": "P3 masked_pgd",
    "train_prm": "P3 prm",
    "prm_sweep": "P3 prm",
    "prm_tables": "P3 prm",
    "p3_prm_training": "P3 prm",
    "p3_prm_lambda": "P3 prm",
    "defense_eval": "P3 defences",
    "defense_tables": "P3 defences",
    "p3_defense": "P3 defences",
    "four_maps": "synthesis",
    "synthesis_tables": "synthesis",
    "synthesis_maps": "synthesis",
    "synthesis_matrix": "synthesis",
    "clean_accuracy_chunk": "clean accuracy",
    "clean_accuracy": "clean accuracy",
}
UNITS = (
    "fwd",
    "grad",
    "fwd_bf16",
    "fwd_incremental",
    "incremental_check",
    "prm_fwd",
    "prm_grad",
    "ssim_step",
)
INCREMENTAL_CHECK = (
    64  # pixelrobust.onepixel.INCREMENTAL_CHECK (cost imports fast; a test compares)
)
INCREMENTAL_UNIT = (
    2  # the incremental unit's timing code (in the calibration key: 2 = the rest in chunks)
)
DE_CHECK = 32  # the bf16 DE's fp32 checks per generation (pixelrobust.onepixel.DE_CHECK; cost imports fast)
PALETTES = {"corners": 8}  # onepixel.palette names -> colours (pixelrobust.onepixel.make_palette)


# ----------------------------------------------------------------------------------------------
# Counting (first principles, from the config)
# ----------------------------------------------------------------------------------------------


@dataclass
class Counts:
    """Evaluations of one job: ``units[model][unit]`` (see the module doc) and the number of job starts."""

    units: dict[str, dict[str, float]] = field(default_factory=dict)
    jobs: int = 1

    def add(self, model: str, unit: str, n: float) -> None:
        if n:
            per = self.units.setdefault(model, {})
            per[unit] = per.get(unit, 0.0) + float(n)


@dataclass
class Context:
    """What the counts need besides the config: each model's dataset and input size (H, W), and how many
    images a dataset split holds (``available(dataset, split)``; None = unknown, then the requested
    count is taken)."""

    datasets: dict[str, str]
    sizes: dict[str, tuple[int, int]]
    available: Callable[[str, str], int | None] = lambda ds, split: None

    def n(self, dataset: str, requested, split: str = "test", start: int = 0) -> int:
        try:
            have = self.available(dataset, split)
        except Exception:  # e.g. a split the dataset lacks: the job itself reports that
            have = None
        have = None if have is None else max(0, have - start)
        if requested is None:
            if have is None:
                raise ValueError(
                    f"cost: the number of {dataset} {split} images is unknown and none is configured"
                )
            return int(have)
        return int(requested) if have is None else min(int(requested), have)


def chunk_size_of(start: int, stop: int) -> int:
    return max(0, int(stop) - int(start))


def bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def _chunk(config_n: int, chunk_size: int, chunk) -> int:
    b = bounds(config_n, chunk_size)
    c = int(chunk)
    return chunk_size_of(*b[c]) if c < len(b) else 0


def palette_size(palette) -> int:
    if isinstance(palette, str):
        if palette not in PALETTES:
            raise ValueError(f"cost: unknown onepixel.palette {palette!r}")
        return PALETTES[palette]
    return len(palette)


def grid_pixels(h: int, w: int, stride: int) -> int:
    """Pixels of the exhaustive map's grid: every ``stride``-th row and column."""
    return math.ceil(h / stride) * math.ceil(w / stride)


def incremental_candidates(n_candidates: int, batch_size: int) -> tuple[int, int]:
    """(incremental, checked): candidates of one image's exhaustive map that ``onepixel.incremental:
    auto`` scores on the incremental path (every full batch, the checked ones too) and the fp32
    check's candidates among them (``INCREMENTAL_CHECK`` random ones padded to full batches;
    ``ExhaustiveSearch``); the last partial batch runs a full fp32 pass besides. (0, 0) when the
    check covers every full batch: then no incremental pass runs and every candidate is fp32."""
    b = int(batch_size)
    full = (int(n_candidates) // b) * b
    checked = -(-min(INCREMENTAL_CHECK, full) // b) * b
    return (0, 0) if checked >= full else (full, checked)


def de_evals(de: dict) -> int:
    """One DE run's whole budget: the initial population and ``maxiter`` generations of it."""
    return int(de["popsize"]) * (int(de["maxiter"]) + 1)


def attack_queries(attack: str, s: dict, n_features: int) -> tuple[float, float]:
    """(forward, gradient) queries one image costs ``attack`` with settings ``s`` at its whole budget."""
    if attack == "onepixel":
        return de_evals(s), 0.0
    if attack == "jsma":
        iters = math.ceil(float(s["gamma"]) * n_features / 2)
        if s.get("max_iters"):
            iters = min(iters, int(s["max_iters"]))
        return 0.0, 2.0 * iters  # target and other-class gradients per iteration
    if attack == "deepfool":
        return 0.0, float(s["steps"]) * float(s["candidates"])
    if attack == "cw":
        return 0.0, float(s["outer_steps"]) * float(s["steps"])
    if attack == "pgd":
        return 0.0, float(s["steps"])
    raise ValueError(f"cost: unknown attack {attack!r}")


def defense_query(name: str, settings: dict) -> tuple[float, float]:
    """(classifier, PRM) passes of one query of defence ``name`` (controls as their base)."""
    if name in ("stochastic_prm", "prm_on_classifier"):
        stacks = settings["stochastic_prm"]["stacks"]
        return 1.0, sum(stacks) / len(stacks)
    if name == "region_based":
        return float(settings["region_based"]["samples"]), 0.0
    return 1.0, 0.0  # none, randomization, pixel_deflection, transfer_none, prm_shift_only (λ = 0)


RANDOMISED = {
    "stochastic_prm",
    "region_based",
    "randomization",
    "pixel_deflection",
    "prm_shift_only",
    "prm_on_classifier",
}
CONTROLS = ["transfer_none", "prm_shift_only", "prm_on_classifier"]


def defense_units(
    config: dict, model: str, attack: str, n: int, hw: tuple[int, int], c: Counts
) -> None:
    """Counts of one defense_eval job (module pixelrobust.defense_eval: clean, gray-box, adaptive)."""
    de = config["defense_eval"]
    sett = de["defense_settings"]
    names = [
        "none",
        *[
            d
            for d in ("stochastic_prm", "region_based", "randomization", "pixel_deflection")
            if d in de["defenses"]
        ],
    ]
    prm = "stochastic_prm" in names
    draws, eot = int(de["draws"]), int(de["eot_samples"])

    def evaluate(name, times=1.0):
        cls, p = defense_query(name, sett)
        r = draws if name in RANDOMISED else 1
        c.add(model, "fwd", n * r * cls * times)
        c.add(model, "prm_fwd", n * r * p * times)

    def craft(name, fwd, grad, mult=1):
        cls, p = defense_query(name, sett)
        if (
            name == "region_based" and mult > 1
        ):  # adaptive: its surrogate, ``eot_samples`` noise draws a query
            cls, mult = 1.0, mult
        c.add(model, "fwd", n * fwd * cls * mult)
        c.add(model, "grad", n * grad * cls * mult)
        c.add(model, "prm_fwd", n * fwd * p * mult)
        c.add(model, "prm_grad", n * grad * p * mult)

    if attack == "clean":
        for name in names + (["prm_shift_only"] if prm else []):
            evaluate(name)
        return
    fwd, grad = attack_queries(attack, de["attack_settings"][attack], 3 * hw[0] * hw[1])
    if "graybox" in de["protocols"]:
        craft("none", fwd, grad)
        if prm:
            craft(
                "prm_on_classifier", fwd, grad
            )  # the deterministic PRM model: classifier + one PRM pass
        for name in names + (CONTROLS if prm else []):
            evaluate(name)
    if "adaptive" in de["protocols"]:
        apgd = de.get("adaptive_pgd") or {}
        for name in names + (["prm_shift_only"] if prm else []):
            mult = 1 if name == "none" else eot
            if attack == "pgd":
                steps, restarts = int(apgd["steps"]), int(apgd["restarts"])
                craft(name, 0.0, steps * restarts, mult)
                evaluate(
                    name,
                    len(apgd["checkpoints"])
                    * restarts
                    / max(1, draws if name in RANDOMISED else 1),
                )
            elif name != "none":
                craft(name, fwd, grad, mult)
            evaluate(name)


def ssim_ball(config: dict) -> dict:
    return config["ssim"]


_FILLED: dict = {}  # the last config filled (an estimate asks for the same config once per job)


def filled(config: dict) -> dict:
    """``config`` with the schema's defaults where it leaves a key out (the workflow's is filled already)."""
    key = (id(schema.load()), json.dumps(config, default=str))
    if key not in _FILLED:
        _FILLED.clear()
        _FILLED[key] = schema.fill(schema.load(), copy.deepcopy(config), schema.load())
    return copy.deepcopy(_FILLED[key])


def job_units(rule: str, wildcards: dict, config: dict, ctx: Context) -> Counts:
    """Evaluation counts of one job of ``rule`` with ``wildcards`` (module doc). Rules without model
    evaluations (tables, figures, data, weights) count one job start only."""
    config = filled(config)
    c = Counts()
    model = wildcards.get("model")
    ds = ctx.datasets.get(model) if model else None
    hw = ctx.sizes.get(model) if model else None
    op, mp, pr, de, ss, sy = (
        config[k] for k in ("onepixel", "masked_pgd", "prm", "defense_eval", "ssim", "synthesis")
    )
    if rule == "clean_accuracy_chunk":
        n = _chunk(
            ctx.n(ds, config["clean_accuracy"]["n_images"]),
            config["chunk_size"],
            wildcards["chunk"],
        )
        c.add(model, "fwd", n)
    elif rule in ("segment", "onepixel_search", "onepixel_claim_images"):
        n = _chunk(ctx.n(ds, op["n_images"][ds]), op["chunk_size"], wildcards["chunk"])
        segments = int(op["segmentation"][ds]["n_segments"])
        if rule == "segment":  # occlusion of every region, Grad-CAM++, the clean prediction
            c.add(model, "fwd", n * (segments + 1))
            c.add(model, "grad", n)
        elif (
            rule == "onepixel_claim_images"
        ):  # occlusion and Grad-CAM++ at the primary and each sensitivity count
            counts = [segments, *op["sensitivity_segments"]]
            c.add(model, "fwd", n * (1 + sum(int(s) for s in counts)))
            c.add(model, "grad", n * len(counts))
        else:
            ex = grid_pixels(*hw, int(op["grid_stride"][ds])) * palette_size(op["palette"])
            runs = 1 + 2 * int(
                op["de_regions"]
            )  # whole image, then each top region and its random subset
            inc, checked = (
                incremental_candidates(ex, int(config["batch_size"]))
                if op.get("incremental") == "auto"
                else (0, 0)
            )
            # the clean prediction and the fp32 passes; with the incremental path the check and
            # the last partial batch (not counted: the band's re-evaluations on an image whose check
            # is not bit-exact: 1 of 100 ResNet-20 images in bench/README.md, session s38)
            c.add(model, "fwd", n * (ex - inc + 1))
            if inc:
                c.add(model, "fwd_incremental", n * inc)
                c.add(model, "incremental_check", n * checked)
            if op["de"].get("precision") == "bf16":
                # bf16 autocast fitness; fp32: DE_CHECK random candidates per generation (its error
                # bound). Not counted: the few it re-decides in fp32 (fp32_fraction 0.005-0.04 of all
                # candidates in bench/README.md)
                generations = int(op["de"]["maxiter"]) + 1
                c.add(model, "fwd_bf16", n * runs * de_evals(op["de"]))
                c.add(model, "fwd", n * runs * generations * DE_CHECK)
            else:
                c.add(model, "fwd", n * runs * de_evals(op["de"]))
    elif rule == "gradient_map":
        gr = config["gradients"]
        split = gr["split"][ds]
        start = int((gr.get("start") or {}).get(ds, 0))
        c.add(model, "grad", ctx.n(ds, gr["n_images"][ds], split, start) + 1)
    elif rule == "masked_pgd":
        n = _chunk(ctx.n(ds, mp["n_images"][ds]), mp["chunk_size"], wildcards["chunk"])
        attacks = (
            0  # distinct masks: k = 100 % is one mask whatever the kind, k = 0 attacks nothing
        )
        for k in mp["k_percent"]:
            attacks += 0 if float(k) == 0 else 1 if float(k) >= 100 else len(mp["masks"])
        for norm in ("linf", "l2"):
            if mp.get(norm):
                c.add(model, "grad", n * attacks * int(mp[norm]["steps"]))
                c.add(model, "fwd", n * attacks)
    elif rule == "train_prm":
        tr = pr["train"]
        img = tr["images"][ds]
        split, start = img["split"], int(img["start"])  # split is required, start filled (schema)
        stop = img.get("stop")
        n_train = ctx.n(ds, None if stop is None else int(stop) - start, split, start)
        per_epoch = math.ceil(n_train / int(tr["batch_size"]))
        steps = int(tr["epochs"]) * per_epoch
        if tr.get("max_steps"):
            steps = min(steps, int(tr["max_steps"]))
        full, rest = divmod(steps, per_epoch)  # an epoch's last batch holds what is left of it
        images = full * n_train + min(rest * int(tr["batch_size"]), n_train)
        c.add(model, "prm_grad", images)
        c.add(model, "grad", images)  # the frozen classifier, backpropagated through to the PRM
    elif rule == "prm_sweep":
        n = ctx.n(ds, pr["sweep"]["n_images"][ds])
        prms = 3 if pr.get("residual") else 2  # trained, untrained, fill-only (residual PRMs only)
        passes = n * len(pr["sweep"]["lambdas"]) * prms
        c.add(model, "grad", passes)
        c.add(model, "prm_grad", passes)
    elif rule == "defense_eval":
        n = _chunk(ctx.n(ds, de["n_images"][ds]), de["chunk_size"], wildcards["chunk"])
        defense_units(config, model, wildcards["attack"], n, hw, c)
    elif rule == "attack_ssim":
        n = _chunk(ctx.n(ds, ss["n_images"][ds]), ss["chunk_size"], wildcards["chunk"])
        c.add(model, "ssim_step", n * len(ss["epsilons"]) * int(ss["steps"]))
        for norm in ("linf", "l2"):
            p = (ss.get("pgd") or {}).get(norm)
            if p:
                c.add(model, "grad", n * len(p["eps"]) * int(p["steps"]))
                c.add(model, "fwd", n * len(p["eps"]))
        c.add(model, "fwd", n)
    elif rule == "cam":
        n = _chunk(ctx.n(ds, ss["n_images"][ds]), ss["chunk_size"], wildcards["chunk"])
        c.add(model, "grad", n * (2 + 2 * len([v for v in (ss.get("pgd") or {}).values() if v])))
    elif rule == "four_maps":
        n = ctx.n(ds, op["n_images"][ds])
        cap = (sy.get("n_images") or {}).get(ds)
        n = n if cap is None else min(n, int(cap))
        c.add(model, "ssim_step", n * int(ss["steps"]))
        c.add(model, "grad", 2 * n)
    return c


def stage_of(rule: str) -> str:
    return RULE_STAGE.get(rule, "data, weights, tables, figures")


# ----------------------------------------------------------------------------------------------
# Calibration: per-unit seconds on this machine, cached
# ----------------------------------------------------------------------------------------------


def machine_key(device, threads: int) -> str:
    # lazy: cost imports fast (the workflow's main process estimates with it); torch ~1 s
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = str(device)
    if getattr(device, "type", str(device)).startswith("cuda"):
        dev += " " + torch.cuda.get_device_name(device)
    return f"{platform.node()} | {cpu} | torch {torch.__version__} | {dev} | {threads} threads"


def model_key(spec: dict, config: dict, batch: int, units: Iterable[str]) -> str:
    prm = (
        {k: config["prm"][k] for k in ("depth", "start_filters", "residual", "first_conv")}
        if "prm_fwd" in units
        else {}
    )
    ssim = (
        {
            k: config["ssim"].get(k)
            for k in (
                "window",
                "stride",
                "tol",
                "max_iter",
                "luminance",
                "epsilons",
                "loss",
                "k1",
                "k2",
            )
        }
        if "ssim_step" in units
        else {}
    )
    return json.dumps(
        {
            "model": spec["name"],
            "arch": spec["arch"],
            "depth": spec.get("depth"),
            "classes": spec.get("num_classes"),
            "input_size": spec.get("input_size"),
            "crop": spec.get("crop"),
            "batch": batch,
            "prm": prm,
            "ssim": ssim,
            **({"bf16": True} if "fwd_bf16" in units else {}),  # keys without it stay valid
            **({"incremental": INCREMENTAL_UNIT} if "fwd_incremental" in units else {}),
        },
        sort_keys=True,
    )


def _timed(fn, device, repeats: int = 1, warmup: bool = True) -> float:
    """Seconds ``fn`` takes (the best of ``repeats``). On a GPU: wall time. On the CPU: the process's CPU
    time on one thread (:func:`calibrate`), so that other programs on a shared machine do not inflate
    the estimate; the run's extra threads are assumed to bring nothing (conservative)."""
    # lazy: cost imports fast (the workflow's main process estimates with it); torch ~1 s
    import torch

    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
        else:
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
    return best


def calibration_batch(hw: tuple[int, int], batch_size: int) -> int:
    """Images per timed batch: the run's batch size, at most 32 (CIFAR-sized) or 64 (larger images: per
    image, MobileNetV2 at 224 px costs about twice as much at the jobs' batch of 256 as at a batch of 4 on a
    2-core CPU, the activations no longer fitting in cache; 64 is close to the jobs' rate)."""
    return max(1, min(int(batch_size), 32 if hw[0] * hw[1] <= 64 * 64 else 64))


def measure_model(spec: dict, config: dict, device, units: Iterable[str]) -> dict[str, float]:
    """Seconds per image of each of ``units`` for one model (untrained weights: the cost is the same)."""
    # lazy: cost imports fast (the workflow's main process estimates with it); torch ~1 s
    import torch

    from .models import build_model, probe_side

    config = filled(config)
    units = set(units)
    side = probe_side(spec)
    hw = (side, side) if isinstance(side, int) else tuple(side)
    b = calibration_batch(hw, config["batch_size"])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((b, 3, *hw), generator=gen).to(device)
    model = build_model(spec, None, device)
    out = {}

    def fwd(m):
        with torch.no_grad():
            m(x)

    def grad(m):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(m(xg).sum(), xg)
        return g

    out["fwd"] = (
        _timed(lambda: fwd(model), device, repeats=3) / b
    )  # best of 3: single timings varied 1.5x
    out["grad"] = _timed(lambda: grad(model), device, repeats=3) / b
    if "fwd_bf16" in units:
        # lazy: onepixel imports torch (cost imports fast)
        from .onepixel import low_precision_dtype

        low = low_precision_dtype(device)  # None: the bf16 DE runs its fp32 path there
        if low is None:
            out["fwd_bf16"] = out["fwd"]
        else:
            from .models import low_precision_scorer  # lazy: as above

            # the bf16 DE scores on the batch-norm-folded copy
            scorer = low_precision_scorer(model)[0]

            def fwd_low():
                with torch.autocast(device.type, dtype=low):
                    fwd(scorer)

            out["fwd_bf16"] = _timed(fwd_low, device, repeats=3) / b
    if units & {"fwd_incremental", "incremental_check"}:
        runs, per = _incremental_cost(model, x, b, device, out["fwd"])
        out["fwd_incremental"], out["incremental_check"] = per, out["fwd"] if runs else 0.0
    if units & {"prm_fwd", "prm_grad"}:
        # lazy: prm imports cost (a cycle) and torch
        from .prm import PRM, max_depth

        pc = config["prm"]
        depth = min(int(pc["depth"]), max_depth(pc["lattice"], *hw))
        prm = PRM(
            pc["lattice"],
            depth=depth,
            start_filters=int(pc["start_filters"]),
            residual=bool(pc["residual"]),
            first_conv=pc["first_conv"],
        ).to(device)
        out["prm_fwd"] = _timed(lambda: fwd(prm), device) / b
        out["prm_grad"] = _timed(lambda: grad(prm), device) / b
    if "ssim_step" in units:
        # lazy: ssim_ball imports torch (cost imports fast)
        from .ssim_ball import SSIMBall

        ss = config["ssim"]
        eps = sorted(float(e) for e in ss["epsilons"])[len(ss["epsilons"]) // 2]
        attack = SSIMBall(
            model,
            eps,
            size=int(ss["window"]),
            stride=int(ss["stride"]),
            luminance=bool(ss["luminance"]),
            steps=1,
            loss=ss["loss"],
            solver="admm",
            tol=float(ss["tol"]),
            max_iter=int(ss["max_iter"]),
        )
        xs, ys = x[:1], model(x[:1]).argmax(1).detach()
        out["ssim_step"] = _timed(lambda: attack.run(xs, ys), device, warmup=False)
    return out


def _incremental_cost(model, x, b: int, device, fwd: float) -> tuple[bool, float]:
    """(runs, seconds per candidate) of the exhaustive map's incremental path (``onepixel.
    incremental``: auto) for ``model``: ``b`` one-pixel candidates of one image (random pixels,
    corner colours), its clean cache prepared first and the pixels' plan made by the untimed
    warm-up, as the map's later images reuse it; one thread's CPU time, as every unit
    (:func:`calibrate`). (False, ``fwd``) where the path does not run (CUDA, other models)."""
    # lazy: incremental imports torch (cost imports fast)
    import torch

    from .incremental import Incremental, supports
    from .onepixel import make_palette

    if device.type != "cpu" or not supports(model):
        return False, fwd
    h, w = x.shape[-2:]
    pix = torch.randperm(h * w, generator=torch.Generator().manual_seed(1))[:b]
    palette = make_palette("corners")
    colours = palette[torch.arange(b) % len(palette)]
    inc = Incremental(model).prepare(x[0])
    return True, _timed(lambda: inc(pix // w, pix % w, colours), device, repeats=3) / b


def measure_job_start() -> float:
    """CPU seconds a job's interpreter takes to start and import the library and torch (CPU time: a
    busy machine does not inflate it)."""
    # lazy: resource is Unix-only and only this measurement needs it
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, "-c", "import torch, torchvision, pandas, pixelrobust.models"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def calibrate(
    specs: dict[str, dict],
    config: dict,
    cache_path,
    units: dict[str, set[str]] | None = None,
    measure: Callable = measure_model,
    measure_start: Callable = measure_job_start,
) -> dict:
    """Per-unit seconds ``{model: {unit: s}}`` plus ``{"job": s}`` for ``specs`` on the config's device,
    timed on one thread on the CPU (all of ``config["threads"]`` on a GPU); cached in ``cache_path`` (JSON) under :func:`machine_key` and
    :func:`model_key`, measured only when missing."""
    # lazy: cost imports fast (the workflow's main process estimates with it); torch ~1 s
    import torch

    from .runtime import resolve_device

    device = resolve_device(config["device"])
    threads = int(config["threads"])
    mkey = machine_key(device, threads)
    cache_path = Path(cache_path)
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    entry = cache.setdefault(mkey, {})
    result: dict = {"models": {}}
    changed = False
    old_threads = torch.get_num_threads()
    # CPU: timed on one thread and taken as the run's per-unit cost, its other threads assumed to bring
    # nothing (conservative: the 2-thread P1 search measured 0.66-0.82 ms per ResNet-20 evaluation,
    # docs/p1.md "Cost", against 0.67 ms of one thread's CPU time here)
    scale = 1.0
    try:
        torch.set_num_threads(1 if device.type != "cuda" else threads)
        for name, spec in specs.items():
            asked = (units or {}).get(name, set())
            want = (
                {"fwd", "grad"}
                | ({"prm_fwd", "prm_grad"} if asked & {"prm_fwd", "prm_grad"} else set())
                | ({"ssim_step", "fwd_bf16"} & asked)
                | (
                    {"fwd_incremental", "incremental_check"}
                    if asked & {"fwd_incremental"}
                    else set()
                )
            )
            key = model_key(spec, config, config["batch_size"], want)
            if key not in entry:
                entry[key] = measure(spec, config, device, want)
                changed = True
            result["models"][name] = {u: v * scale for u, v in entry[key].items()}
        if "job" not in entry:
            entry["job"] = measure_start()
            changed = True
        result["job"] = entry["job"]
    finally:
        torch.set_num_threads(old_threads)
    if changed:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(cache_path)
    result["machine"] = mkey
    return result


# ----------------------------------------------------------------------------------------------
# The estimate
# ----------------------------------------------------------------------------------------------


def estimate(
    jobs: Iterable[tuple[str, dict]], config: dict, ctx: Context, costs: dict, parallel: int = 1
) -> dict:
    """Seconds per stage and in all for ``jobs`` (rule, wildcards) with per-unit ``costs``
    (:func:`calibrate`); jobs run ``parallel`` at a time (the wall time divides by it)."""
    stages = {s: {"jobs": 0, "seconds": 0.0} for s in STAGES}
    for rule, wc in jobs:
        c = job_units(rule, dict(wc), config, ctx)
        secs = c.jobs * costs["job"]
        for model, per in c.units.items():
            unit_cost = costs["models"][model]
            secs += sum(n * unit_cost[u] for u, n in per.items())
        s = stages[stage_of(rule)]
        s["jobs"] += 1
        s["seconds"] += secs
    total = sum(s["seconds"] for s in stages.values())
    return {
        "stages": stages,
        "cpu_seconds": total,
        "wall_seconds": total / max(1, parallel),
        "parallel": max(1, parallel),
    }


def needed_units(
    jobs: Iterable[tuple[str, dict]], config: dict, ctx: Context
) -> dict[str, set[str]]:
    """The units each model's jobs use (calibration measures only those)."""
    need: dict[str, set[str]] = {}
    for rule, wc in jobs:
        for model, per in job_units(rule, dict(wc), config, ctx).units.items():
            need.setdefault(model, set()).update(per)
    return need


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_estimate(est: dict, machine: str = "") -> str:
    lines = [
        f"Estimated wall time of this run: {_hms(est['wall_seconds'])} (h:mm:ss)"
        + (f" on {machine}" if machine else ""),
        f"  {'stage':<32} {'jobs':>5} {'time':>10}",
    ]
    for name, s in est["stages"].items():
        if s["jobs"]:
            lines.append(f"  {name:<32} {s['jobs']:>5} {_hms(s['seconds'] / est['parallel']):>10}")
    lines.append(
        "  (evaluation counts of the jobs still to run, every DE run, minimal attack and SSIM-ball attack at "
        "its whole budget: an upper bound on evaluations; x one thread's CPU time per evaluation from timed "
        "batches: on a 2-core CPU the tiny config's jobs and a ResNet-20 P1 image took 0.8-1.2x their "
        "estimate (not checked at ImageNet size, nor with two threads per job); "
        "config key estimate: false turns this off)"
    )
    return "\n".join(lines)


def snakemake_estimate(
    workflow,
    config: dict,
    models: dict,
    available: Callable[[str, str], int | None],
    out_path="results/logs/estimate.txt",
    cache_path="resources/cost/calibration.json",
) -> dict | None:
    """The Snakefile's onstart hook: estimate the jobs Snakemake is about to run, print and write it.

    An estimate that cannot be made (an unexpected config, a calibration error) is reported as a
    warning and the run goes on: the estimate informs, it never stops a run. With ``estimate: only``
    the run stops after it (:func:`stop_after_estimate`)."""
    try:
        est = _snakemake_estimate(workflow, config, models, available, out_path, cache_path)
    except Exception as e:  # noqa: BLE001 - reported, and the run proceeds
        print(
            f"pixelrobust: no cost estimate ({type(e).__name__}: {e}); set estimate: false to skip it",
            file=sys.stderr,
            flush=True,
        )
        est = False
    if config.get("estimate") == "only":
        stop_after_estimate(est)
    return est or None


def stop_after_estimate(est: dict | bool | None) -> NoReturn:
    """``estimate: only``: end the run before its first job: exit 0 after an estimate (or when nothing is left to
    run), 1 when the estimate failed (the reason is printed above), so a script never reads a failure as a cost."""
    if est is False:
        print(
            "pixelrobust: estimate: only, and no estimate could be made (above); nothing was run",
            file=sys.stderr,
        )
        sys.exit(1)
    what = "nothing is left to run" if est is None else "the estimate above"
    print(
        f"pixelrobust: estimate: only: {what}; no job was run (estimate: true runs them)",
        file=sys.stderr,
    )
    sys.exit(0)


def _snakemake_estimate(workflow, config, models, available, out_path, cache_path) -> dict | None:
    # lazy: models imports torch (cost imports fast)
    from .models import probe_side

    jobs = [(job.rule.name, dict(job.wildcards_dict)) for job in workflow.dag.needrun_jobs()]
    if not jobs:
        return None
    sizes = {}
    for name, spec in models.items():
        side = probe_side(spec)
        sizes[name] = (side, side) if isinstance(side, int) else tuple(side)
    ctx = Context({n: s["dataset"] for n, s in models.items()}, sizes, available)
    jobs = [
        (r, w) for r, w in jobs if r in RULE_STAGE or not w.get("model") or w.get("model") in models
    ]
    need = needed_units(jobs, config, ctx)
    t0 = time.perf_counter()
    costs = calibrate({m: models[m] for m in need}, config, cache_path, need)

    def number(v):  # a Snakemake Resource or a plain number
        try:
            return int(getattr(v, "raw", v))
        except (TypeError, ValueError):
            return None

    cores = number(getattr(getattr(workflow, "resource_settings", None), "cores", None)) or 1
    gpus = number((getattr(workflow, "global_resources", None) or {}).get("gpu"))
    parallel = max(1, cores // max(1, int(config["threads"])))
    if gpus:
        parallel = min(parallel, gpus)  # every compute rule takes one gpu
    est = estimate(jobs, config, ctx, costs, parallel)
    est["calibration_seconds"] = time.perf_counter() - t0
    text = format_estimate(est, costs["machine"])
    print(text, file=sys.stderr, flush=True)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(text + "\n")
    return est


# ----------------------------------------------------------------------------------------------
# Progress lines for long loops
# ----------------------------------------------------------------------------------------------


class Progress:
    """``step()`` after each unit of a loop; logs ``what: done/total (p %), elapsed, ETA`` at most every
    ``every_s`` seconds (and at the end) through the ``pixelrobust`` logger (the job's log file). The ETA
    assumes the remaining units cost what the done ones did on average: rough where they do not (the
    defence table's first cell, ``none``, has no EOT; cached or skipped images are near free)."""

    def __init__(
        self,
        what: str,
        total: int,
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.what, self.total, self.every_s, self.clock = what, int(total), float(every_s), clock
        self.done = 0
        self.t0 = self.last = clock()

    def line(self) -> str:
        elapsed = self.clock() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"progress {self.what}: {self.done}/{self.total} ({pct:.0f} %), elapsed {_hms(elapsed)}, "
            f"ETA {_hms(eta) if math.isfinite(eta) else '?'}"
        )

    @classmethod
    def over(cls, what: str, items, every_s: float = 60.0):
        """Yield ``items`` (a sized iterable), stepping after each one is done (also after ``continue``)."""
        items = list(items)
        progress = cls(what, len(items), every_s)
        for item in items:
            yield item
            progress.step()

    def step(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if self.done >= self.total or now - self.last >= self.every_s:
            self.last = now
            log.info(self.line())
