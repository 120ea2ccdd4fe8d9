"""The defence table's attacks lower ResNet-20's accuracy on real CIFAR-10 images, within their budgets."""

from __future__ import annotations

import pytest
import torch

from pixelrobust import data
from pixelrobust.attacks import build_attack


@pytest.fixture(scope="module")
def images(prepared):
    return data.load_split(prepared / "data" / "cifar10", "test", 0, 16)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize(
    "name,settings,n,max_acc",
    [
        ("pgd", {"steps": 10}, 16, 0.05),
        ("deepfool", {}, 16, 0.05),
        ("cw", {"outer_steps": 2, "steps": 30}, 8, 0.25),
        ("onepixel", {"popsize": 100, "maxiter": 10}, 16, 0.95),  # a weak budget: some images fall
        ("jsma", {"gamma": 0.05}, 2, 0.5),
    ],
)
def test_attack_lowers_accuracy(resnet20, images, name, settings, n, max_acc):
    x, y = images.images[:n], images.labels[:n]
    clean = accuracy(resnet20, x, y)
    adv = build_attack(name, resnet20, settings, seed=0)(x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert accuracy(resnet20, adv, y) <= min(max_acc, clean - 1 / n)


def test_attack_norms_match_their_threat_models(resnet20, images):
    x, y = images.images[:8], images.labels[:8]
    one = build_attack("onepixel", resnet20, {"popsize": 20, "maxiter": 2})(x, y)
    assert ((one - x).abs().sum(1) > 0).flatten(1).sum(1).max() <= 1  # one pixel at most
    pgd = build_attack("pgd", resnet20, {"steps": 3})(x, y)
    assert (pgd - x).abs().max() <= 8 / 255 + 1e-6
    df = build_attack("deepfool", resnet20)(x, y)
    assert (df - x).flatten(1).norm(dim=1).mean() < 0.5  # minimal L2 perturbations are small on CIFAR


def test_attack_errors(resnet20):
    with pytest.raises(ValueError, match="unknown attack"):
        build_attack("fgsm", resnet20)
    with pytest.raises(ValueError, match="quadratic"):
        build_attack("jsma", resnet20)(torch.rand(1, 3, 224, 224), torch.zeros(1, dtype=torch.long))
