"""pixelrobust.masked_pgd (P3): PGD on the top gradient pixels against PGD on the bottom ones, on real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pixelrobust import data
from pixelrobust.gradients import (
    architecture_gradient_map,
    dataset_gradient_map,
)
from pixelrobust.masked_pgd import accuracy_table, build_masks, masked_pgd_chunk
from pixelrobust.pgd import PGD
from pixelrobust.runtime import derive_seed


def test_masked_pgd_top_gradient_pixels_hurt_more_than_bottom(resnet20, prepared, cifar_test):
    """P3's ordering on real data: PGD on the top 25 % gradient pixels beats PGD on the bottom 25 %."""
    train = data.load_split(prepared / "data" / "cifar10", "train", 0, 256)
    maps = {
        "dataset_map": dataset_gradient_map(resnet20, train.images, train.labels),
        "architecture_map": architecture_gradient_map(resnet20.net, (3, 32, 32)),
    }
    masks = build_masks(maps, ["top", "bottom"], [0, 25, 100], seed=0)
    res = masked_pgd_chunk(
        resnet20,
        cifar_test.images,
        cifar_test.labels,
        masks,
        {"linf": dict(eps=8 / 255, alpha=2 / 255, steps=5)},
        seed=0,
        batch_size=64,
        image_ids=cifar_test.ids,
    )
    assert len(res) == 6 * 64 and set(res.image_id) == set(
        cifar_test.ids
    )  # one row per image and (mask, k)
    acc = {(r.mask, r.k_percent): r.top1 for r in accuracy_table(res).itertuples()}
    # k = 0 and k = 100 give the same mask for top and bottom, attacked once (masked_pgd_chunk's cache): each
    # mask's rows are checked against a computation made here without masks, not against each other
    with torch.no_grad():
        logits = resnet20(cifar_test.images)
    clean = (logits.argmax(1) == cifar_test.labels).int()
    assert clean.float().mean().item() > 0.85
    full = PGD(resnet20, eps=8 / 255, alpha=2 / 255, steps=5, seed=0)(
        cifar_test.images,
        cifar_test.labels,
        seeds=[derive_seed(0, "pgd_start", j) for j in cifar_test.ids],
    )  # no mask, each image's start from its id
    with torch.no_grad():
        full_logits = resnet20(full)
        full_correct = (full_logits.argmax(1) == cifar_test.labels).int()
        full_loss = torch.nn.functional.cross_entropy(
            full_logits, cifar_test.labels, reduction="none"
        )
    assert full_correct.float().mean().item() < 0.1  # full PGD at 8/255 breaks almost every image
    for mask in ("top", "bottom"):
        k0 = res[(res["mask"] == mask) & (res.k_percent == 0)]
        assert k0.correct.tolist() == clean.tolist()  # k = 0: the clean image, row by row
        np.testing.assert_allclose(
            k0.loss,
            torch.nn.functional.cross_entropy(logits, cifar_test.labels, reduction="none"),
            rtol=1e-4,
        )
        k100 = res[(res["mask"] == mask) & (res.k_percent == 100)]
        assert (
            k100.correct.tolist() == full_correct.tolist()
        )  # k = 100: unmasked PGD, row by row ...
        # ... and by loss: PGD at 8/255 breaks almost every image, so 0/1 outcomes alone would pass a k = 100 mask
        # that misses some pixels; the same per-image starts give the same attack, so the losses agree too
        np.testing.assert_allclose(k100.loss, full_loss, rtol=1e-4)
    assert acc["top", 25.0] < acc["bottom", 25.0] - 0.15
    # per image, the attacked loss is at least the clean one for most images (PGD ascends the loss)
    k25 = res[(res["mask"] == "top") & (res.k_percent == 25)]
    assert (k25.loss.to_numpy() >= k0.loss.to_numpy() - 1e-4).mean() > 0.9


def test_masked_pgd_outcomes_do_not_depend_on_the_chunk(resnet20, cifar_test):
    """Each image's random start comes from its id, so the same images attacked as one chunk or as two
    chunks (other batches, other positions) get the same per-image rows; seeding per batch would not."""
    mask = build_masks(
        {"dataset_map": torch.rand(32, 32, generator=torch.Generator().manual_seed(3))},
        ["top", "random"],
        [10],
        seed=0,
    )
    settings = {
        "linf": dict(eps=4 / 255, alpha=1 / 255, steps=3),
        "l2": dict(eps=0.3, alpha=0.1, steps=3),
    }
    x, y, ids = cifar_test.images[:24], cifar_test.labels[:24], cifar_test.ids[:24]
    whole = masked_pgd_chunk(resnet20, x, y, mask, settings, seed=5, batch_size=8, image_ids=ids)
    parts = [
        masked_pgd_chunk(
            resnet20, x[a:b], y[a:b], mask, settings, seed=5, batch_size=5, image_ids=ids[a:b]
        )
        for a, b in ((0, 7), (7, 24))
    ]
    key = ["norm", "mask", "k_percent", "image_id"]
    a = whole.sort_values(key).reset_index(drop=True)
    b = pd.concat(parts).sort_values(key).reset_index(drop=True)
    assert a[key + ["correct"]].equals(b[key + ["correct"]])
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-4, atol=1e-6)
    # the starts matter: another seed moves the losses
    other = masked_pgd_chunk(resnet20, x, y, mask, settings, seed=6, batch_size=8, image_ids=ids)
    assert np.abs(other.sort_values(key).loss.to_numpy() - a.loss.to_numpy()).max() > 1e-3
