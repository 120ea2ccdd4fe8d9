"""Benchmark: the fast SSIM-ball solver against CVXPY (Clarabel, SCS) on the same 224×224 problems, one run.

    ./with-venv python bench/ssim_ball/run.py [--n-images 2] [--epsilon 0.001] [--window 8 --stride 8]
        [--solvers clarabel,scs] [--batch 16] [--device auto]

The problems are P2's first attack step on the first ``--n-images`` correctly classified ImageNet
sample images: ImageNet MobileNetV2's margin-loss gradient at the clean image, maximised over the
SSIM ball (``pixelrobust.ssim_ball``, luminance and structure bounds per window, the box). Each
CVXPY solver solves every image once (float64, its default tolerances); the fast solver (ADMM,
stopping at a certified relative gap ``--tol``) solves the images one at a time, three rounds
with the median kept, and, with ``--batch``, a batch of that many images at once (GPU: the
issue's batch of 16). Writes results/benchmarks/ssim_ball.csv (+ .md) with columns
``solver,image_size,n_images,seconds_per_image,objective,max_violation`` (+ ``gap_to_reference``:
relative objective gap to the first CVXPY solver's optimum, largest over images; ``speedup``: the
best CVXPY solver's seconds per image / this row's; ``device``, ``threads``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch

from pixelrobust import data, models
from pixelrobust.io import write_table
from pixelrobust.runtime import resolve_device
from pixelrobust.ssim_ball import SSIMBallProblem, loss_gradient, solve_admm, solve_cvxpy

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from common import correct_images, resources, timed  # noqa: E402


def problems(n: int, n_pool: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    d, w = resources(REPO / "results" / "benchmarks" / "_work", "imagenet", "mobilenet_v2_imagenet")
    model = models.build_model(models.resolve_spec("mobilenet_v2_imagenet", {}), w, device)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = correct_images(model, data.load_split(d, "test", 0, n_pool), n, device)
    x, y = x.to(device), y.to(device)
    return x, loss_gradient(model, x, y, "margin")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=2)
    ap.add_argument("--epsilon", type=float, default=0.00001)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--tol", type=float, default=0.005)
    ap.add_argument("--solvers", default="clarabel,scs")
    ap.add_argument("--batch", type=int, default=0, help="also solve this many images as one batch (0: skip)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "ssim_ball.csv"))
    args = ap.parse_args()
    device = resolve_device(args.device)
    n_all = max(args.n_images, args.batch)
    x, g = problems(n_all, 100, device)
    geom = {"epsilon": args.epsilon, "size": args.window, "stride": args.stride}
    rows, ref = [], None
    solvers = [s for s in args.solvers.split(",") if s]
    n = args.n_images
    for solver in solvers:  # CVXPY: float64 on the CPU, one image at a time
        p = SSIMBallProblem(x[:n].double().cpu(), g[:n].double().cpu(), **geom)
        sol = solve_cvxpy(p, solver)
        obj = sol.objective
        ref = obj if ref is None else ref
        rows.append({"solver": solver, "image_size": x.shape[-1], "n_images": n, "seconds_per_image": sol.seconds / n,
                     "objective": float(obj.mean()), "max_violation": float(sol.violation.max()),
                     "gap_to_reference": float(((ref - obj) / ref).abs().max())})
        print(rows[-1], flush=True)
    # ours, one image at a time (float32 on the device); the median of three rounds
    times, objs, viols = [], None, None
    for _ in range(3):
        total, o, v = 0.0, [], []
        for i in range(n):
            p = SSIMBallProblem(x[i : i + 1], g[i : i + 1], **geom)
            sol, sec = timed(lambda: solve_admm(p, tol=args.tol))
            total += sec
            o.append(sol.objective.double().cpu()), v.append(sol.violation.double().cpu())
        times.append(total / n)
        objs, viols = torch.cat(o), torch.cat(v)
    gap = float(((ref - objs) / ref).abs().max()) if ref is not None else float("nan")
    rows.append({"solver": "admm", "image_size": x.shape[-1], "n_images": n, "seconds_per_image": statistics.median(times),
                 "objective": float(objs.mean()), "max_violation": float(viols.max()), "gap_to_reference": gap})
    print(rows[-1], flush=True)
    if args.batch:
        p = SSIMBallProblem(x[: args.batch], g[: args.batch], **geom)
        solve_admm(p, tol=args.tol)  # warm-up
        sol, sec = timed(lambda: solve_admm(p, tol=args.tol))
        rows.append({"solver": f"admm_batch{args.batch}", "image_size": x.shape[-1], "n_images": args.batch,
                     "seconds_per_image": sec / args.batch, "objective": float(sol.objective.mean()),
                     "max_violation": float(sol.violation.max()), "gap_to_reference": float("nan")})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    cvx = table[table.solver.isin(solvers)]
    best = cvx.seconds_per_image.min() if len(cvx) else float("nan")
    table["speedup"] = best / table.seconds_per_image
    table["epsilon"], table["window"], table["stride"], table["tol"] = args.epsilon, args.window, args.stride, args.tol
    table["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    table["threads"] = torch.get_num_threads()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_table(table, args.out, Path(args.out).with_suffix(".md"), float_format="%.6g")
    print(table.to_string())


if __name__ == "__main__":
    main()
