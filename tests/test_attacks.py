"""The defence table's attacks lower ResNet-20's accuracy on real CIFAR-10 images, within their budgets."""

from __future__ import annotations

import pytest
import torch

from pixelrobust import data
from pixelrobust.attacks import CW, JSMA, build_attack


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
        ("jsma", {"gamma": 0.05}, 8, 0.25),
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
    with pytest.raises(ValueError, match="theta > 0"):
        build_attack("jsma", resnet20, {"theta": 0})
    with pytest.raises(ValueError, match="target must be"):
        build_attack("jsma", resnet20, {"target": "random"})


def test_jsma_equals_torchattacks_textbook_attack(resnet20, images):
    """Two backward passes and the pruned pair search give torchattacks' JSMA images exactly."""
    import torchattacks

    x, y = images.images[:3], images.labels[:3]
    ours = JSMA(resnet20, theta=1.0, gamma=0.02)(x, y)
    ref = torchattacks.JSMA(resnet20, theta=1.0, gamma=0.02)(x, y)
    assert torch.equal(ours, ref)
    assert ((ours != x).flatten(1).sum(1) > 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_jsma_pruned_pair_search_is_exact(seed):
    """The bound-pruned search returns the brute-force best pair (first in row-major order)."""
    g = torch.Generator().manual_seed(seed)
    n = 700
    t, o = torch.randn(n, generator=g), torch.randn(n, generator=g)
    domain = torch.rand(n, generator=g) < 0.8
    alpha, beta = t[:, None] + t[None, :], o[:, None] + o[None, :]
    valid = (alpha > 0) & (beta < 0) & domain[:, None] & domain[None, :] & ~torch.eye(n, dtype=torch.bool)
    sal = torch.where(valid, alpha * -beta, torch.zeros(()))
    idx = int(sal.flatten().argmax())
    assert JSMA(None, pair_features=n)._pair(t, o, domain) == (idx // n, idx % n)


def test_jsma_runs_at_imagenet_size():
    """224×224×3 = 150 528 features: the pair search stays within pair_features² (no 90 GB map)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.Flatten(), torch.nn.Linear(4 * 28 * 28, 10)).eval()
    x = torch.rand(2, 3, 224, 224) * 0.9
    y = net(x).argmax(1)
    adv = JSMA(net, gamma=2e-4, pair_features=256)(x, y)
    changed = (adv != x).flatten(1).sum(1)
    assert (changed <= 2 * 16).all() and (changed > 0).all()  # ceil(150528 · 2e-4 / 2) = 16 iterations


def test_cw_abort_early_stops_a_stalled_inner_loop(resnet20, images):
    """Carlini & Wagner's abort: a stalled loss ends the inner loop; without it every step runs."""
    calls = []

    class Counted(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return resnet20(x)

    x, y = images.images[:4], images.labels[:4]
    CW(Counted(), c=1.0, outer_steps=1, steps=60, abort_early=False)(x, y)
    assert len(calls) == 60
    calls.clear()
    adv = CW(Counted(), c=1.0, outer_steps=1, steps=60, abort_early=True)(x, y)
    assert len(calls) < 60 and accuracy(resnet20, adv, y) == 0.0  # it stops after fooling all four
