"""Benchmark: PRM training speed at the default config, to check "CIFAR-10 training < 1 GPU hour".

    ./with-venv python bench/prm/run.py [--steps 20] [--device auto] [--config config/config.yaml]

Times ``--steps`` optimiser steps of :func:`pixelrobust.prm.train` with the config's PRM
(``prm.lattice``, ``depth``, ``start_filters``, ``train.batch_size``, ``lr``, ``recon_ratio``) in
front of the frozen ResNet-20, after 3 warm-up steps, and beside it the frozen classifier's own
forward + input-gradient step at the same batch size (what the PRM adds on top). Projects the
default training (``train.epochs`` over the 50 000 official CIFAR-10 training images) from the
measured step time. Writes results/benchmarks/prm_training.csv (+ .md), one row per measurement:
``what,device,threads,batch_size,steps,seconds_per_step,images_per_second,projected_minutes``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from pixelrobust import data, models
from pixelrobust.io import write_table
from pixelrobust.prm import PRM, train
from pixelrobust.runtime import resolve_device, seed_everything

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from common import resources  # noqa: E402

OFFICIAL_TRAIN = 50_000


def _resources():
    return resources(REPO / "results" / "benchmarks" / "_work")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "prm_training.csv"))
    args = ap.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())["prm"]
    tr = cfg["train"]
    device = resolve_device(args.device)
    seed_everything(0, deterministic=False)
    data_dir, weights = _resources()
    classifier = models.build_model(models.resolve_spec("resnet20_cifar10", {}), weights, device)
    n = (args.steps + 3) * tr["batch_size"]
    split = data.load_split(
        data_dir, "train", 0, min(n, data.read_manifest(data_dir)["counts"]["train"])
    )
    prm = PRM(cfg["lattice"], cfg["depth"], cfg["start_filters"])
    common = dict(
        epochs=10**6,
        batch_size=tr["batch_size"],
        lr=tr["lr"],
        recon_ratio=tr["recon_ratio"],
        train_lambda=tr["train_lambda"],
        augment=tr["augment"],
        progress=False,
    )
    train(classifier, prm, split.images, split.labels, max_steps=3, **common)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    train(classifier, prm, split.images, split.labels, max_steps=args.steps, **common)
    sync(device)
    prm_step = (time.perf_counter() - t0) / args.steps

    x = split.images[: tr["batch_size"]].to(device)
    y = split.labels[: tr["batch_size"]].to(device)
    for p in classifier.parameters():
        p.requires_grad_(False)

    def clf_step():
        xi = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(classifier(xi), y).backward()

    for _ in range(3):
        clf_step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        clf_step()
    sync(device)
    clf = (time.perf_counter() - t0) / args.steps

    steps_total = tr["epochs"] * math.ceil(OFFICIAL_TRAIN / tr["batch_size"])
    rows = [
        {
            "what": f"prm_train_step (depth {cfg['depth']}, {cfg['start_filters']} filters, {cfg['lattice']})",
            "seconds_per_step": prm_step,
            "projected_minutes": steps_total * prm_step / 60,
        },
        {
            "what": "frozen_classifier_fwd_bwd",
            "seconds_per_step": clf,
            "projected_minutes": float("nan"),
        },
    ]
    table = pd.DataFrame(rows)
    table.insert(
        1, "device", str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    )
    table.insert(2, "threads", torch.get_num_threads())
    table.insert(3, "batch_size", tr["batch_size"])
    table.insert(4, "steps", args.steps)
    table.insert(6, "images_per_second", tr["batch_size"] / table.seconds_per_step)
    out = Path(args.out)
    write_table(table, out, out.with_suffix(".md"), float_format="%.4g")
    print(table.to_string(index=False))
    print(
        f"projection: {tr['epochs']} epochs x {math.ceil(OFFICIAL_TRAIN / tr['batch_size'])} steps over {OFFICIAL_TRAIN} images"
    )


if __name__ == "__main__":
    main()
