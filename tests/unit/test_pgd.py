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
