"""Benchmark: the models' batched throughput in the NCHW and channels-last (NHWC) memory layouts.

    ./with-venv python bench/models/run.py [--seconds 3] [--rounds 3] [--device auto]

For ResNet-20 and ResNet-56 (CIFAR-10 test images) and MobileNetV2 (the ImageNet sample), at two
batch sizes each, measures images per second of the forward pass (no gradient) and of the forward
pass plus the input gradient (what attacks, Grad-CAM++ and gradient maps do), with the network
NCHW and channels-last (:func:`pixelrobust.models.set_channels_last`; the workflow's choice on the
CPU). The two layouts alternate within each round; each cell is the median of ``--rounds`` rounds
of ``--seconds`` each, after one warm-up batch. Writes results/benchmarks/models.csv (+ .md), one
row per model, batch size and layout: ``model,device,threads,batch_size,layout,forward_images_per_s,
grad_images_per_s``, and ``forward_speedup``/``grad_speedup`` (channels-last over NCHW) on the
channels-last rows.
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
from pixelrobust.io import write_table
from pixelrobust.runtime import resolve_device

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from common import resources, timed  # noqa: E402

CASES = [
    ("resnet20_cifar10", "cifar10", (64, 256)),
    ("resnet56_cifar10", "cifar10", (64, 256)),
    ("mobilenet_v2_imagenet", "imagenet", (8, 64)),
]
LAYOUTS = {"nchw": False, "channels_last": True}


def rate(step, batch: int, seconds: float) -> float:
    """Images per second of ``step()`` (one batch of ``batch`` images), timed for about ``seconds``
    after one warm-up call (``timed`` synchronises CUDA around the whole loop)."""
    step()

    def loop():
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step()
            n += batch
        return n

    n, dt = timed(loop)
    return n / dt


def measure(
    model, images: torch.Tensor, seconds: float, rounds: int, device: torch.device
) -> list[dict]:
    rows = {name: {"forward": [], "grad": []} for name in LAYOUTS}
    x = images.to(device)
    labels = torch.zeros(len(x), dtype=torch.long, device=device)

    def forward():
        with torch.inference_mode():
            model(x)

    def grad():
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), labels), xg)

    for _ in range(rounds):
        for name, on in LAYOUTS.items():
            models.set_channels_last(model, on)
            rows[name]["forward"].append(rate(forward, len(x), seconds))
            rows[name]["grad"].append(rate(grad, len(x), seconds))
    out = []
    for name in LAYOUTS:
        out.append(
            {
                "layout": name,
                "forward_images_per_s": statistics.median(rows[name]["forward"]),
                "grad_images_per_s": statistics.median(rows[name]["grad"]),
            }
        )
    base, cl = out
    cl["forward_speedup"] = cl["forward_images_per_s"] / base["forward_images_per_s"]
    cl["grad_speedup"] = cl["grad_images_per_s"] / base["grad_images_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "models.csv"))
    args = ap.parse_args()
    device = resolve_device(args.device)
    work = REPO / "results" / "benchmarks" / "_work"
    rows = []
    for name, dataset, batches in CASES:
        data_dir, weights = resources(work, dataset, name)
        split = data.load_split(data_dir, "test")
        model = models.build_model(models.resolve_spec(name, {}), weights, device)
        for batch in batches:
            if len(split.images) < batch:
                raise SystemExit(
                    f"{dataset}: {len(split.images)} test images, fewer than batch {batch}"
                )
            for row in measure(model, split.images[:batch], args.seconds, args.rounds, device):
                rows.append(
                    {
                        "model": name,
                        "device": device.type,
                        "threads": torch.get_num_threads(),
                        "batch_size": batch,
                        **row,
                    }
                )
                print(
                    {k: round(v, 2) if isinstance(v, float) else v for k, v in rows[-1].items()},
                    flush=True,
                )
    out = Path(args.out)
    write_table(pd.DataFrame(rows), out, out.with_suffix(".md"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
