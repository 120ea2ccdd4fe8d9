"""Shared fixtures. Real data comes from the mirror: $PIXELROBUST_MIRROR, else ../shared/data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def mirror_path() -> Path:
    value = os.environ.get("PIXELROBUST_MIRROR") or str(REPO.parent / "shared" / "data")
    return Path(value).resolve()


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = mirror_path()
    if not (path / "cifar-10-batches-py").is_dir():
        pytest.fail(
            f"the tests need the reference data: {path} is not a data mirror. "
            "Set PIXELROBUST_MIRROR to a folder laid out like ../shared/data (see README)."
        )
    return path


@pytest.fixture(scope="session")
def prepared(mirror, tmp_path_factory) -> Path:
    """resources/ built from the mirror once per session: data/<dataset> and weights/<model>.pt."""
    from pixelrobust import data, models

    root = tmp_path_factory.mktemp("resources")
    for ds in data.DATASETS:
        data.prepare_dataset(ds, {"source": "sample"}, root / "data" / ds, mirror=mirror)
    for name in models.MODELS:
        spec = models.resolve_spec(name, {})
        src = models.weights_source(spec, mirror)
        models.prepare_weights(spec, src["path"], root / "weights" / f"{name}.pt", src["sha256"])
    return root


@pytest.fixture(scope="session")
def resnet20(prepared):
    """The pretrained CIFAR-10 ResNet-20, frozen (no parameter gradients), in eval mode."""
    from pixelrobust import models

    model = models.build_model(models.resolve_spec("resnet20_cifar10", {}), prepared / "weights" / "resnet20_cifar10.pt")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def mobilenet(prepared):
    """The ImageNet MobileNetV2 of the mirror, frozen, in eval mode."""
    from pixelrobust import models

    model = models.build_model(models.resolve_spec("mobilenet_v2_imagenet", {}),
                               prepared / "weights" / "mobilenet_v2_imagenet.pt")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def imagenet(prepared):
    """The first four prepared ImageNet sample images and their labels."""
    from pixelrobust import data

    split = data.load_split(prepared / "data" / "imagenet", "test", 0, 4)
    return split.images, split.labels


SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
DEFAULT = ["--configfile", str(REPO / "config" / "config.yaml")]  # relative to the working directory otherwise
TINY = ["--configfile", str(REPO / "config" / "tiny.yaml")]


def snakemake(args, workdir, mirror=None, check=True, timeout=1200, env=None, unset=()):
    """Run snakemake on the repository's workflow in ``workdir``; ``env`` adds variables, ``unset`` drops them."""
    drop = {"PIXELROBUST_MIRROR", *unset}
    env = {**{k: v for k, v in os.environ.items() if k not in drop}, **(env or {})}
    if mirror is not None:
        env["PIXELROBUST_MIRROR"] = str(mirror)
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], env=env, cwd=workdir,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(mirror, tmp_path_factory) -> Path:
    """A local run of config/tiny.yaml on the mirror (shared by the workflow and SLURM tests)."""
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake([*TINY, "--cores", "2"], workdir, mirror)
    return workdir
