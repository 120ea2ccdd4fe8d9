"""Seeded demo checkpoints and the CIFAR-10 PNG folder for ``config/own_models.yaml``: a wiring check.

``config/own_models.yaml`` runs every stage on three models that are not built in, each added through config
alone (a torchvision MobileNetV3-Small at ImageNet size, a timm ResNet-10-T on an ImageFolder of CIFAR-10 PNGs,
an entry-point CNN from ``examples/demo_nets.py`` on CIFAR-10). No real weights for these architectures exist
offline, and random weights classify nothing correctly (the stages attack correctly classified images), so
this tool trains each one briefly on the CPU and saves its checkpoint where the config points:

* a model on ImageNet **memorises** the first ``--memorise`` ImageNet sample images (the test images the tiny
  run attacks), at 224 px; it knows nothing else. It shows that the ImageNet-size paths run, nothing more;
* a model on CIFAR-10 (or on the PNG folder of CIFAR-10 images) trains for ``--epochs`` on the mirror's
  CIFAR-10 training rows (8 068 in ../shared/data), with flips and shifted crops, so it is a weak classifier
  of unseen test images (tens of %, not 90 %).

Neither is a model anyone should study: the numbers a run of them gives say only that every stage ran. After
training, batch-norm statistics are recomputed over the training images (exact averages, not momentum
estimates), so the model in eval mode classifies its training images as it did in training.

The image folder (``datasets.<name>.folder`` of the ImageFolder dataset in the config) gets the first
``--png-images`` CIFAR-10 test rows as lossless 32x32 PNGs in ``<folder>/<class name>/<row>.png``, class names
in CIFAR-10's order, which is also their sorted order (so the folder's labels are CIFAR-10's).

Paths in the config are relative to the workflow's working directory (``snakemake --directory``): give the
same folder here. Everything is seeded (``--seed``); one thread count (``--threads``) gives the same weights
on the same machine and torch build. ``--random`` writes untrained (seeded random) weights instead, in seconds:
enough for a dry run (``snakemake -n``), which needs the files to exist.

    ./with-venv python tools/demo_checkpoints.py --directory /tmp/run  # ~4 min on 2 idle cores
    PYTHONPATH=$PWD/examples ./with-venv python -m snakemake --snakefile $PWD/Snakefile --directory /tmp/run \\
        --configfile config/tiny.yaml config/own_models.yaml --cores 2
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "examples"))

from pixelrobust import config as prconfig  # noqa: E402
from pixelrobust import data as prdata  # noqa: E402
from pixelrobust import models as prmodels  # noqa: E402

OWN_MODELS = REPO / "config" / "own_models.yaml"


def cifar_rows(mirror: Path, batch: str = "test_batch") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A CIFAR-10 pickle of the mirror (official layout): pixels (N, 3072) uint8, labels (N,), class names."""
    folder = Path(mirror) / "cifar-10-batches-py"
    with open(folder / batch, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    with open(folder / "batches.meta", "rb") as f:
        names = pickle.load(f, encoding="latin1")["label_names"]
    return np.asarray(raw["data"]), np.asarray(raw["labels"]), list(names)


def write_cifar_folder(mirror: Path, root: Path, rows) -> Path:
    """CIFAR-10 test rows as lossless 32x32 PNGs in ``root/<class name>/<row>.png`` (an ImageFolder)."""
    from PIL import Image

    pixels, labels, names = cifar_rows(mirror)
    for i in rows:
        d = Path(root) / names[labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i].reshape(3, 32, 32).transpose(1, 2, 0)).save(d / f"{i:04d}.png")
    return Path(root)


def _recalibrate_bn(model: torch.nn.Module, images: torch.Tensor, batch: int) -> None:
    """Batch-norm running statistics as exact averages over ``images`` (momentum None), then eval mode."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            model(images[i : i + batch])
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.eval()


def _accuracy(model, images, labels, batch: int = 256) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat(
            [model(images[i : i + batch]).argmax(1) for i in range(0, len(images), batch)]
        )
    return float((pred == labels).float().mean())


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and crops shifted by up to an eighth of the side (zero padding)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    pad = h // 8
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    return torch.stack([padded[i, :, y : y + h, z : z + w] for i, (y, z) in enumerate(zip(dy, dx))])


def train(
    model, images, labels, *, steps: int, batch: int, lr: float, augment: bool, seed: int
) -> dict:
    """Adam with a cosine learning rate over ``steps`` batches drawn without replacement per pass; the model
    is a pixelrobust Classifier (images in [0, 1], its normalisation inside). Returns what was done."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    order, pos, start = torch.randperm(len(images), generator=gen), 0, time.time()
    model.train()
    for step in range(steps):
        if pos + batch > len(images):
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos : pos + batch]
        pos += batch
        x = _augment(images[idx], gen) if augment else images[idx]
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"  step {step + 1}/{steps}: loss {loss.item():.3f}", flush=True)
    _recalibrate_bn(model, images, 256)
    return {
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "augment": augment,
        "seconds": round(time.time() - start, 1),
    }


def _training_images(dataset: str, args, cache: dict):
    """(images, labels, what) a model of ``dataset`` trains on: the first ImageNet sample images, or CIFAR-10's
    training rows (also for an ImageFolder of CIFAR-10 test PNGs, whose class names are CIFAR-10's)."""
    key = "imagenet" if prmodels.imagenet_classes(dataset) else "cifar10"
    if key not in cache:
        dest = Path(cache["tmp"]) / key
        cfg = {"source": "sample"} if key == "imagenet" else {}
        prdata.prepare_dataset(dataset=key, settings=cfg, out={"data": dest}, mirror=args.mirror)
        if key == "imagenet":
            split = prdata.load_split(dest, "test", 0, args.memorise)
            what = f"memorises ImageNet sample test images 0..{args.memorise - 1} (a wiring check)"
        else:
            split = prdata.load_split(dest, "train")
            what = f"CIFAR-10 training rows of the mirror ({len(split.labels)}; a wiring check)"
        cache[key] = (split.images, split.labels, what)
    if key == "cifar10" and dataset != "cifar10":
        names = prdata.class_names(Path(cache["tmp"]) / "cifar10")
        folder = prdata._class_folders(Path(args.config_data["datasets"][dataset]["folder"]))
        if folder != names:
            raise SystemExit(
                f"dataset {dataset}: class folders {folder} are not CIFAR-10's classes {names} in their order"
            )
    return cache[key]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--directory", type=Path, default=Path.cwd(), help="the workflow's working directory"
    )
    ap.add_argument("--config", type=Path, default=OWN_MODELS, help="the overlay naming the models")
    ap.add_argument(
        "--mirror", type=Path, default=None, help="data mirror (default: $PIXELROBUST_MIRROR)"
    )
    ap.add_argument(
        "--models", nargs="*", default=None, help="only these models (default: all in --config)"
    )
    ap.add_argument("--random", action="store_true", help="untrained seeded weights (for dry runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--png-images", type=int, default=256, help="CIFAR-10 test rows written as PNGs"
    )
    ap.add_argument(
        "--memorise", type=int, default=48, help="ImageNet sample images an ImageNet model fits"
    )
    ap.add_argument("--memorise-steps", type=int, default=80)
    ap.add_argument(
        "--epochs", type=float, default=3.0, help="passes over CIFAR-10's training rows"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg_file = args.config.resolve()
    args.mirror = args.mirror or (
        Path(os.environ["PIXELROBUST_MIRROR"]) if os.environ.get("PIXELROBUST_MIRROR") else None
    )
    if args.mirror is None or not (args.mirror / "cifar-10-batches-py").is_dir():
        raise SystemExit(
            "give --mirror or PIXELROBUST_MIRROR: a data mirror laid out like ../shared/data"
        )
    args.directory.mkdir(parents=True, exist_ok=True)
    os.chdir(args.directory)
    cfg = prconfig.load_yaml(cfg_file)
    args.config_data = cfg
    for name, ds in (cfg.get("datasets") or {}).items():
        if name in prdata.DATASETS or ds.get("layout") != "imagefolder":
            continue
        folder = Path(ds["folder"])
        if not folder.is_dir():
            write_cifar_folder(args.mirror, folder, range(args.png_images))
            print(
                f"dataset {name}: wrote CIFAR-10 test rows 0..{args.png_images - 1} as PNGs to {folder.resolve()}"
            )
    prdata.register_datasets(cfg.get("datasets") or {})
    report = {}
    with tempfile.TemporaryDirectory(prefix="demo-data-") as tmp:
        cache = {"tmp": tmp}
        for name, overrides in cfg["models"].items():
            if args.models is not None and name not in args.models:
                continue
            spec = prmodels.resolve_spec(name, overrides)
            torch.manual_seed(args.seed)
            model = prmodels.build_model(spec, None)
            entry = {"arch": spec["arch"], "dataset": spec["dataset"], "seed": args.seed}
            if args.random:
                entry["training"] = "none (random weights, for dry runs)"
            else:
                images, labels, what = _training_images(spec["dataset"], args, cache)
                print(f"model {name} ({spec['arch']}): {what}", flush=True)
                if prmodels.imagenet_classes(spec["dataset"]):
                    done = train(
                        model,
                        images,
                        labels,
                        steps=args.memorise_steps,
                        batch=16,
                        lr=3e-3,
                        augment=False,
                        seed=args.seed,
                    )
                else:
                    steps = int(args.epochs * len(images) / 128)
                    done = train(
                        model,
                        images,
                        labels,
                        steps=steps,
                        batch=128,
                        lr=2e-3,
                        augment=True,
                        seed=args.seed,
                    )
                done["train_accuracy"] = round(_accuracy(model, images, labels), 4)
                entry.update(training=what, **done)
            out = Path(spec["weights"])
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp_out = out.with_suffix(out.suffix + ".tmp")
            torch.save(model.net.state_dict(), tmp_out)
            tmp_out.replace(out)
            entry["weights"] = str(out.resolve())
            report[name] = entry
            print(f"model {name}: {json.dumps(entry)}", flush=True)
    log = (
        Path(next(iter(report.values()))["weights"]).parent / "demo_checkpoints.json"
        if report
        else None
    )
    if log is not None:
        old = json.loads(log.read_text()) if log.is_file() else {}
        log.write_text(json.dumps({**old, **report}, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
