"""Determinism: the randomised stages, rerun from scratch in another folder, give byte-identical
tables and identical arrays on the CPU (seeds derive from the config seed and each job's wildcards)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import TINY, TWO_JOBS, snakemake

pytestmark = pytest.mark.workflow

# The rules that draw random numbers and are cheap on the tiny config: PGD random starts (masked
# PGD, the P2 baselines), PRM initialisation, shuffling and augmentation, the SSIM-ball attack.
TABLES = [
    "masked_pgd.csv",
    "masked_pgd.md",
    "masked_pgd_l2.csv",
    "prm_lambda_sweep.csv",
    "prm_lambda_sweep_detail.csv",
    "ssim_attack.csv",
    "ssim_attack.md",
    "ssim_matched.csv",
]


def test_rerun_from_scratch_is_byte_identical(tiny_run, mirror, tmp_path):
    targets = [f"results/tables/{t}" for t in TABLES]
    snakemake([*targets, *TINY, *TWO_JOBS], tmp_path, mirror)
    for t in targets:
        assert (tmp_path / t).read_bytes() == (tiny_run / t).read_bytes(), (
            f"{t} differs between two runs"
        )
    prm = "results/p3/prm/resnet20_cifar10/s2-r0/prm.pt"
    state_a, state_b = (
        torch.load(root / prm, map_location="cpu", weights_only=True)["state_dict"]
        for root in (tmp_path, tiny_run)
    )
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), f"PRM weight {k} differs"
    npz = "results/p2/mobilenet_v2_imagenet/attack/chunk-0.npz"
    with np.load(tmp_path / npz) as x, np.load(tiny_run / npz) as y:
        assert x.files == y.files
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
