"""Benchmark: the fast SSIM-ball solver against CVXPY (Clarabel, SCS) on the same problems, one run.

    ./with-venv python bench/ssim_ball/run.py [--n-images 2] [--epsilon 1e-5] [--window 8 --stride 8]
        [--solvers clarabel,scs] [--tol 5e-3] [--cvx-tol T] [--batch 16] [--device auto] [--sizes 48,64,96]
        [--threads 1]

The problems are P2's first attack step on the first ``--n-images`` correctly classified ImageNet
sample images: ImageNet MobileNetV2's margin-loss gradient at the clean image, maximised over the
SSIM ball (``pixelrobust.ssim_ball``, luminance and structure bounds per window at ``--stride``,
overlapping when below ``--window``, and the box). Each CVXPY solver solves every image once, one
at a time (float64): at its default tolerances (row ``<solver>``) and stopped at ADMM's relative gap
(row ``<solver>_tol<T>``, ``--cvx-tol``, default ``--tol``; see :func:`matched_options`). The fast
solver (ADMM, stopping at a certified relative gap ``--tol``) solves the images one at a time, three
rounds with the median kept, and, with ``--batch``, a batch of that many images at once (GPU: the
issue's batch of 16). Both are timed with their problem building: CVXPY's build + canonicalisation
(``build_seconds``) and ADMM's ``SSIMBallProblem`` construction. Without ``--sizes`` everything runs
on the full 224×224 images. With ``--sizes`` (centre crops of those sides) both run on each crop,
the fast solver also on the full image, and each CVXPY row's seconds are projected to the full size
by a power law in the pixel count fitted to its crops (rows ``<row>_projected``; ``--solvers none``:
the fast solver alone). Writes results/benchmarks/ssim_ball.csv (+ .md; ``--out``) with columns
``solver,image_size,n_images,seconds_per_image`` (mean over images, wall time including the problem
building) ``,build_seconds,solver_seconds`` (CVXPY: the solver's own ``solve_time`` from its stats;
ADMM: ``solve_admm`` alone) ``,iterations,objective,max_violation,gap_to_reference`` (relative
objective gap to the first CVXPY solver's default-tolerance optimum at the same size, largest over
images) ``,certified_gap`` (ADMM's own (bound − objective)/bound, largest over images)
``,tolerance,exponent,speedup`` (the fastest CVXPY row's ``seconds_per_image`` at the same size /
this row's: like for like) ``,speedup_vs_solve_time`` (the fastest CVXPY row's ``solver_seconds`` /
this row's ``seconds_per_image``: CVXPY's overhead not counted, the conservative ratio)
``,cpu_seconds_per_image`` (CPU seconds of the process, ``time.process_time``, for the same work
as ``seconds_per_image``) ``,cpu_solver_seconds`` (CVXPY: CPU seconds of ``solve`` after the
canonicalisation) ``,speedup_cpu,speedup_cpu_vs_solve`` (the same two ratios in CPU seconds: with
``--threads 1`` both solvers run on one thread, and on a machine shared with other jobs CPU
seconds depend far less than wall time on what else runs) ``,epsilon,window,stride,tol,device,threads``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pixelrobust import data, models
from pixelrobust.gradients import loss_gradient
from pixelrobust.io import write_table
from pixelrobust.runtime import resolve_device
from pixelrobust.ssim_ball import SSIMBallProblem, cvxpy_problem, solve_admm

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


def admm_rows(x, g, n, geom, tol, ref) -> dict:
    """ADMM on the first n problems one at a time, each timed with its problem construction
    (``SSIMBallProblem``: window indices, centred windows, radii, groups) and without it: the
    median of three rounds of the mean over images."""
    totals, solves, builds, cpus, objs, viols, gaps = [], [], [], [], None, None, None
    for _ in range(3):
        total, solve, build, cpu, o, v, c, its = 0.0, 0.0, 0.0, 0.0, [], [], [], []
        for i in range(n):
            c0 = time.process_time()
            p, b_sec = timed(lambda i=i: SSIMBallProblem(x[i : i + 1], g[i : i + 1], **geom))
            sol, sec = timed(lambda p=p: solve_admm(p, tol=tol))
            cpu += time.process_time() - c0
            total, solve, build = total + b_sec + sec, solve + sec, build + b_sec
            (
                o.append(sol.objective.double().cpu()),
                v.append(sol.violation.double().cpu()),
                c.append(sol.gap.double().cpu()),
            )
            its.append(sol.iterations)
        (
            totals.append(total / n),
            solves.append(solve / n),
            builds.append(build / n),
            cpus.append(cpu / n),
        )
        objs, viols, gaps = torch.cat(o), torch.cat(v), torch.cat(c)
    gap = float(((ref - objs) / ref).abs().max()) if ref is not None else float("nan")
    return {
        "solver": "admm",
        "image_size": x.shape[-1],
        "n_images": n,
        "seconds_per_image": statistics.median(totals),
        "build_seconds": statistics.median(builds),
        "solver_seconds": statistics.median(solves),
        "cpu_seconds_per_image": statistics.median(cpus),
        "cpu_solver_seconds": float("nan"),
        "iterations": statistics.mean(its),
        "objective": float(objs.mean()),
        "max_violation": float(viols.max()),
        "gap_to_reference": gap,
        "certified_gap": float(gaps.max()),
        "tolerance": tol,
    }


def matched_options(solver: str, tol: float, opt: float) -> dict:
    """Stopping options for a CVXPY solver at ADMM's relative gap ``tol``, generous to the solver.
    Clarabel stops when its duality gap is below ``tol_gap_abs`` or gap / max(1, |objective|) below
    ``tol_gap_rel``; the objectives here are far below 1, so both are set to ``tol``·|optimum| (the
    optimum from its default-tolerance run on the same image), and its relative feasibility
    ``tol_feas`` to ``tol`` too (ADMM's point is exactly feasible; see ``max_violation``).
    SCS: ``eps_abs``/``eps_rel`` = tol."""
    if solver == "clarabel":
        return {"tol_gap_abs": tol * abs(opt), "tol_gap_rel": tol * abs(opt), "tol_feas": tol}
    return {"eps_abs": tol, "eps_rel": tol}


def cvxpy_rows(x, g, n, geom, solvers, tol) -> tuple[list[dict], torch.Tensor | None]:
    """Each CVXPY solver on the first n problems (float64, CPU), one image at a time: at its default
    tolerances (row ``<solver>``) and at ADMM's relative gap (row ``<solver>_tol<tol>``; ``tol`` 0:
    skip). Per image: the CVXPY build + canonicalisation time (``build_seconds``: making the problem
    and ``get_problem_data``), the solver's own ``solve_time`` (``solver_seconds``, from the solver
    stats) and the wall time of both (``seconds_per_image``). The first solver's default-tolerance
    objectives are the reference."""
    import cvxpy as cp

    names = {"clarabel": cp.CLARABEL, "scs": cp.SCS}
    p = SSIMBallProblem(x[:n].double().cpu(), g[:n].double().cpu(), **geom)
    rows, ref = [], None
    for solver in solvers:
        opts_of = [("", lambda i, opt: {})] + (
            [(f"_tol{tol:g}", lambda i, opt, solver=solver: matched_options(solver, tol, opt))]
            if tol
            else []
        )
        default_obj = None
        for suffix, opts in opts_of:
            build, solve, wall, cpu, cpu_solve, iters, out = (
                [],
                [],
                [],
                [],
                [],
                [],
                torch.zeros_like(p.x),
            )
            for i in range(n):
                c0, t0 = time.process_time(), time.perf_counter()
                prob, d = cvxpy_problem(p, i)
                prob.get_problem_data(names[solver])  # CVXPY's canonicalisation, cached for solve()
                c1, t1 = time.process_time(), time.perf_counter()
                o = opts(i, float(default_obj[i]) if default_obj is not None else 0.0)
                prob.solve(solver=names[solver], **o)
                c2, t2 = time.process_time(), time.perf_counter()
                cpu.append(c2 - c0), cpu_solve.append(c2 - c1)
                if d.value is None or prob.status not in ("optimal", "optimal_inaccurate"):
                    raise RuntimeError(
                        f"CVXPY/{solver}{suffix} did not solve image {i}: status {prob.status}"
                    )
                out[i] = torch.from_numpy(np.asarray(d.value)).view(p.x.shape[1:]).to(p.x)
                (
                    build.append(t1 - t0),
                    wall.append(t2 - t0),
                    solve.append(float(prob.solver_stats.solve_time or math.nan)),
                )
                iters.append(prob.solver_stats.num_iters or 0)
            obj = p.objective(out)
            default_obj = obj if default_obj is None else default_obj
            ref = obj if ref is None else ref
            rows.append(
                {
                    "solver": solver + suffix,
                    "image_size": x.shape[-1],
                    "n_images": n,
                    "seconds_per_image": statistics.mean(wall),
                    "build_seconds": statistics.mean(build),
                    "solver_seconds": statistics.mean(solve),
                    "cpu_seconds_per_image": statistics.mean(cpu),
                    "cpu_solver_seconds": statistics.mean(cpu_solve),
                    "iterations": statistics.mean(iters),
                    "objective": float(obj.mean()),
                    "max_violation": float(p.violations(out).max()),
                    "gap_to_reference": float(((ref - obj) / ref).abs().max()),
                    "certified_gap": float("nan"),
                    "tolerance": tol if suffix else float("nan"),
                }
            )
            print(rows[-1], flush=True)
    return rows, ref


def crop(t: torch.Tensor, side: int) -> torch.Tensor:
    top, left = (t.shape[-2] - side) // 2, (t.shape[-1] - side) // 2
    return t[..., top : top + side, left : left + side].contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=2)
    ap.add_argument("--epsilon", type=float, default=0.00001)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--tol", type=float, default=0.005)
    ap.add_argument(
        "--cvx-tol",
        type=float,
        default=None,
        help="also run each CVXPY solver stopped at this relative gap (default: --tol, ADMM's; 0: skip)",
    )
    ap.add_argument(
        "--solvers",
        default="clarabel,scs",
        help="CVXPY solvers, comma separated ('none': ADMM only)",
    )
    ap.add_argument(
        "--sizes",
        default="",
        help="centre-crop sides for CVXPY and ADMM, then the projection to the full size",
    )
    ap.add_argument(
        "--batch", type=int, default=0, help="also solve this many images as one batch (0: skip)"
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 on a shared machine",
    )
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "ssim_ball.csv"))
    args = ap.parse_args()
    args.cvx_tol = args.tol if args.cvx_tol is None else args.cvx_tol
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    n_all = max(args.n_images, args.batch)
    x, g = problems(n_all, 100, device)
    geom = {"epsilon": args.epsilon, "size": args.window, "stride": args.stride}
    solvers = [s for s in args.solvers.split(",") if s and s != "none"]
    sizes = [int(v) for v in args.sizes.split(",") if v]
    n, full = args.n_images, x.shape[-1]
    rows = []
    for side in sizes:  # crops: CVXPY and ADMM on the same problems
        xs, gs = crop(x, side), crop(g, side)
        cvx, ref = cvxpy_rows(xs, gs, n, geom, solvers, args.cvx_tol)
        rows += cvx
        rows.append(admm_rows(xs, gs, n, geom, args.tol, ref))
        print(rows[-1], flush=True)
    cvx, ref = cvxpy_rows(x, g, n, geom, [] if sizes else solvers, args.cvx_tol)
    rows += cvx
    rows.append(admm_rows(x, g, n, geom, args.tol, ref))  # the full size
    print(rows[-1], flush=True)
    cvx_names = list(dict.fromkeys(r["solver"] for r in rows if r["solver"] != "admm"))
    for solver in (
        cvx_names if len(sizes) >= 2 else []
    ):  # power law in the pixel count, fitted to the crops
        pts = [r for r in rows if r["solver"] == solver]
        logpix = np.log([r["image_size"] ** 2 for r in pts])
        row = {
            "solver": f"{solver}_projected",
            "image_size": full,
            "n_images": 0,
            "objective": float("nan"),
            "max_violation": float("nan"),
            "gap_to_reference": float("nan"),
            "certified_gap": float("nan"),
            "tolerance": pts[0]["tolerance"],
        }
        for col in (
            "seconds_per_image",
            "build_seconds",
            "solver_seconds",
            "cpu_seconds_per_image",
            "cpu_solver_seconds",
        ):
            k, c = np.polyfit(logpix, np.log([r[col] for r in pts]), 1)
            row[col] = float(np.exp(c + k * np.log(full * full)))
            row["exponent"] = float(k) if col == "seconds_per_image" else row["exponent"]
        rows.append(row)
        print(rows[-1], flush=True)
    if args.batch:
        p = SSIMBallProblem(x[: args.batch], g[: args.batch], **geom)
        solve_admm(p, tol=args.tol)  # warm-up
        sol, sec = timed(lambda: solve_admm(p, tol=args.tol))
        rows.append(
            {
                "solver": f"admm_batch{args.batch}",
                "image_size": full,
                "n_images": args.batch,
                "seconds_per_image": sec / args.batch,
                "solver_seconds": sec / args.batch,
                "objective": float(sol.objective.mean()),
                "max_violation": float(sol.violation.max()),
                "gap_to_reference": float("nan"),
                "certified_gap": float(sol.gap.max()),
            }
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    if "exponent" not in table:
        table["exponent"] = float("nan")
    cvx = ~table.solver.str.startswith("admm")
    best = table[cvx].groupby("image_size")
    # like for like: CVXPY build + solve against ADMM's problem construction + solve
    table["speedup"] = table.image_size.map(best.seconds_per_image.min()) / table.seconds_per_image
    # conservative: the CVXPY solver's own solve_time (no CVXPY build) against ADMM with its construction
    table["speedup_vs_solve_time"] = (
        table.image_size.map(best.solver_seconds.min()) / table.seconds_per_image
    )
    # the same two ratios in CPU seconds of the process (both run on one thread): on a machine shared with
    # other jobs, wall time depends on what else runs at that moment, CPU time much less
    table["speedup_cpu"] = (
        table.image_size.map(best.cpu_seconds_per_image.min()) / table.cpu_seconds_per_image
    )
    table["speedup_cpu_vs_solve"] = (
        table.image_size.map(best.cpu_solver_seconds.min()) / table.cpu_seconds_per_image
    )
    table["epsilon"], table["window"], table["stride"], table["tol"] = (
        args.epsilon,
        args.window,
        args.stride,
        args.tol,
    )
    table["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    table["threads"] = torch.get_num_threads()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_table(table, args.out, Path(args.out).with_suffix(".md"), float_format="%.6g")
    print(table.to_string())


if __name__ == "__main__":
    main()
