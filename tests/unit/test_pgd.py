"""pixelrobust.pgd: projected gradient descent stays in its ball, its box and its pixel mask, on real images."""

from __future__ import annotations

import pytest
import torch

from pixelrobust.gradients import (
    pixel_mask,
)
from pixelrobust.pgd import PGD

# ---- PGD --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_respects_ball_box_and_mask(resnet20, cifar_test, norm, eps):
    x, y = cifar_test.images[:16], cifar_test.labels[:16]
    mask = pixel_mask(torch.rand(32, 32, generator=torch.Generator().manual_seed(0)), 25, "top")
    adv = PGD(resnet20, eps=eps, alpha=eps / 4, steps=5, norm=norm, seed=1)(x, y, mask)
    delta = adv - x
    assert adv.min() >= 0 and adv.max() <= 1
    assert (delta[:, :, ~mask] == 0).all(), "perturbation outside the mask"
    size = delta.abs().amax(dim=(1, 2, 3)) if norm == "linf" else delta.flatten(1).norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert delta.abs().sum() > 0


def test_pgd_without_steps_or_budget_returns_the_input(resnet20, cifar_test):
    x, y = cifar_test.images[:4], cifar_test.labels[:4]
    assert torch.equal(PGD(resnet20, steps=0, random_start=False)(x, y), x)
    assert torch.equal(PGD(resnet20, eps=0, steps=3)(x, y), x)
    with pytest.raises(ValueError, match="norm"):
        PGD(resnet20, norm="l1")
    with pytest.raises(ValueError, match="mask"):
        PGD(resnet20)(x, y, torch.ones(16, 16, dtype=torch.bool))


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_per_image_seeds_make_an_image_s_start_independent_of_its_batch(
    resnet20, cifar_test, norm, eps
):
    """With one seed per image, image i gets the same random start alone as in any batch, at any position;
    with the batch's single seed it would not (the draws are consumed in batch order)."""
    x, y = cifar_test.images[:6], cifar_test.labels[:6]
    seeds = [11, 12, 13, 14, 15, 16]
    start = PGD(
        resnet20, eps=eps, steps=0, norm=norm
    )  # steps 0: the output is x + the random start
    whole = start(x, y, seeds=seeds)
    assert not torch.equal(whole, x)
    for part in ([3], [4, 1], [5, 0, 2]):
        alone = start(x[part], y[part], seeds=[seeds[i] for i in part])
        assert torch.equal(alone, whole[part]), part
    # the same seeds in another order follow their images; another seed gives another start
    assert not torch.equal(start(x[:1], y[:1], seeds=[99]), whole[:1])
    # and the attack itself: 3 steps on a sub-batch end where they end in the whole batch
    attack = PGD(resnet20, eps=eps, alpha=eps / 4, steps=3, norm=norm)
    full = attack(x, y, seeds=seeds)
    torch.testing.assert_close(attack(x[[4, 1]], y[[4, 1]], seeds=[15, 12]), full[[4, 1]])
    with pytest.raises(ValueError, match="2 seeds for a batch of 6"):
        start(x, y, seeds=[1, 2])
