"""Benchmark: our one-pixel searches against torchattacks.OnePixel, same model, same images, one run.

    ./with-venv python bench/onepixel/run.py [--n-images 100] [--device auto] [--batch-size 256]
        [--ranked-budget 2048] [--refine 1024 8 1] [--colour-steps 10] [--skip-de] [--skip-torchattacks]
        [--skip-screened] [--only-de]

Writes results/benchmarks/onepixel.csv with columns
method,n_images,success_rate,seconds_per_image,evals_per_image (+ evals_per_second,
fraction_of_raw_forward, batch_size, device, threads), one row per method:

* ``pixelrobust_exhaustive``: the full map, every pixel x the 8 RGB-cube corners (8192 evals);
* ``pixelrobust_exhaustive_bf16_screened``: the same map with ``precision="bf16_screened"`` (bf16
  autocast scores every candidate, fp32 re-evaluates those that could change the map; fp32 where the
  CPU has no native bf16, see ``precision``): ``evals_per_image`` and ``evals_per_second`` count
  map candidates (8192 per image), so ``fraction_of_raw_forward`` is its speed over the fp32 raw
  forward rate; ``fp32_fraction`` is the share of candidates evaluated in fp32 too (re-evaluations,
  the run-time check's random sample and batch padding), and ``maps_equal_fp32`` is true only when
  every image's map (``vulnerable``, ``best_colour``, ``drop``, bit for bit) equals the fp32 map of
  the row above; skip it with ``--skip-screened``;
* ``pixelrobust_ranked``: our best-first search (gradient prior) over the same candidates, complete
  (stops at the first success, else evaluates all 8192: exactly the exhaustive map's success);
* ``pixelrobust_ranked_k<budget>``: the same with at most ``--ranked-budget`` candidates per image;
* ``pixelrobust_ranked_k<budget>_nb<pixels>r<radius>``: the same with a budget of ``--refine``'s
  first number, then the neighbourhood stage around the ``pixels`` pixels that came closest
  (every colour within ``radius`` pixels of each; ``RankedSearch(refine_pixels, refine_radius)``);
* ``..._nb<pixels>r<radius>_c<steps>``: the same, then the colour stage (``--colour-steps``
  signed-gradient steps of 0.1 on the RGB of every window pixel; ``RankedSearch(colour_steps)``);
* ``pixelrobust_de``: our DE at Su et al.'s budget (population 400, 100 generations, F 0.5, CR 1);
* ``pixelrobust_de_bf16``: the same DE with ``precision="bf16"`` (bf16 autocast fitness, fp32
  decides success; fp32 where the CPU has no native bf16: the ``precision`` column says which ran):
  ``fp32_fraction`` is the share of its candidates also evaluated in fp32, ``band_hits`` the
  fp32 successes that bf16 did not call (found through the band), ``bf16_rejected`` the bf16
  "successes" fp32 refused (never reported); its fitness runs on the model's batch-norm-folded copy
  (``models.low_precision_scorer``), as in the workflow. Both DE rows count ``evals_per_image`` as the DE's
  candidates (its own ``n_evals``), not forward passes: the bf16 row's fp32 re-evaluations (``fp32_fraction``
  of them) come on top;
* ``success_fp32_confirmed`` (DE and torchattacks rows): true when every success the method reports
  is a success of the fp32 model on the adversarial image the bench rebuilds from the reported
  pixel and colour (torchattacks: its returned image), one plain fp32 forward each;
* ``cpu_seconds_per_image`` (DE and torchattacks rows): the process's CPU time per image, beside
  the wall time: on a shared machine the wall time also counts other jobs' load;
* ``--only-de``: only the DE rows and torchattacks (with the raw forward rate);
* ``torchattacks_onepixel``: ``torchattacks.OnePixel(model, pixels=1, steps=100, popsize=400)``;
* ``raw_forward``: the model's batched forward throughput at the same batch size, measured for
  10 s before and again after the searches; the row keeps the faster of the two, so a machine
  that speeds up during the run cannot inflate ``fraction_of_raw_forward``
  (``evals_per_image`` holds images per second, as the issue's table asks).

The machine's speed drifts (by 10-20 % within minutes on the shared 2-core CPU), so the exhaustive
search is also compared with a raw rate taken *between* its images: after each image,
``RAW_BATCHES`` raw forward batches of the same size are timed, and ``fraction_of_interleaved_raw``
is the exhaustive search's evaluations per second over that interleaved rate (on the
``raw_forward`` row: the interleaved rate over the row's own rate).

Beside it, ``onepixel_images.csv`` (same folder and stem) says for every method which images it broke
(``method,test_index,success``): which images one method breaks and another does not.

Images: the first n correctly classified CIFAR-10 test images (``--breakable``: the first n of them that one
pixel breaks, found by the complete ranked search; the per-image file then also gives each DE run's
evaluations to success, ``evals``); model: ResNet-20. Data and weights
come from resources/ if the workflow prepared them, else from $PIXELROBUST_MIRROR (see README).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pixelrobust import data, models
from pixelrobust.io import write_table
from pixelrobust.onepixel import DifferentialEvolution, ExhaustiveSearch, RankedSearch, _in_workers
from pixelrobust.runtime import resolve_device, seed_everything

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from common import Counting, correct_indices, resources, timed  # noqa: E402


def raw_batch(image, batch_size) -> torch.Tensor:
    """``batch_size`` copies of one image: the raw forward measurements' input."""
    return image[None].expand(batch_size, -1, -1, -1).contiguous()


@torch.inference_mode()
def raw_throughput(model, image, batch_size, seconds=10.0) -> float:
    x = raw_batch(image, batch_size)
    model(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model(x)
        n += batch_size
    if x.is_cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


RAW_BATCHES = 8  # raw forward batches timed after each image of the exhaustive search
RAW_MODES = ("intra", "workers")  # incremental rows: the raw forward pass both ways (raw_run)


def row(method: str, successes: list[bool], counted: Counting | int, seconds: float) -> dict:
    """A method's row; ``counted``: its model's :class:`Counting` wrapper, or the number of evaluations."""
    n = len(successes)
    evals = counted if isinstance(counted, int) else counted.count
    return {
        "method": method,
        "n_images": n,
        "success_rate": sum(successes) / n,
        "seconds_per_image": seconds / n,
        "evals_per_image": evals / n,
        "evals_per_second": evals / seconds,
        "successes": [bool(s) for s in successes],
    }


def report(r: dict) -> None:
    print({k: v for k, v in r.items() if k not in ("successes", "evals")}, flush=True)


def incremental_rows(
    args, device, dataset: str, model_name: str, n_images: int, stride: int, tag: str
) -> None:
    """The exhaustive map, fp32 against incremental (``ExhaustiveSearch(incremental="auto")``,
    src/pixelrobust/incremental.py), on the first ``n_images`` correctly classified test images of
    ``dataset``, in one run, with the raw fp32 forward at batch ``--batch-size`` (the faster of before
    and after). ``--imagenet-images N``: MobileNetV2, the stride-``--imagenet-stride`` grid (the
    default config's 28 x 28 grid at 224) x the 8 RGB-cube corners, ``onepixel_imagenet.csv`` beside
    ``--out``; ``--resnet20-incremental N``: ResNet-20 on CIFAR-10, every pixel x the 8 corners (the
    default config's P1 map), ``onepixel_resnet20_incremental.csv``. Rows ``raw_forward``,
    ``pixelrobust_exhaustive_grid`` and ``pixelrobust_exhaustive_grid_incremental`` (``maps_equal_fp32``:
    every image's map equal bit for bit; ``n_reevaluated``: full fp32 passes per image, the run-time
    check and batch padding included; ``bit_exact_images``: images on the bit-exact branch, the others
    took the band; ``difference_seen``: the largest difference seen); with ``--screened`` also
    ``pixelrobust_exhaustive_grid_incremental_screened`` (``onepixel.precision`` bf16_screened: on a
    CIFAR ResNet the rest of the network screened in bf16 delta form, the fp32 rest on the kept cone
    activations deciding; ``n_rest``: those fp32 rests per image, the check's included, and every
    candidate of an image the screen gate sent to the exact path, ``screen_skipped_images`` counts
    those, session s42). Besides wall
    seconds, every row has process CPU seconds (``cpu_seconds_per_image``,
    ``fraction_of_raw_forward_cpu``): on a shared machine the wall clock counts other people's work.
    The two maps of each image run back to back (which goes first alternates), followed by as many
    raw forward batches as the map has full batches (at least ``RAW_BATCHES``), each way: ``fraction_of_interleaved_raw`` (and ``_cpu``) divides by
    the raw rate timed between the images, which saw the same machine as the maps (its speed drifts
    by 10-20 % within minutes and from one process to the next here); on the raw rows it is that
    way's interleaved rate over the faster way's. The raw forward pass is timed two ways: one stream
    on the process's intra-op threads (``raw_forward``) and one single-threaded stream per thread
    (``raw_forward_workers``, as the incremental map runs its batches, ``onepixel._in_workers``);
    every ``fraction_of_*`` divides by the faster of the two (wall and CPU apart), so that neither
    map gains from a way of using the cores that the raw pass was not given. Since session s38 the
    raw pass is also timed at the batch sizes ``--raw-batch-sizes`` (a small batch runs faster per
    image on a CPU, its activations staying in cache): the sweep before the run times every size
    both ways (one ``raw_forward``/``raw_forward_workers`` row per size, ``raw_batch_size``), the
    fastest size of each way is the one timed between the images, and the denominators are the
    fastest of all. Not tried as the raw pass: a batch-norm-folded copy, TorchScript freezing,
    ``torch.compile`` (the maps use the plain eager model; a faster fp32 forward would speed both
    the raw pass and the maps' full passes). The raw input is one image repeated."""
    from pixelrobust.vulnerability import grid_mask

    data_dir, weights = resources(REPO / "bench" / "out", dataset, model_name)
    model = models.build_model(models.resolve_spec(model_name, {}), weights, device)
    split = data.load_split(data_dir, "test")
    index = correct_indices(model, split, n_images, device)
    x, y = split.images[index], split.labels[index]
    n, side = len(x), x.shape[-1]
    mask = grid_mask(side, side, stride)[None]
    print(
        f"{n} correctly classified {dataset} test images, {model_name} at {side}, grid stride {stride} "
        f"({int(mask.sum())} pixels x 8 colours), device {device}, batch {args.batch_size}, {torch.get_num_threads()} threads",
        flush=True,
    )

    raw_sizes = sorted({args.batch_size, *args.raw_batch_sizes})
    xr = {b: raw_batch(x[0].to(device), b) for b in raw_sizes}

    def raw_run(k: int, mode: str, b: int) -> tuple[float, float]:
        """Wall and CPU seconds of ``k`` raw forward batches of ``b`` images: ``intra`` (one stream,
        the process's intra-op threads) or ``workers`` (``_in_workers``: one single-threaded stream
        per thread, as the incremental map runs its batches)."""
        with torch.inference_mode():
            t, c = time.perf_counter(), time.process_time()
            if mode == "intra":
                for _ in range(k):
                    model(xr[b])
            else:
                _in_workers(lambda _: model(xr[b]), list(range(k)), device)
            return time.perf_counter() - t, time.process_time() - c

    def raw_rates(sizes: dict) -> dict:
        """{(mode, batch): (images/s wall, images per CPU second)}, each timed for 10 s."""
        out = {}
        for mode, bs in sizes.items():
            for b in bs:
                raw_run(2, mode, b)  # warm-up
                k = 2
                while True:
                    dt, dc = raw_run(k, mode, b)
                    if dt >= 10.0:
                        break
                    k = max(k + 2, int(k * 11.0 / max(dt, 1e-3)))
                out[mode, b] = (k * b / dt, k * b / dc)
        return out

    # the raw pass's batch size matters on a CPU (the activations of a small batch stay in cache:
    # ResNet-20 at 1 thread 22 % faster per image at 16-32 than at 256, MobileNetV2 40 % at 16 than
    # at 64, session s38): the sweep before the run times every size both ways, and the fastest size
    # of each way is the one timed between the images
    raw_before = raw_rates({mode: raw_sizes for mode in RAW_MODES})
    for (mode, b), (rw, rc) in raw_before.items():
        print(
            f"raw forward ({mode}, batch {b}): {rw:.1f} images/s wall, {rc:.1f} per CPU second",
            flush=True,
        )
    size = {
        mode: max(raw_sizes, key=lambda b, mode=mode: raw_before[mode, b][0]) for mode in RAW_MODES
    }
    print(f"raw batch sizes timed between the images: {size}", flush=True)
    methods = (
        ("pixelrobust_exhaustive_grid", {}),
        ("pixelrobust_exhaustive_grid_incremental", {"incremental": "auto"}),
    )
    if args.screened:  # session s40: the rest screened in bf16 delta form, fp32 decides
        methods += (
            (
                "pixelrobust_exhaustive_grid_incremental_screened",
                {"incremental": "auto", "precision": "bf16_screened"},
            ),
        )
    searches = {m: ExhaustiveSearch(model, "corners", args.batch_size, **kw) for m, kw in methods}
    compile_s = {}  # the compiled delta screen's one-off compile per process, timed apart (session s41)
    for m, search in searches.items():
        print(f"{m}: {search.describe()}")
        if search.inc is not None and search.screen_dtype is not None and search.screen_compile:
            with torch.inference_mode():
                search.inc.prepare(x[0].to(device))
                t = time.perf_counter()
                search.inc.prepare_screen(search.screen_dtype, True)
                compile_s[m] = time.perf_counter() - t
            print(
                f"{m}: screen compiled in {compile_s[m]:.1f} s (before the timed maps)", flush=True
            )
    # interleaved: each image's fp32 and incremental maps back to back (the first of the two
    # alternating), then RAW_BATCHES raw batches, so that a machine whose speed drifts during the run
    # gives both methods and the raw rate the same conditions
    maps = {m: [] for m in searches}
    wall, cpu = dict.fromkeys(searches, 0.0), dict.fromkeys(searches, 0.0)
    raw_wall, raw_cpu_t = dict.fromkeys(RAW_MODES, 0.0), dict.fromkeys(RAW_MODES, 0.0)
    raw_n = dict.fromkeys(RAW_MODES, 0)  # images each way ran (whole batches of its size)
    # as many raw batches per image as the map has full batches: the worker streams then start as
    # often per batch as the map's do (8-batch bursts gave the two streams 4x the map's start-up
    # share and understated them, a referee's finding)
    burst = max(RAW_BATCHES, int(mask.sum()) * 8 // args.batch_size) * args.batch_size  # images
    for i in range(n):
        order = list(searches) if i % 2 == 0 else list(searches)[::-1]
        for m in order:
            t, c = time.perf_counter(), time.process_time()
            (pm,) = searches[m](x[i : i + 1], y[i : i + 1], mask)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            wall[m], cpu[m] = wall[m] + dt, cpu[m] + dc
            maps[m].append(pm)
            print(
                f"  image {int(index[i])} {m}: {dt:.1f} s wall, {dc:.1f} s CPU, "
                f"full fp32 passes {pm.n_fp32}, fp32 rests {pm.n_rest} of {pm.n_evals}"
                + (" (screen gate: exact path)" if pm.screen_skipped else ""),
                flush=True,
            )
        for mode in RAW_MODES if i % 2 == 0 else RAW_MODES[::-1]:
            k = -(-burst // size[mode])  # at least the map's candidates
            dt, dc = raw_run(k, mode, size[mode])
            raw_wall[mode], raw_cpu_t[mode] = raw_wall[mode] + dt, raw_cpu_t[mode] + dc
            raw_n[mode] += k * size[mode]
            print(
                f"  raw ({mode}, batch {size[mode]}): {k * size[mode] / dt:.1f} images/s wall",
                flush=True,
            )
    # the denominators: the faster way to run the raw forward pass on this machine (wall, CPU apart)
    inter = max(raw_n[m] / raw_wall[m] for m in RAW_MODES)
    inter_cpu = max(raw_n[m] / raw_cpu_t[m] for m in RAW_MODES)
    rows = []
    for method, out in maps.items():
        cand = sum(m.n_evals for m in out)
        r = {
            "method": method,
            "n_images": n,
            "success_rate": sum(m.success for m in out) / n,
            "seconds_per_image": wall[method] / n,
            "cpu_seconds_per_image": cpu[method] / n,
            "evals_per_image": cand / n,
            "evals_per_second": cand / wall[method],
            "evals_per_cpu_second": cand / cpu[method],
            "fraction_of_interleaved_raw": cand / wall[method] / inter,
            "fraction_of_interleaved_raw_cpu": cand / cpu[method] / inter_cpu,
            "precision": out[0].precision,
            "n_reevaluated": sum(m.n_fp32 for m in out) / n,
        }
        if "incremental" in method:
            full = maps["pixelrobust_exhaustive_grid"]
            r["maps_equal_fp32"] = all(
                np.array_equal(a.vulnerable, b.vulnerable)
                and np.array_equal(a.best_colour, b.best_colour)
                and np.array_equal(a.drop, b.drop, equal_nan=True)
                for a, b in zip(full, out)
            )
            r["difference_seen"] = max(m.screen_error for m in out)
            r["bit_exact_images"] = sum(m.bit_exact for m in out)
            r["n_rest"] = sum(m.n_rest for m in out) / n
            r["screen_skipped_images"] = sum(m.screen_skipped for m in out)
            r["compile_seconds"] = compile_s.get(method)
        rows.append(r)
        report(r)
    raw_after = raw_rates({mode: [size[mode]] for mode in RAW_MODES})
    best = {  # the better of before and after; other sizes: before only
        k: (max(v[0], raw_after.get(k, v)[0]), max(v[1], raw_after.get(k, v)[1]))
        for k, v in raw_before.items()
    }
    raw, raw_cpu = max(w for w, _ in best.values()), max(c for _, c in best.values())
    for k, (mode, b) in enumerate(best):
        between = size[mode] == b  # this way's size timed between the images
        rows.insert(
            k,
            {
                "method": "raw_forward" if mode == "intra" else "raw_forward_workers",
                "raw_batch_size": b,
                "n_images": b,
                "seconds_per_image": 1 / best[mode, b][0],
                "evals_per_image": best[mode, b][0],
                "evals_per_second": best[mode, b][0],
                "evals_per_cpu_second": best[mode, b][1],
                "fraction_of_interleaved_raw": (
                    raw_n[mode] / raw_wall[mode] / inter if between else None
                ),
                "fraction_of_interleaved_raw_cpu": (
                    raw_n[mode] / raw_cpu_t[mode] / inter_cpu if between else None
                ),
            },
        )
    table = pd.DataFrame(rows)
    table["fraction_of_raw_forward"] = table.evals_per_second / raw
    table["fraction_of_raw_forward_cpu"] = table.evals_per_cpu_second / raw_cpu
    table["batch_size"] = args.batch_size
    table["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    table["threads"] = torch.get_num_threads()
    out = Path(args.out)
    write_table(
        table, out.with_name(f"{out.stem}_{tag}.csv"), out.with_name(f"{out.stem}_{tag}.md")
    )
    print(table.to_string())


def breakable_indices(model, split, n: int, batch_size: int, device) -> tuple[torch.Tensor, int]:
    """Test-set indices of the first ``n`` correctly classified images with a one-pixel corner-colour success (our
    complete ranked search: it stops at its first success, else tries all 8192 candidates, so its success is the
    exhaustive map's), and how many correctly classified images were scanned to find them."""
    correct = correct_indices(model, split, len(split.labels), device)
    search = RankedSearch(model, "corners", "gradient", None, batch_size)
    found = []
    for k, i in enumerate(correct.tolist()):
        (r,) = search(split.images[i : i + 1], split.labels[i : i + 1])
        if r.success:
            found.append(i)
            if len(found) == n:
                return torch.tensor(found), k + 1
    raise SystemExit(
        f"only {len(found)} of the {len(correct)} correctly classified test images are breakable"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument(
        "--raw-batch-sizes",
        type=lambda v: [int(b) for b in v.split(",")],
        default=[1, 2, 4, 8, 16, 32, 64],
        help="incremental rows: the raw forward pass is also timed at these batch sizes (besides "
        "--batch-size) and the fastest is every ratio's denominator",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--ranked-budget",
        type=int,
        default=2048,
        help="candidates per image of the budgeted ranked search",
    )
    ap.add_argument(
        "--refine",
        type=int,
        nargs=3,
        default=[1024, 8, 1],
        metavar=("BUDGET", "PIXELS", "RADIUS"),
        help="the ranked search with a neighbourhood stage: first-stage budget, seed pixels, window radius",
    )
    ap.add_argument(
        "--colour-steps",
        type=int,
        default=10,
        help="steps of the colour stage after the neighbourhood stage",
    )
    ap.add_argument(
        "--only-ranked",
        action="store_true",
        help="run only the budgeted ranked searches (a quick check, no peer)",
    )
    ap.add_argument("--skip-de", action="store_true", help="omit our (slow) DE")
    ap.add_argument(
        "--only-de", action="store_true", help="only our DE (fp32 and bf16) and torchattacks"
    )
    ap.add_argument(
        "--skip-screened", action="store_true", help="omit the bf16-screened exhaustive map"
    )
    ap.add_argument("--skip-torchattacks", action="store_true", help="omit the (slow) peer")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "onepixel.csv"))
    ap.add_argument(
        "--imagenet-images",
        type=int,
        default=0,
        help="also the MobileNetV2 ImageNet grid map, fp32 and incremental, on this many images (onepixel_imagenet.csv)",
    )
    ap.add_argument(
        "--imagenet-stride",
        type=int,
        default=8,
        help="the ImageNet grid's stride (the default config's: 8)",
    )
    ap.add_argument("--imagenet-only", action="store_true", help="only the ImageNet grid rows")
    ap.add_argument(
        "--resnet20-incremental",
        type=int,
        default=0,
        help="also ResNet-20's full CIFAR-10 map, fp32 and incremental, on this many images "
        "(onepixel_resnet20_incremental.csv)",
    )
    ap.add_argument(
        "--screened",
        action="store_true",
        help="incremental rows: also the map with onepixel.precision bf16_screened "
        "(pixelrobust_exhaustive_grid_incremental_screened: on a CIFAR ResNet the rest screened in bf16 delta "
        "form, the fp32 rest on the kept cone activations deciding; n_rest: those fp32 rests per image)",
    )
    ap.add_argument(
        "--incremental-only",
        action="store_true",
        help="only the incremental rows (ImageNet and/or ResNet-20)",
    )
    ap.add_argument(
        "--breakable",
        action="store_true",
        help="the first n correctly classified images that a one-pixel corner colour breaks (found by our complete "
        "ranked search, which equals the exhaustive map's success): success rates where success is possible",
    )
    args = ap.parse_args()
    if args.incremental_only and not (args.imagenet_images or args.resnet20_incremental):
        ap.error("--incremental-only needs --imagenet-images N and/or --resnet20-incremental N")

    seed_everything(args.seed)
    device = resolve_device(args.device)
    if args.imagenet_images:
        incremental_rows(
            args,
            device,
            "imagenet",
            "mobilenet_v2_imagenet",
            args.imagenet_images,
            args.imagenet_stride,
            "imagenet",
        )
    if args.resnet20_incremental:
        incremental_rows(
            args,
            device,
            "cifar10",
            "resnet20_cifar10",
            args.resnet20_incremental,
            1,
            "resnet20_incremental",
        )
    if args.incremental_only or (args.imagenet_only and args.imagenet_images):
        return
    data_dir, weights = resources(REPO / "bench" / "out")
    spec = models.resolve_spec("resnet20_cifar10", {})
    model = models.build_model(spec, weights, device)
    split = data.load_split(data_dir, "test")
    if args.breakable:
        index, scanned = breakable_indices(model, split, args.n_images, args.batch_size, device)
    else:
        index = correct_indices(model, split, args.n_images, device)
    x, y = split.images[index], split.labels[index]
    n = len(x)
    print(
        f"{n} correctly classified CIFAR-10 images"
        + (
            f" that one pixel breaks (test images {index.tolist()}, of {scanned} correctly classified scanned)"
            if args.breakable
            else ""
        )
        + f", ResNet-20, device {device}, batch {args.batch_size}, {torch.get_num_threads()} threads"
    )

    raw_before = raw_throughput(model, x[0].to(device), args.batch_size)
    rows = []
    print(f"raw forward: {raw_before:.0f} images/s")

    interleaved = None
    if not (args.only_ranked or args.only_de):
        counted = Counting(model)
        search = ExhaustiveSearch(counted, "corners", args.batch_size)
        maps, dt, raw_seconds, raw_images = [], 0.0, 0.0, 0
        for i in range(n):  # image by image, each followed by RAW_BATCHES raw forward batches
            (pm,), t = timed(lambda i=i: search(x[i : i + 1], y[i : i + 1]))
            maps.append(pm)
            dt += t
            xr = raw_batch(x[i].to(device), args.batch_size)
            with torch.inference_mode():
                raw_seconds += timed(lambda xr=xr: [model(xr) for _ in range(RAW_BATCHES)])[1]
            raw_images += RAW_BATCHES * args.batch_size
        interleaved = raw_images / raw_seconds
        rows.append(row("pixelrobust_exhaustive", [m.success for m in maps], counted, dt))
        report(rows[-1])
        print(f"raw forward interleaved with the exhaustive search: {interleaved:.0f} images/s")

    if not (args.only_ranked or args.skip_screened or args.only_de):
        screened = ExhaustiveSearch(model, "corners", args.batch_size, precision="bf16_screened")
        print(f"screened exhaustive map: {screened.describe()}")
        smaps, dt = [], 0.0
        for i in range(n):
            (pm,), t = timed(lambda i=i: screened(x[i : i + 1], y[i : i + 1]))
            smaps.append(pm)
            dt += t
        equal = all(
            np.array_equal(a.vulnerable, b.vulnerable)
            and np.array_equal(a.best_colour, b.best_colour)
            and np.array_equal(a.drop, b.drop, equal_nan=True)
            for a, b in zip(maps, smaps)
        )
        cand = sum(m.n_evals for m in smaps)
        rows.append(
            {
                "method": "pixelrobust_exhaustive_bf16_screened",
                "n_images": n,
                "success_rate": sum(m.success for m in smaps) / n,
                "seconds_per_image": dt / n,
                "evals_per_image": cand / n,
                "evals_per_second": cand / dt,
                "successes": [m.success for m in smaps],
                "fp32_fraction": sum(m.n_fp32 for m in smaps) / cand,
                "maps_equal_fp32": equal,
                "precision": screened.path,
            }
        )
        report(rows[-1])
        print("fp32 evaluations per image:", [m.n_fp32 for m in smaps])

    k, m, r = args.refine
    c = args.colour_steps
    for name, budget, refine in (
        ("pixelrobust_ranked", None, (0, 1, 0)),
        (f"pixelrobust_ranked_k{args.ranked_budget}", args.ranked_budget, (0, 1, 0)),
        (f"pixelrobust_ranked_k{k}_nb{m}r{r}", k, (m, r, 0)),
        (f"pixelrobust_ranked_k{k}_nb{m}r{r}_c{c}", k, (m, r, c)),
    ):
        if (args.only_ranked and budget is None) or args.only_de:
            continue
        counted = Counting(model)
        search = RankedSearch(counted, "corners", "gradient", budget, args.batch_size, *refine)
        res, dt = timed(lambda search=search: search(x, y))
        rows.append(row(name, [r.success for r in res], counted, dt))
        report(rows[-1])

    if not (args.skip_de or args.only_ranked):
        for name, precision in (("pixelrobust_de", "fp32"), ("pixelrobust_de_bf16", "bf16")):
            # the model itself (the bf16 row's fitness comes from its batch-norm-folded copy, as in the
            # workflow); the evaluations are the DE's own count
            de = DifferentialEvolution(
                model,
                popsize=400,
                maxiter=100,
                F=0.5,
                CR=1.0,
                seed=args.seed,
                batch_size=args.batch_size,
                precision=precision,
            )
            print(f"{name}: {de.describe()}")
            cpu0 = time.process_time()
            res, dt = timed(lambda de=de: de(x, y))
            cpu = time.process_time() - cpu0
            rows.append(row(name, [r.success for r in res], sum(r.n_evals for r in res), dt))
            adv = x.clone()
            for i, r in enumerate(res):
                adv[i, :, r.pixel[0], r.pixel[1]] = torch.from_numpy(r.colour)
            with torch.inference_mode():
                fp32_success = (model(adv.to(device)).argmax(1).cpu() != y).tolist()
            n_evals = sum(r.n_evals for r in res)
            rows[-1].update(
                {
                    "success_fp32_confirmed": all(
                        f for r, f in zip(res, fp32_success) if r.success
                    ),
                    "cpu_seconds_per_image": cpu / n,
                    "precision": res[0].precision,
                    "fp32_fraction": sum(r.n_fp32 for r in res) / n_evals,
                    "band_hits": sum(r.band_hits for r in res),
                    "bf16_rejected": sum(r.rejected for r in res),
                    # per image: candidates to success (or the budget)
                    "evals": [r.n_evals for r in res],
                }
            )
            report(rows[-1])

    if not (args.skip_torchattacks or args.only_ranked):
        import torchattacks

        counted = Counting(model)
        attack = torchattacks.OnePixel(counted, pixels=1, steps=100, popsize=400)
        cpu0 = time.process_time()
        adv, dt = timed(lambda: attack(x.to(device), y.to(device)))
        cpu = time.process_time() - cpu0
        with torch.inference_mode():
            successes = (model(adv).argmax(1).cpu() != y).tolist()
        rows.append(row("torchattacks_onepixel", successes, counted, dt))
        rows[-1]["success_fp32_confirmed"] = (
            True  # its successes are the fp32 model's on its returned images
        )
        rows[-1]["cpu_seconds_per_image"] = cpu / n
        report(rows[-1])

    raw_after = raw_throughput(model, x[0].to(device), args.batch_size)
    raw = max(raw_before, raw_after)
    print(f"raw forward after the searches: {raw_after:.0f} images/s")
    rows.insert(
        0,
        {
            "method": "raw_forward",
            "n_images": args.batch_size,
            "success_rate": float("nan"),
            "seconds_per_image": 1 / raw,
            "evals_per_image": raw,
            "evals_per_second": raw,
        },
    )
    table = pd.DataFrame(rows).drop(columns=["successes", "evals"], errors="ignore")
    table["fraction_of_raw_forward"] = table.evals_per_second / raw
    if (
        interleaved is not None
    ):  # the exhaustive row against the raw rate measured between its images
        table["fraction_of_interleaved_raw"] = float("nan")
        ex = table.method == "pixelrobust_exhaustive"
        table.loc[ex, "fraction_of_interleaved_raw"] = (
            table.loc[ex, "evals_per_second"] / interleaved
        )
        sc = table.method == "pixelrobust_exhaustive_bf16_screened"
        table.loc[sc, "fraction_of_interleaved_raw"] = (
            table.loc[sc, "evals_per_second"] / interleaved
        )
        table.loc[table.method == "raw_forward", "fraction_of_interleaved_raw"] = interleaved / raw
    table["batch_size"] = args.batch_size
    table["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    table["threads"] = torch.get_num_threads()
    write_table(table, args.out, Path(args.out).with_suffix(".md"))
    per_image = pd.DataFrame(
        [
            {"method": r["method"], "test_index": i, "success": s, "evals": e}
            for r in rows
            if "successes" in r
            for i, s, e in zip(
                index.tolist(), r["successes"], r.get("evals") or [float("nan")] * len(index)
            )
        ]
    )
    out = Path(args.out)
    write_table(per_image, out.with_name(f"{out.stem}_images.csv"))
    print(table.to_string())


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    main()
