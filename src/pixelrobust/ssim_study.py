"""P2's study: SSIM-ball attacks over an ε sweep beside L2 / L∞ PGD, on correctly classified images.

Rule ``attack_ssim`` (:func:`attack_ssim`) attacks one chunk: the SSIM ball at every ε and PGD
at every budget of its grids; per image it records success, prediction, mean SSIM
(``skimage.metrics.structural_similarity``, 7×7 windows, data range 1), L2 and L∞ of δ, steps and
seconds; it keeps the SSIM-ball adversarial images at the comparison ε for the maps.
Rule ``ssim_tables`` (:func:`ssim_tables`) merges the chunks into ``ssim_attack.csv`` and picks, for
each PGD norm, the budget whose success rate is closest to the SSIM ball's at the comparison ε
(``ssim_matched.csv``: PGD "at matched success", ours). Rule ``ssim_solver_check``
(:func:`solver_check`) poses the first attack step of a few images to the fast solver and to CVXPY.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pandas as pd
import torch
from skimage.metrics import structural_similarity

from .cost import Progress
from .data import load_split
from .evaluate import predict
from .gradients import loss_gradient
from .io import save_npz, write_table
from .models import build_model, freeze
from .pgd import PGD
from .runtime import derive_seed, model_device
from .ssim_ball import SSIMBall, SSIMBallProblem, solve

log = logging.getLogger("pixelrobust")

IMAGE_COLUMNS = [
    "image_id",
    "label",
    "attack",
    "epsilon",
    "success",
    "pred",
    "ssim",
    "l2",
    "linf",
    "steps",
    "gap",
    "seconds",
]
TABLE_COLUMNS = [
    "attack",
    "epsilon",
    "n_images",
    "success_rate",
    "mean_ssim",
    "mean_l2",
    "mean_linf",
]
MATCHED_COLUMNS = ["attack", "epsilon", "success_rate", "ssim_epsilon", "ssim_success_rate"]
CHECK_COLUMNS = [
    "solver",
    "image_size",
    "n_images",
    "seconds_per_image",
    "objective",
    "max_violation",
    "gap_to_reference",
]
ATTACKS = ("ssim_ball", "pgd_linf", "pgd_l2")


def mean_ssim(x: torch.Tensor, adv: torch.Tensor, full: bool = False):
    """skimage SSIM of two C×H×W images in [0, 1] (channels averaged); with ``full`` also the H×W map."""
    a = x.detach().double().cpu().permute(1, 2, 0).numpy()
    b = adv.detach().double().cpu().permute(1, 2, 0).numpy()
    if full:
        score, smap = structural_similarity(a, b, channel_axis=2, data_range=1.0, full=True)
        return float(score), smap.mean(2)
    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0))


def pgd_settings(pgd: dict, norm: str, eps: float, seed: int) -> dict:
    s = pgd[norm]
    return {
        "eps": eps,
        "alpha": eps * s["alpha_factor"],
        "steps": s["steps"],
        "norm": norm,
        "random_start": s["random_start"],
        "seed": seed,
    }


def run_pgd(
    model, x, y, pgd: dict, norm: str, eps: float, seed: int, batch_size: int, image_ids
) -> torch.Tensor:
    """PGD at one budget, batch by batch; each image's random start seeded from ``seed`` and its id
    (``image_ids``), so an image gets the same start whatever its batch or chunk, in rule
    ``attack_ssim`` and again in rule ``cam``."""
    ids = list(image_ids)
    if len(ids) != len(x):
        raise ValueError(f"run_pgd: {len(ids)} image ids for {len(x)} images")
    out = []
    for i in range(0, len(x), batch_size):
        starts = [derive_seed(seed, "pgd_start", j) for j in ids[i : i + batch_size]]
        out.append(
            PGD(model, **pgd_settings(pgd, norm, eps, seed))(
                x[i : i + batch_size], y[i : i + batch_size], seeds=starts
            )
        )
    return torch.cat(out) if out else x.clone()


def _rows(model, ids, x, y, adv, attack, eps, steps, gap, seconds, batch_size) -> list[dict]:
    pred = predict(model, adv, batch_size, adv.device).argmax(1)
    d = (adv - x).flatten(1).cpu().double()
    return [
        {
            "image_id": ids[i],
            "label": int(y[i]),
            "attack": attack,
            "epsilon": float(eps),
            "success": bool(pred[i] != y[i].cpu()),
            "pred": int(pred[i]),
            "ssim": mean_ssim(x[i], adv[i]),
            "l2": float(d[i].norm()),
            "linf": float(d[i].abs().max()),
            "steps": int(steps[i]),
            "gap": float(gap[i]),
            "seconds": seconds,
        }
        for i in range(len(ids))
    ]


def attack_ssim_chunk(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    ids: list[str],
    *,
    epsilons: list[float],
    ball: dict,
    pgd: dict,
    compare_epsilon: float,
    seed: int,
    batch_size: int,
):
    """All attacks on the correctly classified images of one chunk: (per-image table, kept adversarials)."""
    device = model_device(model)
    pred = predict(model, images, batch_size, device).argmax(1)
    keep = (pred == labels).nonzero()[:, 0]
    x, y = images[keep].to(device), labels[keep].to(device)
    kid = [ids[int(i)] for i in keep]
    log.info("%d of %d images correctly classified; attacking those", len(keep), len(images))
    rows, kept = [], {}
    zero = np.zeros(len(kid))
    for eps in Progress.over("SSIM-ball attacks, epsilons", epsilons):
        advs, steps, gaps, t0 = [], [], [], time.perf_counter()
        for i in range(0, len(x), batch_size):
            r = SSIMBall(model, eps, **ball).run(x[i : i + batch_size], y[i : i + batch_size])
            advs.append(r["adv"]), steps.append(r["steps"]), gaps.append(r["gap"])
        adv = torch.cat(advs) if advs else x.clone()
        per = (time.perf_counter() - t0) / max(len(x), 1)
        rows += _rows(
            model,
            kid,
            x,
            y,
            adv,
            "ssim_ball",
            eps,
            torch.cat(steps) if steps else zero,
            torch.cat(gaps) if gaps else zero,
            per,
            batch_size,
        )
        if math.isclose(eps, compare_epsilon):
            kept = {"ssim_ball": adv.cpu().numpy().astype(np.float32)}
        log.info(
            "ssim_ball eps=%g: %d/%d fooled, %.2f s/image",
            eps,
            sum(r["success"] for r in rows[-len(kid) :]) if kid else 0,
            len(kid),
            per,
        )
    for norm in ("linf", "l2"):
        for eps in pgd[norm]["eps"]:
            t0 = time.perf_counter()
            adv = run_pgd(model, x, y, pgd, norm, eps, seed, batch_size, kid)
            per = (time.perf_counter() - t0) / max(len(x), 1)
            rows += _rows(
                model,
                kid,
                x,
                y,
                adv,
                f"pgd_{norm}",
                eps,
                [pgd[norm]["steps"]] * len(kid),
                zero,
                per,
                batch_size,
            )
    table = pd.DataFrame(rows, columns=IMAGE_COLUMNS)
    if not kept:
        kept = {"ssim_ball": np.zeros((0,) + tuple(images.shape[1:]), np.float32)}
    return table, {**kept, "image_id": np.asarray(kid, dtype=str), "label": y.cpu().numpy()}


def attack_ssim(
    *,
    data,
    weights,
    out: dict,
    spec: dict,
    bounds: tuple[int, int],
    epsilons,
    ball,
    pgd,
    compare_epsilon,
    batch_size: int,
    seed: int,
    device,
) -> None:
    """Rule ``attack_ssim``: test images ``bounds`` (start, stop) of one model; the per-image table to
    ``out["csv"]``, the adversarial images to ``out["npz"]``."""
    split = load_split(data, "test", *bounds)
    model = freeze(build_model(spec, weights, device))
    table, kept = attack_ssim_chunk(
        model,
        split.images,
        split.labels,
        list(split.ids),
        epsilons=epsilons,
        ball=ball,
        pgd=pgd,
        compare_epsilon=compare_epsilon,
        seed=seed,
        batch_size=batch_size,
    )
    save_npz(out["npz"], **kept)
    write_table(table, out["csv"], float_format="%.8g")


def summarise(per_image: pd.DataFrame) -> pd.DataFrame:
    g = per_image.groupby(["attack", "epsilon"], sort=False)
    t = g.agg(
        n_images=("success", "size"),
        success_rate=("success", "mean"),
        mean_ssim=("ssim", "mean"),
        mean_l2=("l2", "mean"),
        mean_linf=("linf", "mean"),
    ).reset_index()
    order = {a: i for i, a in enumerate(ATTACKS)}
    t = t.sort_values(
        ["attack", "epsilon"],
        key=lambda s: s.map(order) if s.name == "attack" else s,
        kind="stable",
    )
    return t[TABLE_COLUMNS].reset_index(drop=True)


def match_pgd(table: pd.DataFrame, compare_epsilon: float) -> pd.DataFrame:
    """For each PGD norm, the budget whose success rate is closest to the SSIM ball's at ``compare_epsilon``
    (ties: the smaller budget)."""
    ssim = table[(table.attack == "ssim_ball") & np.isclose(table.epsilon, compare_epsilon)]
    if ssim.empty:
        raise ValueError(
            f"ssim.compare.epsilon {compare_epsilon} is not among the SSIM-ball epsilons of the table"
        )
    target = float(ssim.success_rate.iloc[0])
    rows = []
    for attack in ("pgd_linf", "pgd_l2"):
        t = table[table.attack == attack].copy()
        t["dist"] = (t.success_rate - target).abs()
        best = t.sort_values(["dist", "epsilon"]).iloc[0]
        rows.append(
            {
                "attack": attack,
                "epsilon": float(best.epsilon),
                "success_rate": float(best.success_rate),
                "ssim_epsilon": float(compare_epsilon),
                "ssim_success_rate": target,
            }
        )
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS)


def ssim_tables(*, csv: list[str], out: dict, compare_epsilon: float) -> pd.DataFrame:
    """Rule ``ssim_tables``: the attack_ssim chunk tables ``csv`` merged into ``ssim_attack.csv``/``.md``
    and ``ssim_matched.csv``/``.md``."""
    per_image = pd.concat([pd.read_csv(p, dtype={"image_id": str}) for p in csv], ignore_index=True)
    if per_image.empty:
        raise ValueError("no correctly classified image was attacked; raise ssim.n_images")
    table = summarise(per_image)
    write_table(table, out["csv"], out["md"], float_format="%.6g")
    write_table(
        match_pgd(table, compare_epsilon),
        out["matched"],
        out.get("matched_md"),
        float_format="%.6g",
    )
    return table


def solver_check(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epsilon: float,
    ball: dict,
    crop: int,
    solvers: list[str],
    tol: float,
) -> pd.DataFrame:
    """The first attack step of each image (margin gradient at the clean image, centre ``crop``) solved by
    the fast solver and by each CVXPY solver; objective gap to the first CVXPY solver (the reference)."""
    device = model_device(model)
    x, y = images.to(device), labels.to(device)
    g = loss_gradient(model, x, y, ball["loss"])
    H, W = x.shape[-2:]
    c = min(crop, H, W)
    top, left = (H - c) // 2, (W - c) // 2
    xs, gs = (
        x[..., top : top + c, left : left + c].double(),
        g[..., top : top + c, left : left + c].double(),
    )
    geom = {k: ball[k] for k in ("size", "stride", "luminance", "k1", "k2") if k in ball}
    prob = SSIMBallProblem(xs, gs, epsilon, **geom)
    results = {"admm": solve(prob, "admm", tol=tol)}
    for s in solvers:
        results[s] = solve(prob, s)
    ref = results[solvers[0]].objective  # the schema asks for at least one CVXPY solver
    rows = []
    for name, sol in results.items():
        gap = float(((ref - sol.objective).abs() / ref.abs().clamp_min(1e-30)).max())
        rows.append(
            {
                "solver": name,
                "image_size": c,
                "n_images": len(x),
                "seconds_per_image": sol.seconds / len(x),
                "objective": float(sol.objective.mean()),
                "max_violation": float(sol.violation.max()),
                "gap_to_reference": gap,
            }
        )
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def ssim_solver_check(
    *,
    data,
    weights,
    out: dict,
    spec: dict,
    n_images: int,
    epsilon,
    ball,
    crop,
    solvers,
    tol,
    device,
) -> None:
    """Rule ``ssim_solver_check``: fast solver against CVXPY on the first images' first step; the table
    to ``out["csv"]`` and ``out["md"]``."""
    split = load_split(data, "test", 0, n_images)
    model = freeze(build_model(spec, weights, device))
    table = solver_check(
        model,
        split.images,
        split.labels,
        epsilon=epsilon,
        ball=ball,
        crop=crop,
        solvers=solvers,
        tol=tol,
    )
    bad = table[
        (table.solver == "admm") & ((table.max_violation > 1e-4) | (table.gap_to_reference > 0.01))
    ]
    if not bad.empty:  # no table is written: a failed check is not a result
        raise RuntimeError(
            f"the fast SSIM-ball solver disagrees with CVXPY beyond 1 % or violates a bound by > 1e-4:\n{table}"
        )
    write_table(table, out["csv"], out["md"], float_format="%.8g")


__all__ = [
    "ATTACKS",
    "IMAGE_COLUMNS",
    "TABLE_COLUMNS",
    "attack_ssim",
    "attack_ssim_chunk",
    "match_pgd",
    "mean_ssim",
    "run_pgd",
    "solver_check",
    "ssim_solver_check",
    "ssim_tables",
    "summarise",
]
