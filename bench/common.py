"""Shared helpers of the benchmarks: the prepared CIFAR-10 data and ResNet-20, timing, counting."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from pixelrobust import data, models

REPO = Path(__file__).resolve().parents[1]


class Counting(torch.nn.Module):
    """Counts the images a model is evaluated on.

    Takes the wrapped model's train/eval mode: torchattacks restores the mode of the module it is
    given after each attack, and a wrapper left in the default training mode would switch the
    classifier's batch norm to batch statistics for everything that follows.
    """

    def __init__(self, model):
        super().__init__()
        self.model, self.count = model, 0
        self._lock = threading.Lock()  # the exhaustive map calls it from worker threads
        self.train(model.training)

    def forward(self, x):
        with self._lock:
            self.count += len(x)
        return self.model(x)


def resources(
    work: Path, dataset: str = "cifar10", model: str = "resnet20_cifar10"
) -> tuple[Path, Path]:
    """A prepared dataset folder and model weights (the workflow's, else built from the mirror)."""
    d, w = REPO / "resources" / "data" / dataset, REPO / "resources" / "weights" / f"{model}.pt"
    if d.is_dir() and w.is_file():
        return d, w
    mirror = data.resolve_mirror({})
    if mirror is None:
        raise SystemExit(
            "run the workflow first (it prepares resources/), or set PIXELROBUST_MIRROR"
        )
    d, w = work / "data" / dataset, work / "weights" / f"{model}.pt"
    if not d.is_dir():
        data.prepare_dataset(
            dataset=dataset,
            settings={"source": "sample"} if dataset == "imagenet" else {},
            out={"data": d},
            mirror=mirror,
        )
    if not w.is_file():
        spec = models.resolve_spec(model, {})
        src = models.weights_source(spec, mirror)
        models.get_weights(spec=spec, source=src["path"], out={"weights": w}, sha256=src["sha256"])
    return d, w


def correct_indices(model, split, n: int, device) -> torch.Tensor:
    """Test-set indices of the first ``n`` images ``model`` classifies correctly."""
    from pixelrobust.evaluate import predict

    pred = predict(model, split.images, 512, device).argmax(1)
    return (pred == split.labels).nonzero().squeeze(1)[:n]


def correct_images(model, split, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images ``model`` classifies correctly, and their labels (on the CPU)."""
    idx = correct_indices(model, split, n, device)
    return split.images[idx], split.labels[idx]


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0
