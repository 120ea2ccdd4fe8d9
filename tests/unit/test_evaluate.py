"""pixelrobust.evaluate: the chance check of clean accuracy (a binomial bound), per chunk and over all chunks."""

from __future__ import annotations

import math

import pytest

from pixelrobust import evaluate, io
from pixelrobust.errors import ModelError

# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def binom_sf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= k), summed exactly."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.parametrize("n,classes", [(64, 10), (1017, 10), (32, 100), (32, 1000), (500, 1000)])
def test_chance_threshold_is_the_binomial_bound(n, classes):
    k = evaluate.chance_threshold(n, classes)
    a, w = evaluate.CHANCE_ALPHA, evaluate.WORKING_TOP1
    # a model at chance reaches k with probability <= alpha, and k is the least such count
    assert binom_sf(k, n, 1 / classes) <= a < binom_sf(k - 1, n, 1 / classes)
    # a model at the working accuracy falls short of k with probability <= alpha
    assert 1 - binom_sf(k, n, w) <= a


def test_chance_check_says_nothing_on_too_few_images():
    # 10 classes, 32 images: the chance bound is k correct, but a model at 50 % would fall short
    # of k with probability > 1e-3, so the check stays silent
    k = next(k for k in range(33) if binom_sf(k, 32, 0.1) <= evaluate.CHANCE_ALPHA)
    assert 1 - binom_sf(k, 32, 0.5) > evaluate.CHANCE_ALPHA
    assert evaluate.chance_threshold(32, 10) is None
    evaluate.check_above_chance(
        "m", [0] * 32, [0] * 32, 10, "32 images"
    )  # no error: too few to tell
    with pytest.raises(ModelError, match="64 of 64 images are predicted as class 0"):
        evaluate.check_above_chance("m", [1] * 8 + [0] * 56, [0] * 64, 10, "64 images")
    evaluate.check_above_chance(
        "m", [1] * 16 + [0] * 48, [3] * 64, 10, "64 images"
    )  # 16 of 64: above chance


def test_clean_accuracy_table_fails_near_chance_over_all_chunks(tmp_path):
    """Two chunks of 32 are each too few to tell; together (64 images, CIFAR-10) 8 correct is chance."""
    import pandas as pd

    paths = []
    for c in range(2):
        ids = [f"cifar10-test-{c * 32 + i:05d}" for i in range(32)]
        table = pd.DataFrame(
            {
                "image_id": ids,
                "label": [i % 10 for i in range(32)],
                "pred": [0] * 32,
                "top1": [int(i % 10 == 0) for i in range(32)],
                "top5": [1] * 32,
                "p_true": [0.1] * 32,
            }
        )
        io.write_table(table, tmp_path / f"chunk-{c}.csv")
        paths.append(tmp_path / f"chunk-{c}.csv")
    assert sum(pd.read_csv(p).top1.sum() for p in paths) == 8
    with pytest.raises(
        ModelError, match="all 64 test images is 8/64 = 0.125, no better than chance"
    ):
        evaluate.clean_accuracy(
            chunks={"m": paths},
            out={"csv": tmp_path / "t.csv", "md": tmp_path / "t.md"},
            datasets={"m": "cifar10"},
        )
    assert not (tmp_path / "t.csv").exists()
