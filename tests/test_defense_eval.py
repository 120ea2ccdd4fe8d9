"""P3's defence table: the cell logic on real images, the defence rate, the merged table."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from pixelrobust import data
from pixelrobust.defense_eval import ATTACKS, DEFENSES, TABLE_COLUMNS, defense_chunk, defense_rate, defense_table, pivot
from pixelrobust.prm import PRM, freeze

SETTINGS = {"stochastic_prm": {"lambdas": [0, 0.5, 1], "shifts": "lattice"},
            "region_based": {"radius": 0.02, "samples": 8, "batch_size": 8},
            "randomization": {"scale": [0.9, 1.0]},
            "pixel_deflection": {"deflections": 10, "window": 3, "sigma": 0.04}}


@pytest.fixture(scope="module")
def images(prepared):
    return data.load_split(prepared / "data" / "cifar10", "test", 0, 6)


@pytest.fixture(scope="module")
def prm():
    torch.manual_seed(0)
    return freeze(PRM("s2", 2, 8, residual=True))


def chunk(resnet20, images, prm, attack, settings=None, protocols=("graybox", "adaptive"), seed=0):
    return defense_chunk(resnet20, images.images, images.labels, attack=attack, attack_settings=settings or {},
                         defenses=SETTINGS, protocols=list(protocols), eot_samples=2, seed=seed, batch_size=64, prms=[prm])


def test_pgd_cells_on_real_images(resnet20, images, prm):
    df = chunk(resnet20, images, prm, "pgd", {"steps": 5, "alpha": 0.01, "eps": 0.031})
    assert list(df.columns) == ["defense", "attack", "protocol", "n_images", "n_correct", "seconds"]
    assert len(df) == 2 * len(DEFENSES) and set(df.defense) == set(DEFENSES)
    cell = df.set_index(["defense", "protocol"]).n_correct
    clean = chunk(resnet20, images, prm, "clean", protocols=("graybox",)).set_index("defense").n_correct
    assert clean["none"] >= 5  # ResNet-20 gets 5 or 6 of the first 6 right
    assert cell["none", "graybox"] == cell["none", "adaptive"] <= 1  # white-box PGD at 8/255 breaks it
    # the adaptive (EOT) attack leaves at most one image more than the gray-box transfer on each defence
    for d in DEFENSES[1:]:
        assert cell[d, "adaptive"] <= cell[d, "graybox"] + 1, d
    assert (df.seconds > 0).all()
    again = chunk(resnet20, images, prm, "pgd", {"steps": 5, "alpha": 0.01, "eps": 0.031})
    assert again.n_correct.tolist() == df.n_correct.tolist(), "seeded defences and attacks reproduce"


def test_bad_cells_are_refused(resnet20, images, prm):
    with pytest.raises(ValueError, match="unknown attack"):
        chunk(resnet20, images, prm, "fgsm")
    with pytest.raises(ValueError, match="protocols"):
        chunk(resnet20, images, prm, "pgd", protocols=("whitebox",))


def test_defense_rate():
    assert defense_rate(0.9, 0.1, 0.9) == 1 and defense_rate(0.9, 0.1, 0.1) == 0
    assert defense_rate(0.9, 0.1, 0.5) == pytest.approx(0.5)
    assert math.isnan(defense_rate(0.9, 0.9, 0.5))  # the attack took nothing


def test_table_sums_chunks_and_adds_rates(tmp_path):
    paths = []
    for c in range(2):  # chunk c: clean 10 − c correct of 10, undefended under attack 1 − c, defended 6 − c
        rows = [{"defense": d, "attack": a, "protocol": "graybox", "n_images": 10,
                 "n_correct": (10 if a == "clean" else 1 if d == "none" else 6) - c, "seconds": 1.5}
                for d in DEFENSES for a in ["clean", *ATTACKS]]
        paths.append(str(tmp_path / f"chunk-{c}.csv"))
        pd.DataFrame(rows).to_csv(paths[-1], index=False)
    t = defense_table({"resnet20_cifar10": paths}, {"resnet20_cifar10": "cifar10"})
    assert list(t.columns) == TABLE_COLUMNS and len(t) == len(DEFENSES) * 6
    row = t[(t.defense == "region_based") & (t.attack == "pgd")].iloc[0]
    assert row.n_images == 20 and row.top1 == pytest.approx(11 / 20) and row.seconds == 3.0
    assert row.defense_rate == pytest.approx(1 - (19 / 20 - 11 / 20) / (19 / 20 - 1 / 20))
    assert t[t.attack == "clean"].defense_rate.isna().all()
    grid = pivot(t)["graybox", "cifar10", "resnet20_cifar10"]
    assert list(grid.index) == DEFENSES and list(grid.columns) == ["clean", *ATTACKS]
