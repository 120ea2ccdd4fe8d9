"""Benchmark (issue #25): where should the incremental MobileNetV2 map switch to full tensors, and is it exact there?

    PIXELROBUST_MIRROR=/work/shared/data ./with-venv python bench/onepixel/switch.py \
        [--switches 6,7,8,9,10,11,12] [--threads 1,2] [--rounds 3] [--out bench/out/switch.csv]

MobileNetV2 at 224 (the mirror's ImageNet weights), the first correctly classified ImageNet sample image, batches of
256 one-pixel candidates drawn at random from the default config's stride-8 grid x the 8 RGB-cube corners (seed 0);
``--model resnet20_cifar10`` (or ``resnet56_cifar10``): ResNet-20 (ResNet-56), the first correctly classified
CIFAR-10 test image, every pixel x 8 corners.
For each thread count and each ``switch`` (blocks 0..switch-1 on the changed cone,
``pixelrobust.incremental.Incremental``), one row:

* ``seconds_per_batch`` / ``cpu_seconds_per_batch``: the incremental logits of one batch of 256 (median of
  ``--rounds``), against ``full_seconds_per_batch`` / ``full_cpu_seconds_per_batch``: the model's full fp32 forward
  pass of the same batch, timed in the same round; ``fraction_of_full`` is their CPU-time ratio;
* ``cover``: the share of block ``switch - 1``'s activation its window covers (the default switch is the last
  block with ``cover`` <= 0.65, ``Incremental``'s ``max_cover``), ``mac_fraction``: ``incremental.cost_fraction`` (multiply-accumulates, geometry only);
* ``batch1_bit_exact``: the logits with the cache of ``prepare`` (the clean image at batch 1) equal the full pass's
  bit for bit on a second batch; ``recorded_bit_exact``: the same with the cache ``recording`` took from the full
  pass of a first batch (what ``ExhaustiveSearch(incremental="auto")`` does with its run-time check batch);
  ``max_abs_diff_batch1``: the largest logit difference with the batch-1 cache.

Run it on an otherwise idle machine: the rows are CPU-time ratios measured side by side, but caches and cores
shared with other work still move them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from pixelrobust import data, models
from pixelrobust.incremental import Incremental, cost_fraction, window_sizes
from pixelrobust.io import write_table
from pixelrobust.onepixel import make_palette
from pixelrobust.vulnerability import grid_mask

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from common import correct_indices, resources  # noqa: E402


def batch(image, pix, palette, sel):
    side = image.shape[-1]
    p, c = pix[sel // len(palette)], palette[sel % len(palette)]
    x = image[None].repeat(len(sel), 1, 1, 1)
    x[torch.arange(len(sel)), :, p // side, p % side] = c
    return x, p // side, p % side, c


def clock(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--switches", default="6,7,8,9,10,11,12")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument(
        "--model",
        default="mobilenet_v2_imagenet",
        choices=["mobilenet_v2_imagenet", "resnet20_cifar10", "resnet56_cifar10"],
        help="MobileNetV2 on the ImageNet sample, stride-8 grid (default), or ResNet-20/56 on CIFAR-10, every pixel",
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "switch.csv"))
    args = ap.parse_args()
    device = torch.device("cpu")
    dataset, stride = ("imagenet", 8) if args.model == "mobilenet_v2_imagenet" else ("cifar10", 1)
    data_dir, weights = resources(REPO / "bench" / "out", dataset, args.model)
    model = models.build_model(models.resolve_spec(args.model, {}), weights, device)
    split = data.load_split(data_dir, "test")
    image = split.images[correct_indices(model, split, 1, device)][0]
    side = image.shape[-1]
    pix = torch.as_tensor(grid_mask(side, side, stride)).flatten().nonzero().squeeze(1)
    palette = make_palette("corners")
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(pix) * len(palette), generator=g)
    B = args.batch_size
    xa, ra, ca, _ = batch(image, pix, palette, perm[:B].sort().values)
    xb, rb, cb, colb = batch(image, pix, palette, perm[B : 2 * B].sort().values)
    sizes = window_sizes(model, side, max(int(t) for t in args.switches.split(",")))
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            full_b = model(xb)  # warm-up and the reference logits at this thread count
            for sw in [int(s) for s in args.switches.split(",")]:
                plain = Incremental(model, switch=sw).prepare(image)
                z1 = plain(rb, cb, colb)
                inc = Incremental(model, switch=sw).prepare(image)
                with inc.recording(ra, ca, torch.arange(B) % 2 == 0):
                    model(xa)
                z2 = inc(rb, cb, colb)
                wall, cpu, fwall, fcpu = [], [], [], []
                for _ in range(args.rounds):
                    _, w, c = clock(lambda inc=inc: inc(rb, cb, colb))
                    wall.append(w)
                    cpu.append(c)
                    _, w, c = clock(lambda: model(xb))
                    fwall.append(w)
                    fcpu.append(c)
                win, act = sizes[sw - 1]
                row = {
                    "threads": threads,
                    "switch": sw,
                    "window": win,
                    "activation": act,
                    "cover": min(1.0, win * win / (act * act)),
                    "mac_fraction": cost_fraction(model, side, sw),
                    "batch": B,
                    "seconds_per_batch": statistics.median(wall),
                    "cpu_seconds_per_batch": statistics.median(cpu),
                    "full_seconds_per_batch": statistics.median(fwall),
                    "full_cpu_seconds_per_batch": statistics.median(fcpu),
                    "fraction_of_full": statistics.median(cpu) / statistics.median(fcpu),
                    "batch1_bit_exact": bool(torch.equal(z1, full_b)),
                    "recorded_bit_exact": bool(torch.equal(z2, full_b)),
                    "max_abs_diff_batch1": float((z1 - full_b).abs().max()),
                    "uncovered": inc.uncovered,
                }
                rows.append(row)
                print(
                    ", ".join(
                        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in row.items()
                    ),
                    flush=True,
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(pd.DataFrame(rows), out, out.with_suffix(".md"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
