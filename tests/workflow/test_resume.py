"""Kill long-running workflow jobs (PRM training, the one-pixel search) and rerun: the result equals an uninterrupted run's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from helpers import SNAKEMAKE, TINY, snakemake

pytestmark = pytest.mark.workflow

TARGET = "results/p3/prm/resnet20_cifar10/s2-r0/history.csv"
PRM_DIR = "results/p3/prm/resnet20_cifar10/s2-r0"
# the tiny config, but a training long enough to be killed in the middle (60 steps, about 10 s on 2 CPU cores)
LONGER = """
prm:
  models: [resnet20_cifar10]
  lattice: s2
  depth: 2
  start_filters: 8
  residual: true
  train:
    images: {cifar10: {split: train, start: 0, stop: 512}}
    epochs: 10
    max_steps: 60
    batch_size: 16
    lr: 0.001
    recon_ratio: 0.5
    train_lambda: 1.0
    augment: true
    checkpoint_every: 10
  sweep: {lambdas: [0, 1], n_images: {cifar10: 8}, topk_percent: 25}
"""


@pytest.fixture(scope="module")
def args(tmp_path_factory):
    override = tmp_path_factory.mktemp("config") / "longer_training.yaml"
    override.write_text(LONGER)
    return [*TINY, str(override), "--cores", "2", "--resources", "gpu=1"]


@pytest.fixture(scope="module")
def uninterrupted(mirror, tmp_path_factory, args):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    snakemake([TARGET, *args], workdir, mirror)
    return workdir


def _run_and_kill(workdir, mirror, args, sig, ready, what: str, before_kill=None) -> None:
    """Start the workflow, wait until ``ready()``, call ``before_kill``, send ``sig`` to its process group."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "PIXELROBUST_MIRROR"},
        "PIXELROBUST_MIRROR": str(mirror),
    }
    proc = subprocess.Popen(
        [*SNAKEMAKE, "--directory", str(workdir), *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the workflow ended (rc {proc.returncode}) before {what}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what} never happened")
            time.sleep(0.1)
        if before_kill is not None:
            before_kill(proc)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _kill_during_training(workdir, mirror, sig, args) -> int:
    """Kill the workflow once training has checkpointed past step 30; the checkpoint's step."""
    log = workdir / "results" / "logs" / "train_prm" / "resnet20_cifar10" / "s2-r0.log"
    ckpt = workdir / PRM_DIR / "resume.pt"
    _run_and_kill(
        workdir,
        mirror,
        [TARGET, *args],
        sig,
        lambda: ckpt.is_file() and log.is_file() and "step 30/60" in log.read_text(),
        "training reached step 30",
    )
    return torch.load(ckpt, weights_only=False)["step"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_training_resumes_to_the_same_result(uninterrupted, mirror, tmp_path, sig, args):
    t0 = time.monotonic()
    step = _kill_during_training(tmp_path, mirror, sig, args)
    killed_after = time.monotonic() - t0
    assert 30 <= step < 60, f"checkpoint at step {step}"
    # nothing of the killed job counts as a result
    assert not (tmp_path / PRM_DIR / "prm.pt").exists() and not (tmp_path / TARGET).exists()

    t1 = time.monotonic()
    if sig == signal.SIGKILL:  # a hard kill leaves Snakemake's lock behind: the documented way out
        snakemake([TARGET, *args, "--unlock"], tmp_path, mirror)
    snakemake([TARGET, *args, "--rerun-incomplete"], tmp_path, mirror)
    print(
        f"{sig.name}: killed after {killed_after:.1f} s at checkpoint step {step}; resumed run {time.monotonic() - t1:.1f} s"
    )
    log = (
        tmp_path / "results" / "logs" / "train_prm" / "resnet20_cifar10" / "s2-r0.log"
    ).read_text()
    assert f"resuming PRM training from {PRM_DIR}/resume.pt at step {step} of 60" in log
    assert not (tmp_path / PRM_DIR / "resume.pt").exists()

    assert (tmp_path / TARGET).read_bytes() == (uninterrupted / TARGET).read_bytes()
    a = torch.load(uninterrupted / PRM_DIR / "prm.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / PRM_DIR / "prm.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SEARCH_DIR = "results/p1/onepixel/resnet20_cifar10"
SEARCH_OUT = [
    "chunk-0.npz",
    "chunk-0-images.csv",
    "chunk-0-regions.csv",
    "chunk-0-de.csv",
    "chunk-0.provenance.json",
]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_search_reruns_to_the_same_result(tiny_run, mirror, tmp_path, sig):
    """Kill the one-pixel search (exhaustive map + DE) mid-job: none of its outputs remains, and the
    rerun equals the uninterrupted tiny run's chunk."""
    target = f"{SEARCH_DIR}/{SEARCH_OUT[0]}"
    shutil.copytree(
        tiny_run / "resources", tmp_path / "resources"
    )  # prepared data and weights (mtimes kept)
    args = [target, *TINY, "--cores", "2", "--resources", "gpu=1"]
    log = tmp_path / "results" / "logs" / "onepixel_search" / "resnet20_cifar10" / "0.log"

    def mid_search(proc):
        time.sleep(2.0)  # inside the exhaustive search (about 10 s for this image)
        assert proc.poll() is None and "vulnerable pixels" not in log.read_text(), (
            "the search finished before the kill"
        )

    _run_and_kill(
        tmp_path,
        mirror,
        args,
        sig,
        lambda: log.is_file() and "device cpu" in log.read_text(),
        "the search started",
        mid_search,
    )
    leftovers = (
        [p.name for p in (tmp_path / SEARCH_DIR).glob("*")]
        if (tmp_path / SEARCH_DIR).exists()
        else []
    )
    assert not leftovers, f"the killed search left {leftovers}"

    if sig == signal.SIGKILL:
        snakemake([*args, "--unlock"], tmp_path, mirror)
    snakemake([*args, "--rerun-incomplete"], tmp_path, mirror)
    for name in SEARCH_OUT[1:4]:
        assert (tmp_path / SEARCH_DIR / name).read_bytes() == (
            tiny_run / SEARCH_DIR / name
        ).read_bytes(), name
    with np.load(tmp_path / target) as a, np.load(tiny_run / target) as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
