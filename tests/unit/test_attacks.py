"""The defence table's attacks lower ResNet-20's accuracy on real CIFAR-10 images, within their budgets."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from pixelrobust import data, models
from pixelrobust.attacks import CW, JSMA, BoxPGD, build_attack
from pixelrobust.onepixel import DifferentialEvolution


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
        ("jsma", {"gamma": 0.05}, 8, 0.25),
        (
            "pgd",
            {
                "norm": "l2_box",
                "alpha_space": "normalized",
                "alpha": 0.1,
                "eps": 0.031,
                "steps": 30,
            },
            8,
            0.05,
        ),  # the authors' pgd_l2 form
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
    assert (df - x).flatten(1).norm(
        dim=1
    ).mean() < 0.5  # minimal L2 perturbations are small on CIFAR


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
    valid = (
        (alpha > 0)
        & (beta < 0)
        & domain[:, None]
        & domain[None, :]
        & ~torch.eye(n, dtype=torch.bool)
    )
    sal = torch.where(valid, alpha * -beta, torch.zeros(()))
    idx = int(sal.flatten().argmax())
    assert JSMA(None, pair_features=n)._pair(t, o, domain) == (idx // n, idx % n)


def test_jsma_runs_at_imagenet_size():
    """224×224×3 = 150 528 features: the pair search stays within pair_features² (no 90 GB map)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.Flatten(), torch.nn.Linear(4 * 28 * 28, 10)
    ).eval()
    x = torch.rand(2, 3, 224, 224) * 0.9
    y = net(x).argmax(1)
    adv = JSMA(net, gamma=2e-4, pair_features=256)(x, y)
    changed = (adv != x).flatten(1).sum(1)
    assert (changed <= 2 * 16).all() and (
        changed > 0
    ).all()  # ceil(150528 · 2e-4 / 2) = 16 iterations


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


# ---- JSMA: the authors' settings (theta in normalised space, least-likely target, re-picking) ----

STD = (0.1, 0.2, 0.4)  # a normalisation with three different stds, so a per-channel step is visible


def normalised_net(seed=0, classes=4, size=6):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * size * size, classes))
    with (
        torch.no_grad()
    ):  # weights × std: pixel gradients of every channel alike, so all channels get chosen
        net[1].weight.mul_(torch.tensor(STD).repeat_interleave(size * size))
    return models.Classifier(net, mean=(0.5, 0.5, 0.5), std=STD).eval()


def test_jsma_in_normalised_space_steps_theta_times_the_channel_std():
    """θ in normalised space is θ·std_c in pixels: every changed feature moved by exactly that, once."""
    model = normalised_net()
    x = (
        torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(1)) * 0.5
    )  # + θ·std ≤ 0.7: no clipping
    y = model(x).argmax(1)
    theta = 0.5
    adv = JSMA(
        model, theta=theta, gamma=1.0, max_iters=10, theta_space="normalized", target="least_likely"
    )(x, y)
    d = adv - x
    changed = d != 0
    assert (
        changed.flatten(1).sum(1).min() >= 2 and changed.flatten(1).sum(1).max() <= 20
    )  # two features per iteration
    expected = (
        (theta * torch.tensor(STD)).view(1, 3, 1, 1).expand_as(d)
    )  # from the normalisation constants
    assert torch.allclose(d[changed], expected[changed], atol=1e-6)
    assert changed.any(-1).any(-1).any(0).all()  # features of every channel were chosen


def test_jsma_until_clipped_chooses_a_feature_again():
    """The authors' search domain: a feature stays until it reaches the clip bound, so it moves by
    whole multiples of θ·std_c (or to 1); the textbook domain moves each feature once."""
    torch.manual_seed(0)
    w = torch.zeros(4, 3, 6, 6)
    w[1, 2, 0, 0] = w[1, 2, 0, 1] = (
        10.0  # class 1 rises with two blue features, every other class falls
    )
    w[[0, 2, 3], 2, 0, 0] = w[[0, 2, 3], 2, 0, 1] = -1.0
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 36, 4))
    with torch.no_grad():
        net[1].weight.copy_(w.flatten(1))
        net[1].bias.copy_(
            torch.tensor([30.0, 0.0, 0.0, -50.0])
        )  # class 0 leads, class 3 is least likely
    model = models.Classifier(net, mean=(0.5, 0.5, 0.5), std=STD).eval()
    x = torch.full((1, 3, 6, 6), 0.1)
    y = torch.tensor([0])
    kw = dict(
        theta=0.5, gamma=1.0, max_iters=3, theta_space="normalized", target="next"
    )  # target: class 1
    once = JSMA(model, search_domain="once", **kw)(x, y) - x
    again = JSMA(model, search_domain="until_clipped", **kw)(x, y) - x
    step = 0.5 * STD[2]  # 0.1 + 3 steps of 0.2 = 0.7: no clipping
    assert torch.allclose(
        once[once != 0], torch.full(((once != 0).sum(),), step)
    )  # each feature once
    assert torch.allclose(
        again[0, 2, 0, :2], torch.full((2,), 3 * step)
    )  # the same two features, three times
    assert (again != 0).sum() == 2


def test_jsma_least_likely_target_is_the_argmin_of_the_clean_logits():
    logits = torch.tensor([[3.0, -1.0, 0.5, -4.0], [0.0, 2.0, -0.1, 1.0]])
    assert JSMA(None, target="least_likely").targets(logits, torch.tensor([0, 1])).tolist() == [
        3,
        2,
    ]
    assert JSMA(None, target="next").targets(logits, torch.tensor([0, 3])).tolist() == [1, 0]
    assert JSMA(None, target="second").targets(logits, torch.tensor([0, 1])).tolist() == [2, 3]


def test_jsma_with_the_authors_settings_fools_resnet20(resnet20, images):
    """θ = 1 in normalised space, γ = 0.1, least-likely target, re-picking: every image ends at its
    least likely class; unclipped features moved by whole multiples of θ·std_c of ResNet-20's normalisation."""
    x, y = images.images[:4], images.labels[:4]
    settings = {
        "theta": 1.0,
        "gamma": 0.1,
        "theta_space": "normalized",
        "target": "least_likely",
        "search_domain": "until_clipped",
    }
    adv = build_attack("jsma", resnet20, settings)(x, y)
    with torch.no_grad():
        least = resnet20(x).argmin(1)
        pred = resnet20(adv).argmax(1)
    assert (pred == least).all() and (pred != y).all()
    std = (
        torch.tensor(models.resolve_spec("resnet20_cifar10", {})["std"])
        .view(1, 3, 1, 1)
        .expand_as(x)
    )
    moved = (adv != x) & (adv < 1)
    k = (adv - x)[moved] / std[moved]  # θ = 1: whole numbers of steps
    assert moved.any() and torch.allclose(k, k.round(), atol=1e-4) and (k.round() >= 1).all()


# ---- PGD in the authors' form ------------------------------------------------------------------


def test_box_pgd_steps_in_normalised_space(resnet20, images):
    """A sign step of α in normalised space is α·std_c in pixels; an L2 step has normalised-space norm α."""
    x = images.images[:2] * 0.8 + 0.1  # away from 0 and 1: no clipping in one small step
    y = images.labels[:2]
    std = torch.tensor(models.resolve_spec("resnet20_cifar10", {})["std"]).view(1, 3, 1, 1)
    alpha = 0.01
    d = BoxPGD(resnet20, eps=1.0, alpha=alpha, steps=1, norm="linf")(x, y) - x
    assert torch.allclose(d.abs(), (alpha * std).expand_as(d), atol=1e-6)
    d = BoxPGD(resnet20, eps=1.0, alpha=alpha, steps=1, norm="l2_box")(x, y) - x
    assert torch.allclose((d / std).flatten(1).norm(dim=1), torch.full((2,), alpha), rtol=1e-4)
    d = BoxPGD(resnet20, eps=1.0, alpha=alpha, steps=1, norm="linf", alpha_space="pixel")(x, y) - x
    assert torch.allclose(d.abs(), torch.full_like(d, alpha), atol=1e-6)
    box = build_attack(
        "pgd",
        resnet20,
        {"norm": "l2_box", "alpha_space": "normalized", "alpha": 1.0, "eps": 0.031, "steps": 5},
    )(x, y)
    assert (box - x).abs().max() <= 0.031 + 1e-6 and (
        box - x
    ).abs().max() > 0.03  # the per-pixel box, reached


def test_settings_in_normalised_space_need_a_normalisation_and_valid_keys(resnet20):
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    with pytest.raises(ValueError, match="theta_space / alpha_space: pixel"):
        JSMA(bare, theta_space="normalized")(torch.rand(1, 3, 4, 4), torch.tensor([0]))
    with pytest.raises(ValueError, match="theta_space must be"):
        build_attack("jsma", resnet20, {"theta_space": "logit"})
    with pytest.raises(ValueError, match="search_domain must be"):
        build_attack("jsma", resnet20, {"search_domain": "never"})
    with pytest.raises(ValueError, match="box PGD takes norm linf or l2_box"):
        build_attack("pgd", resnet20, {"norm": "l2", "alpha_space": "normalized"})
    with pytest.raises(ValueError, match="random_start: false"):
        build_attack("pgd", resnet20, {"norm": "l2_box", "random_start": True})
    with pytest.raises(ValueError, match="alpha_space must be"):
        build_attack("pgd", resnet20, {"alpha_space": "logit"})


# ---- differential evolution: its selection step matters ----------------------------------------

SIDE, PLANT, COLOUR = 16, (11, 4), (0.8, 0.25, 0.7)
SIGMA_P, SIGMA_C, TAU, KAPPA = 4.0, 0.6, 0.96, 5.0


class PlantedPixel(torch.nn.Module):
    """Class 1 wins only when the changed pixel is PLANT and its colour lies within
    r = σ_c·sqrt(−ln τ) of COLOUR: score s = max over changed pixels of exp(−‖c − COLOUR‖²/σ_c² −
    d(p, PLANT)²/σ_p²), logits (κ(τ − s), 0). Any other pixel has s ≤ exp(−1/σ_p²) < τ. The
    true-class probability falls smoothly towards the target, which selection can follow."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        r, c = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
        self.dp = ((r - PLANT[0]) ** 2 + (c - PLANT[1]) ** 2).float() / SIGMA_P**2
        self.colour = torch.tensor(COLOUR).view(1, 3, 1, 1)

    def forward(self, x):
        changed = (x != self.base).any(1)
        s = (
            (torch.exp(-((x - self.colour) ** 2).sum(1) / SIGMA_C**2 - self.dp) * changed)
            .flatten(1)
            .amax(1)
        )
        return torch.stack([KAPPA * (TAU - s), torch.zeros_like(s)], 1)


def planted_threshold(n: int, budget: int) -> tuple[int, float]:
    """The fewest successes in ``n`` images that a uniform random search of ``budget`` candidates
    (uniform pixel, uniform colour in the RGB cube) reaches with probability below 1e-6, and its
    per-image success probability: the success set is one pixel × a colour ball of radius r."""
    assert math.exp(-1 / SIGMA_P**2) < TAU  # only the planted pixel can succeed
    r = SIGMA_C * math.sqrt(-math.log(TAU))
    assert all(r < c < 1 - r for c in COLOUR)  # the ball lies inside the cube
    q = 4 / 3 * math.pi * r**3 / SIDE**2
    p = 1 - (1 - q) ** budget
    k = next(k for k in range(n + 1) if stats.binom.sf(k - 1, n, p) < 1e-6)
    return k, p


def test_de_selection_beats_random_search_of_the_same_budget():
    """Issue #24: without its selection step (trials always or never replacing their parents) DE is a
    random search; with it, it climbs to the one pixel and colour that flip the planted model.
    Threshold: more successes than a uniform random search of the same budget reaches with
    probability 1e-6 (binomial tail); the same random search, run, stays below it."""
    n, popsize, maxiter = 20, 40, 40
    budget = popsize * (maxiter + 1)
    k, p = planted_threshold(n, budget)
    assert p < 0.1 and k <= n // 2  # the bar is far below n and far above chance
    base = torch.full((1, 3, SIDE, SIDE), 0.5)
    model = PlantedPixel(base)
    x, y = base.expand(n, 3, SIDE, SIDE).clone(), torch.zeros(n, dtype=torch.long)
    results = DifferentialEvolution(model, popsize, maxiter, seed=0)(x, y)
    assert sum(r.success for r in results) >= k
    assert all(r.pixel == PLANT for r in results if r.success)
    # the table's entry point (OnePixel writes the winning pixel): its images are misclassified
    adv = build_attack("onepixel", model, {"popsize": popsize, "maxiter": maxiter}, seed=1)(x, y)
    assert int((model(adv).argmax(1) != y).sum()) >= k
    # the control, run: uniform random search of the same budget
    g = torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(n):
        pos = torch.randint(0, SIDE * SIDE, (budget,), generator=g)
        cand = base.expand(budget, 3, SIDE, SIDE).clone()
        cand.view(budget, 3, -1)[torch.arange(budget), :, pos] = torch.rand(budget, 3, generator=g)
        hits += bool((model(cand).argmax(1) == 1).any())
    assert hits < k


def test_onepixel_misclassifies_exactly_where_the_de_succeeded(resnet20, images):
    """On real images the table's OnePixel changes one pixel, and its images are misclassified
    exactly where the DE reports success (the winning pixel and colour are written back)."""
    x, y = images.images[:8], images.labels[:8]
    settings = {"popsize": 50, "maxiter": 3, "batch_size": 100}
    results = DifferentialEvolution(resnet20, 50, 3, seed=0, batch_size=100)(x, y)
    adv = build_attack("onepixel", resnet20, settings, seed=0)(x, y)
    assert ((adv - x).abs().sum(1) > 0).flatten(1).sum(1).max() <= 1
    with torch.no_grad():
        fooled = (resnet20(adv).argmax(1) != y).tolist()
    assert fooled == [r.success for r in results]
