"""One-pixel attacks on a model with a planted vulnerable pixel, and on real images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixelrobust import data, models, onepixel
from pixelrobust.errors import ConfigError
from pixelrobust.onepixel import (
    DifferentialEvolution,
    ExhaustiveSearch,
    RankedSearch,
    low_precision_dtype,
    make_palette,
)

H = W = 8
PLANT = (5, 2)  # (row, col)


class Planted(torch.nn.Module):
    """Class 0 unless the pixel at PLANT is (nearly) pure red-without-green: then class 1."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.record = False

    def forward(self, x):
        if self.record:
            self.seen.append(x.detach().clone())
        f = x[:, 0, PLANT[0], PLANT[1]] - x[:, 1, PLANT[0], PLANT[1]]  # in [-1, 1]
        return torch.stack([torch.full_like(f, 0.5), 10 * (f - 0.9)], dim=1)


def grey(n=1):
    return torch.full((n, 3, H, W), 0.5)


def test_palettes():
    assert make_palette("corners").shape == (8, 3)
    assert make_palette("corners+faces").shape == (14, 3)
    assert make_palette("grid3").shape == (27, 3)
    assert make_palette([[0.2, 0.4, 0.6]]).tolist() == [
        [pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.6)]
    ]
    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\]"):
        make_palette([[0, 0, 255]])
    with pytest.raises(ConfigError, match="unknown palette"):
        make_palette("rainbow")


def test_exhaustive_finds_exactly_the_planted_pixel():
    model = Planted()
    (m,) = ExhaustiveSearch(model, "corners", batch_size=7)(
        grey(), torch.tensor([0])
    )  # odd batch: splits pixels
    assert m.success and m.n_evals == H * W * 8
    assert m.vulnerable.sum() == 1 and m.vulnerable[PLANT]
    palette = make_palette("corners")
    colour = palette[m.best_colour[PLANT]]
    assert colour[0] == 1 and colour[1] == 0  # (1, 0, 0) or (1, 0, 1)
    p_clean, p_red = (
        1 / (1 + np.exp(-9.5)),
        1 / (1 + np.exp(0.5)),
    )  # softmax of (0.5, 10(f - 0.9)) at f = 0, 1
    assert m.p_clean == pytest.approx(p_clean) and m.drop[PLANT] == pytest.approx(
        p_clean - p_red, abs=1e-6
    )
    assert np.nanmax(np.where(m.vulnerable, np.nan, m.drop)) < 1e-6


def test_exhaustive_respects_the_mask_and_targets():
    model = Planted()
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, :3, :] = True  # rows 0-2: the planted pixel is outside
    (m,) = ExhaustiveSearch(model)(grey(), torch.tensor([0]), mask)
    assert not m.success and m.searched.sum() == 3 * W and m.n_evals == 3 * W * 8
    assert np.isnan(m.drop[~m.searched]).all()
    (t,) = ExhaustiveSearch(model)(grey(), torch.tensor([0]), targets=torch.tensor([1]))
    assert t.success and t.vulnerable[PLANT] and t.vulnerable.sum() == 1


def test_ranked_search_finds_the_planted_pixel_where_its_prior_puts_it():
    """Gradient prior: the planted pixel with a red-without-green corner is the first candidate (the
    margin's gradient is +10 on red, -10 on green there, 0 elsewhere); raster: pixel 5*8+2, colour
    (1, 0, 0) = palette index 4, so rank 42*8+4 = 340 and 340 evaluations in batches of 20."""
    (g,) = RankedSearch(Planted(), prior="gradient", batch_size=20)(grey(), torch.tensor([0]))
    assert g.success and g.pixel == PLANT and g.rank == 0 and g.n_evals == 20
    assert g.colour.tolist() == [1.0, 0.0, 0.0]
    assert g.p_true == pytest.approx(
        1 / (1 + np.exp(0.5))
    )  # class 0's probability once the pixel is red
    (r,) = RankedSearch(Planted(), prior="raster", batch_size=20)(grey(), torch.tensor([0]))
    assert r.success and r.pixel == PLANT and r.rank == 42 * 8 + 4 and r.n_evals == 360
    (t,) = RankedSearch(Planted(), batch_size=20)(
        grey(), torch.tensor([0]), targets=torch.tensor([1])
    )
    assert t.success and t.pixel == PLANT and t.rank == 0


def test_ranked_search_keeps_to_its_mask_and_budget():
    model = Planted()
    model.record = True
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, :3, :] = True  # the planted pixel is outside
    (m,) = RankedSearch(model, batch_size=7)(grey(), torch.tensor([0]), mask)
    assert (
        not m.success and m.rank == -1 and m.n_evals == 3 * W * 8
    )  # complete: every allowed candidate
    seen = torch.cat(model.seen[1:])  # [0] is the gradient pass on the clean image
    changed = (seen != 0.5).any(1)
    assert (
        len(seen) == 3 * W * 8
        and (changed.sum((1, 2)) == 1).all()
        and not (changed & ~mask[0]).any()
    )
    (b,) = RankedSearch(Planted(), prior="raster", max_evals=100, batch_size=64)(
        grey(), torch.tensor([0])
    )
    assert (
        not b.success and b.n_evals == 100
    )  # the planted candidate is at rank 340, past the budget
    with pytest.raises(ConfigError, match="prior"):
        RankedSearch(Planted(), prior="saliency")
    with pytest.raises(ConfigError, match="max_evals"):
        RankedSearch(Planted(), max_evals=0)
    with pytest.raises(ValueError, match="empty"):
        RankedSearch(Planted())(grey(), torch.tensor([0]), torch.zeros(1, H, W, dtype=torch.bool))


class Hinted(Planted):
    """Planted, plus a hint: red-without-green at HINT, a neighbour of PLANT, lowers class 0's
    probability without flipping the class."""

    def forward(self, x):
        logits = super().forward(x)
        return logits + torch.stack(
            [torch.zeros(len(x)), 2 * (x[:, 0, HINT[0], HINT[1]] - x[:, 1, HINT[0], HINT[1]])], 1
        )


HINT = (4, 2)


def test_neighbourhood_stage_finds_the_pixel_next_to_the_closest_one():
    """Raster prior, budget = every candidate up to and including HINT (pixel 34): the first stage
    fails, HINT has the lowest class-0 probability, and its 3x3 window's unevaluated candidates are
    pixels 35, 41, 42 (PLANT), 43 in raster order: the planted red is the 8 + 8 + 4 = 20th of them."""
    budget = (HINT[0] * W + HINT[1] + 1) * 8
    model = Hinted()
    (plain,) = RankedSearch(model, prior="raster", max_evals=budget, batch_size=16)(
        grey(), torch.tensor([0])
    )
    assert (
        not plain.success and plain.pixel == HINT and plain.n_evals == budget and not plain.refined
    )
    model.record = True
    (r,) = RankedSearch(model, prior="raster", max_evals=budget, batch_size=16, refine_pixels=1)(
        grey(), torch.tensor([0])
    )
    assert r.success and r.refined and r.pixel == PLANT and r.colour.tolist() == [1.0, 0.0, 0.0]
    assert (
        r.rank == budget + 20 and r.n_evals == budget + 32
    )  # batches of 16 in the second stage too
    seen = torch.cat(model.seen)[budget:]
    changed = (
        (seen != 0.5).any(1).flatten(1).float().argmax(1)
    )  # the one changed pixel of each candidate
    assert (
        changed.tolist()[:24] == [35] * 8 + [41] * 8 + [42] * 8
    )  # nothing evaluated twice, nothing outside the window
    # a radius-0 window around HINT holds nothing new; a complete search never needs the stage
    (z,) = RankedSearch(model, prior="raster", max_evals=budget, refine_pixels=1, refine_radius=0)(
        grey(), torch.tensor([0])
    )
    assert not z.success and z.n_evals == budget
    (c,) = RankedSearch(Hinted(), prior="raster", refine_pixels=4, batch_size=16)(
        grey(), torch.tensor([0])
    )
    assert c.success and not c.refined and c.rank == 42 * 8 + 4
    with pytest.raises(ConfigError, match="refine_pixels"):
        RankedSearch(model, refine_pixels=-1)


class Band(torch.nn.Module):
    """Class 1 only while the red of PLANT lies in (0.65, 0.95), off every palette corner; red at
    HINT lowers class 0's probability without flipping it."""

    def forward(self, x):
        r, hint = x[:, 0, PLANT[0], PLANT[1]], x[:, 0, HINT[0], HINT[1]] - x[:, 1, HINT[0], HINT[1]]
        return torch.stack([torch.full_like(r, 0.5), 10 * (0.2 - (r - 0.8).abs()) + hint], dim=1)


def test_colour_stage_leaves_the_palette_for_a_boundary_between_corners():
    """No corner flips Band, so the neighbourhood stage fails; the colour stage starts PLANT at its
    best corner, (1, 0, 0), and one step of 0.1 down its red gradient reaches red 0.9: success at
    the second step, PLANT the 8th of the 9 window pixels of HINT."""
    budget = (HINT[0] * W + HINT[1] + 1) * 8
    kw = dict(prior="raster", max_evals=budget, batch_size=16, refine_pixels=1)
    (nb,) = RankedSearch(Band(), **kw)(grey(), torch.tensor([0]))
    assert not nb.success and nb.n_evals == budget + 32
    (r,) = RankedSearch(Band(), **kw, colour_steps=3, colour_step=0.1)(grey(), torch.tensor([0]))
    assert r.success and r.refined and r.pixel == PLANT
    assert r.colour.tolist() == pytest.approx([0.9, 0.0, 0.0])
    assert r.n_evals == budget + 32 + 2 * 9 and r.rank == budget + 32 + 9 + 7
    assert r.p_true == pytest.approx(1 / (1 + np.exp(0.5)))  # class-1 logit 10 * (0.2 - 0.1) = 1
    with pytest.raises(ConfigError, match="colour_step"):
        RankedSearch(Band(), colour_step=0)


def test_de_finds_the_planted_pixel_inside_its_region():
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, 4:7, 1:4] = True  # 3x3 region around the planted pixel
    (r,) = DifferentialEvolution(Planted(), popsize=40, maxiter=50, seed=1)(
        grey(), torch.tensor([0]), mask
    )
    assert r.success and r.pixel == PLANT and r.colour[0] > 0.9 and r.colour[1] < 0.1
    assert r.n_evals == 40 * (r.generations + 1) and r.n_evals < 40 * 51


def test_best1_strategy_finds_the_planted_pixel_and_bad_strategies_are_refused():
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, 4:7, 1:4] = True
    (r,) = DifferentialEvolution(Planted(), popsize=40, maxiter=50, seed=1, strategy="best1")(
        grey(), torch.tensor([0]), mask
    )
    assert r.success and r.pixel == PLANT
    with pytest.raises(ConfigError, match="DE strategy"):
        DifferentialEvolution(Planted(), strategy="rand2")


def test_de_never_touches_a_pixel_outside_its_region():
    model = Planted()
    model.record = True
    mask = torch.zeros(2, H, W, dtype=torch.bool)
    mask[0, :2, :] = True
    mask[1, :, 6:] = True
    res = DifferentialEvolution(model, popsize=20, maxiter=15, seed=3)(
        grey(2), torch.tensor([0, 0]), mask
    )
    assert not any(r.success for r in res) and all(r.n_evals == 20 * 16 for r in res)
    seen = torch.cat(model.seen)  # every candidate the model was shown, images interleaved by block
    assert (seen != 0.5).any()
    first = torch.cat([s[:20] for s in model.seen])  # image 0's candidates come first in each call
    second = torch.cat([s[20:] for s in model.seen])
    assert not ((first != 0.5).any(1) & ~mask[0]).any()
    assert not ((second != 0.5).any(1) & ~mask[1]).any()
    assert ((first != 0.5).any(1).sum((1, 2)) == 1).all()  # exactly one pixel changed per candidate


def test_de_is_reproducible_under_a_seed():
    def de(seed):
        return DifferentialEvolution(Planted(), popsize=30, maxiter=20, seed=seed)(
            grey(3), torch.zeros(3, dtype=torch.long)
        )

    a, b = de(7), de(7)
    assert [(r.pixel, r.colour.tolist(), r.n_evals) for r in a] == [
        (r.pixel, r.colour.tolist(), r.n_evals) for r in b
    ]


def test_empty_region_and_bad_images_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        DifferentialEvolution(Planted(), popsize=8, maxiter=1)(
            grey(), torch.tensor([0]), torch.zeros(1, H, W, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ExhaustiveSearch(Planted())(grey() * 255, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ExhaustiveSearch(Planted())(torch.rand(1, 1, H, W), torch.tensor([0]))


def test_exhaustive_map_agrees_with_single_evaluations_on_resnet20(prepared):
    """Batched map vs one-at-a-time forward passes on a real CIFAR-10 image and model."""
    spec = models.resolve_spec("resnet20_cifar10", {})
    model = models.build_model(spec, prepared / "weights" / "resnet20_cifar10.pt")
    split = data.load_split(prepared / "data" / "cifar10", "test", 0, 40)
    with torch.no_grad():
        correct = (model(split.images).argmax(1) == split.labels).nonzero().squeeze(1)
    i = int(correct[0])
    (m,) = ExhaustiveSearch(model, "corners", batch_size=256)(
        split.images[i : i + 1], split.labels[i : i + 1]
    )
    palette = make_palette("corners")
    rng = np.random.default_rng(0)
    pixels = [tuple(p) for p in np.argwhere(m.vulnerable)[:5]] + [
        tuple(p) for p in rng.integers(0, 32, (5, 2))
    ]
    for r, c in pixels:
        x = split.images[i].clone().repeat(8, 1, 1, 1)
        x[:, :, r, c] = palette
        with torch.no_grad():
            probs = model(x).softmax(1)
        flips = probs.argmax(1) != split.labels[i]
        assert bool(flips.any()) == bool(m.vulnerable[r, c])
        assert probs[:, split.labels[i]].min().item() == pytest.approx(
            m.p_clean - m.drop[r, c], abs=1e-5
        )
        assert int(probs[:, split.labels[i]].argmin()) == m.best_colour[r, c]


def test_complete_ranked_search_succeeds_exactly_where_the_map_does_on_resnet20(prepared):
    """On real CIFAR-10 images, inside a 12x12 window: the complete ranked search succeeds on the
    images whose exhaustive map has a vulnerable pixel, its pixel is one of them, and its candidate
    does flip ResNet-20."""
    spec = models.resolve_spec("resnet20_cifar10", {})
    model = models.build_model(spec, prepared / "weights" / "resnet20_cifar10.pt")
    split = data.load_split(prepared / "data" / "cifar10", "test", 0, 40)
    with torch.no_grad():
        correct = (model(split.images).argmax(1) == split.labels).nonzero().squeeze(1)[:4]
    x, y = split.images[correct], split.labels[correct]
    masks = torch.zeros(len(x), 32, 32, dtype=torch.bool)
    masks[:, 18:30, 18:30] = True
    maps = ExhaustiveSearch(model)(x, y, masks)
    ranked = RankedSearch(model)(x, y, masks)
    assert [r.success for r in ranked] == [m.success for m in maps]
    assert 0 < sum(m.success for m in maps) < len(x)  # both outcomes occur among these images
    for i, (r, m) in enumerate(zip(ranked, maps)):
        assert r.n_evals <= 144 * 8
        if r.success:
            assert m.vulnerable[r.pixel]
            adv = x[i].clone()
            adv[:, r.pixel[0], r.pixel[1]] = torch.from_numpy(r.colour)
            with torch.no_grad():
                assert model(adv[None]).argmax(1).item() != y[i]
        else:
            assert r.n_evals == 144 * 8


class Colour(torch.nn.Module):
    """Class 1's logit is −10 × the smallest squared distance of any pixel's colour to TARGET, class 0's is 0:
    the best one-pixel change only ties (the lower class wins a tie), so a search never succeeds and its
    true-class probability 1 / (1 + exp(−10 d)) falls to 1/2 as the colour reaches TARGET, wherever the pixel is."""

    TARGET = torch.tensor([0.8, 0.2, 0.6])

    def forward(self, x):
        d = ((x - self.TARGET[None, :, None, None]) ** 2).sum(1).flatten(1).min(1).values
        return torch.stack([torch.zeros_like(d), -10 * d], dim=1)


@pytest.mark.parametrize("seed", [0, 3])
def test_de_selection_keeps_its_best_candidate_and_closes_in_on_the_optimum(seed):
    # A trial replaces its parent only when not worse, so under one seed (the longer run continues the shorter one)
    # the best true-class probability can only fall with more generations; and the population converges on the
    # target colour. Without selection (every trial replaces its parent) the best wanders; with no replacement it
    # stays the initial population's best: both fail here, while the planted-pixel tests above still pass.
    black = torch.zeros(1, 3, H, W)
    runs = [
        DifferentialEvolution(Colour(), popsize=20, maxiter=m, seed=seed)(black, torch.tensor([0]))[
            0
        ]
        for m in (0, 5, 10, 20, 40)
    ]
    p = [r.p_true for r in runs]
    assert not any(r.success for r in runs) and [r.generations for r in runs] == [0, 5, 10, 20, 40]
    assert all(later <= earlier for earlier, later in zip(p, p[1:]))
    assert p[0] > 0.52 and p[-1] == pytest.approx(
        0.5, abs=1e-3
    )  # distance² below 4e-4: within 0.02 of TARGET
    assert runs[-1].colour.tolist() == pytest.approx(Colour.TARGET.tolist(), abs=0.02)


def test_palette_contents_and_bad_grids():
    # corners+faces: the 8 corners of the RGB cube and the centres of its 6 faces, each once
    got = {tuple(c) for c in make_palette("corners+faces").tolist()}
    corners = {(r, g, b) for r in (0.0, 1.0) for g in (0.0, 1.0) for b in (0.0, 1.0)}
    faces = {
        (0.5, 0.5, 0.0),
        (0.5, 0.5, 1.0),
        (0.5, 0.0, 0.5),
        (0.5, 1.0, 0.5),
        (0.0, 0.5, 0.5),
        (1.0, 0.5, 0.5),
    }
    assert got == corners | faces and len(make_palette("corners+faces")) == 14
    # gridK: K evenly spaced levels from 0 to 1 per channel; K = 2 is the corners, K < 2 is refused
    assert {tuple(c) for c in make_palette("grid2").tolist()} == corners
    assert sorted({c[0] for c in make_palette("grid3").tolist()}) == [0.0, 0.5, 1.0]
    with pytest.raises(
        ConfigError, match=r"palette 'grid1': a grid needs at least 2 levels per channel"
    ):
        make_palette("grid1")
    for bad in ([[float("nan"), 0.0, 0.0]], [[0.0, 1.5, 0.0]], [[-0.5, 0.0, 0.0]]):
        with pytest.raises(ConfigError, match=r"palette colours must lie in \[0, 1\]"):
            make_palette(bad)
    for bad in ([], [[0.1, 0.2]], [0.1, 0.2, 0.3]):
        with pytest.raises(ConfigError, match="palette must be a non-empty list of RGB triples"):
            make_palette(bad)


def test_first_occurrences_keeps_the_first_of_each_value_in_order():
    from pixelrobust.onepixel import _first_occurrences

    assert _first_occurrences(torch.tensor([3, 1, 3, 2, 1, 5, 2])).tolist() == [3, 1, 2, 5]
    assert _first_occurrences(torch.tensor([4])).tolist() == [4]
    assert _first_occurrences(torch.tensor([], dtype=torch.long)).tolist() == []


def test_de_mutation_picks_other_members_crosses_over_and_aims_at_the_best():
    # with F tiny a trial is its base member a (v = a + F (b − c)); member i's position gene is 10 i + 5, so the
    # trial names its base. rand/1: the base is never the member itself, and every other member serves as one
    n, P = 2, 20
    pop = torch.zeros(n, P, 4)
    pop[..., 0] = (torch.arange(P, dtype=torch.float32) * 10 + 5)[None]
    pop[..., 1:] = 0.5
    k = torch.full((n,), 1000.0)
    de = DifferentialEvolution(Planted(), popsize=P, F=1e-6, seed=0)
    gen = torch.Generator().manual_seed(1)
    seen = torch.zeros(P, P, dtype=torch.bool)
    for _ in range(200):
        base = ((de._mutate(pop, k, gen)[..., 0] - 5) / 10).round().long()
        assert (base != torch.arange(P)).all()
        seen[torch.arange(P).expand(n, P).flatten(), base.flatten()] = True
    assert (seen | torch.eye(P, dtype=torch.bool)).all()
    # best/1: every member's base is its image's best (lowest fitness) member
    fit = torch.rand(n, P, generator=torch.Generator().manual_seed(2))
    best = DifferentialEvolution(Planted(), popsize=P, F=1e-6, seed=0, strategy="best1")
    base = ((best._mutate(pop, k, gen, fit)[..., 0] - 5) / 10).round().long()
    assert (base == fit.argmin(1)[:, None]).all() and fit.argmin(1)[0] != fit.argmin(1)[1]
    # binomial crossover: with CR = 0 exactly one gene (drawn) comes from the mutant, with CR = 1/2 on average
    # 1/d + (1 − 1/d)/2 = 5/8 of the genes (d = 4); both reproducible under the generator's seed
    rand_pop = torch.rand(n, 400, 4, generator=torch.Generator().manual_seed(3))
    k = torch.full((n,), 1.0)
    for CR, share in ((0.0, 0.25), (0.5, 0.625)):
        de = DifferentialEvolution(Planted(), popsize=400, CR=CR, seed=0)
        trials = [de._mutate(rand_pop, k, torch.Generator().manual_seed(4)) for _ in range(2)]
        assert torch.equal(trials[0], trials[1])
        changed = trials[0] != rand_pop
        if CR == 0:
            assert (changed.sum(-1) == 1).all() and changed.any(
                1
            ).all()  # and the forced gene is any of the 4
        assert changed.float().mean().item() == pytest.approx(share, abs=0.05)
    # genes that leave their bounds are redrawn uniformly inside them: the position in [0, K), colours in [0, 1]
    wide = DifferentialEvolution(Planted(), popsize=400, F=3.0, seed=0)._mutate(
        rand_pop * 100, torch.full((n,), 100.0), torch.Generator().manual_seed(5)
    )
    assert (
        (wide[..., 0] >= 0).all()
        and (wide[..., 0] < 100).all()
        and wide[..., 0].mean().item() == pytest.approx(50, abs=5)
    )
    assert (wide[..., 1:] >= 0).all() and (wide[..., 1:] <= 1).all()


class TwoWays(torch.nn.Module):
    """Class 0 unless the pixel at PLANT is reddish (red above about 0.55: class 1, half of all colours) or nearly
    pure blue (class 2, a small corner of the colour cube)."""

    def forward(self, x):
        p = x[:, :, PLANT[0], PLANT[1]]
        blue = p[:, 2] - p[:, 0] - p[:, 1]  # in [-2, 1]
        return torch.stack(
            [torch.full_like(blue, 0.5), 10 * (p[:, 0] - 0.5), 10 * (blue - 0.9)], dim=1
        )


def test_de_reaches_the_last_pixel_of_its_region_and_aims_at_a_target():
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, 4:6, 1:3] = True  # PLANT = (5, 2) is the region's last pixel in row-major order
    (r,) = DifferentialEvolution(Planted(), popsize=40, maxiter=50, seed=1)(
        grey(), torch.tensor([0]), mask
    )
    assert r.success and r.pixel == PLANT
    # targeted at class 2: only blue at PLANT counts (red, class 1, found at once, is a success of the untargeted
    # search only), and the probability reported is the target's, read back from the model at the result
    (t,) = DifferentialEvolution(TwoWays(), popsize=40, maxiter=60, seed=1)(
        grey(), torch.tensor([0]), mask, targets=torch.tensor([2])
    )
    assert t.success and t.pixel == PLANT and t.colour[2] > 0.9 and t.colour[0] < 0.1
    x = grey()
    x[0, :, PLANT[0], PLANT[1]] = torch.from_numpy(t.colour)
    with torch.no_grad():
        prob = TwoWays()(x).softmax(1)[0]
    assert int(prob.argmax()) == 2 and t.p_true == pytest.approx(float(prob[2]), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# The screened exhaustive map (low precision ranks, fp32 decides) against the fp32 map: equal on every
# image tried here, and the parts of the run-time bound that exactness rests on.
# ----------------------------------------------------------------------------------------------
BATCH = 192


def screened(model, **kw) -> ExhaustiveSearch:
    """A bf16-screened search of every image (no gate on the clean image's confidence, unless
    given); on a CPU without native bf16 the same code path is forced (bf16 is then emulated:
    slower, equally exact). ``screen_check`` 32: the production floor of 256 applies unless a test
    lowers it (``small_check``)."""
    s = ExhaustiveSearch(
        model, precision="bf16_screened", **{"max_clean_log_odds": None, "screen_check": 32, **kw}
    )
    if s.path == "fp32":
        s.low, s.path = torch.bfloat16, "bf16_screened"
    return s


def same_map(a, b) -> bool:
    return (
        np.array_equal(a.searched, b.searched)
        and np.array_equal(a.vulnerable, b.vulnerable)
        and np.array_equal(a.best_colour, b.best_colour)
        and np.array_equal(a.drop, b.drop, equal_nan=True)
        and a.p_clean == b.p_clean
    )


@pytest.fixture
def small_check(monkeypatch):
    """The tests' windows have 512 candidates: the production floor of 256 random fp32 checks per
    image (plus batch padding) would evaluate nearly all of them, leaving nothing for the screening
    to skip and the band nothing to catch; these tests lower it to 32."""
    monkeypatch.setattr(onepixel, "MIN_RANDOM_CHECK", 32)


@pytest.fixture(scope="module")
def cifar_window(prepared, resnet20):
    """CIFAR-10 test images 0, 2 and 3 (ResNet-20 classifies them correctly; 0 with high confidence)
    and an 8x8 window, rows 18-25, columns 20-27 (512 candidates each: with batch size BATCH two
    full batches and a last one of 128), where image 2 has vulnerable pixels and the others none."""
    split = data.load_split(prepared / "data" / "cifar10", "test", 0, 4)
    x, y = split.images[[0, 2, 3]], split.labels[[0, 2, 3]]
    with torch.no_grad():
        assert torch.equal(resnet20(x).argmax(1), y)
    masks = torch.zeros(len(x), 32, 32, dtype=torch.bool)
    masks[:, 18:26, 20:28] = True
    return x, y, masks


@pytest.fixture(scope="module")
def fp32_maps(resnet20, cifar_window):
    x, y, masks = cifar_window
    return ExhaustiveSearch(resnet20, batch_size=BATCH)(x, y, masks)


def test_fp32_logits_do_not_depend_on_the_batch_beyond_its_size(resnet20, cifar_window):
    """What "exact" rests on: a candidate's fp32 logits depend on the size of its batch (batch 1
    differs on this CPU) but not on which other candidates share it, so the screened search reruns
    each candidate at the batch size the fp32 path gives it."""
    x = cifar_window[0][0]
    palette = make_palette("corners")
    batch = x.repeat(16, 1, 1, 1)
    for k in range(16):
        batch[k, :, 20 + k // 8, 20] = palette[k % 8]
    with torch.no_grad():
        full = resnet20(batch)
        assert torch.equal(
            resnet20(batch.flip(0)).flip(0), full
        )  # other order, same size: same bits
        assert torch.equal(resnet20(torch.cat([batch[8:], batch[:8]]))[8:], full[:8])


def test_screened_map_equals_the_fp32_map_on_real_images(
    resnet20, cifar_window, fp32_maps, small_check
):
    x, y, masks = cifar_window
    search = screened(resnet20, batch_size=BATCH)
    maps = search(x, y, masks)
    assert 0 < sum(m.success for m in fp32_maps) < len(x)  # breakable and unbreakable images
    for a, b in zip(fp32_maps, maps):
        assert same_map(a, b)
        assert (
            b.precision == "bf16_screened"
            and a.precision == "fp32"
            and a.n_fp32 == a.n_evals == 64 * 8
        )
        assert 0 < b.screen_error < 2  # a real bf16 error was seen and bounded
    # the screening skipped fp32 work: fewer fp32 evaluations than candidates over the images
    assert sum(m.n_fp32 for m in maps) < sum(m.n_evals for m in maps)


def test_only_confident_images_are_screened_by_default(resnet20, cifar_window, fp32_maps):
    """The default gate (clean true-class log-odds below -17): image 0 (ResNet-20 is sure of it,
    p_clean is exactly 1.0) is screened, image 2 runs in fp32; both maps equal fp32's."""
    x, y, masks = (t[:2] for t in cifar_window)
    maps = screened(resnet20, batch_size=BATCH, max_clean_log_odds=-17.0)(x, y, masks)
    assert [m.precision for m in maps] == ["bf16_screened", "fp32"]
    assert maps[0].p_clean == 1.0 and maps[1].n_fp32 == maps[1].n_evals
    for a, b in zip(fp32_maps, maps):
        assert same_map(a, b)


def test_screened_targeted_map_equals_the_fp32_map(resnet20, cifar_window):
    x, y, masks = (t[1:2] for t in cifar_window)  # image 2
    with torch.no_grad():
        logits = resnet20(x)
    logits[0, y] = -float("inf")
    targets = logits.argmax(1)
    a = ExhaustiveSearch(resnet20, batch_size=BATCH)(x, y, masks, targets)
    b = screened(resnet20, batch_size=BATCH)(x, y, masks, targets)
    for ma, mb in zip(a, b):
        assert same_map(ma, mb)


def test_without_the_band_the_real_maps_differ(
    resnet20, cifar_window, fp32_maps, monkeypatch, small_check
):
    """The band is needed on real images: forced to 0, the screened maps differ from the fp32 maps
    (bf16's log-odds error exceeds the gaps between a pixel's colours); image 2 suffices."""
    monkeypatch.setattr(ExhaustiveSearch, "_band", lambda self: (0.0, 0.0))
    x, y, masks = (t[1:2] for t in cifar_window)
    (m,) = screened(resnet20, batch_size=BATCH)(x, y, masks)
    assert not same_map(fp32_maps[1], m)


class BF16Flip(torch.nn.Module):
    """Three classes from the colour (r, g, b) of the pixel at PLANT, through one linear layer (which
    autocast runs in bf16). In fp32, red (and magenta) make class 1 win by 0.001; bf16's rounding of
    the weights turns that into -0.002, so bf16 calls them failures. Yellow (and white) give the
    lowest true-class probability without flipping, so red is not a contender for the best colour:
    only the margin band sends it to fp32 (or, by chance, the random check)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        with torch.no_grad():
            self.lin.weight.zero_()
            self.lin.bias.zero_()
            # features (r, r, g): class 1 = a1 r + a2 r + beta g + c1, class 2 = gamma g + c2
            self.lin.weight[1] = torch.tensor([0.4986328125, 0.313, -0.05])
            self.lin.bias[1] = -0.8106328358650208
            self.lin.weight[2, 2], self.lin.bias[2] = 9.9, -10.0

    def forward(self, x):
        px = x[:, :, PLANT[0], PLANT[1]]
        z = self.lin(torch.stack([px[:, 0], px[:, 0], px[:, 1]], 1)).float()
        # in fp32 (autocast leaves it alone), every other pixel nudges class 1 by 0.05 (r + 2g + 4b - 3.5):
        # distinct colours, no flip, one clear best colour (white) per pixel
        code = x[:, 0] + 2 * x[:, 1] + 4 * x[:, 2] - 3.5
        code[:, PLANT[0], PLANT[1]] = 0
        z[:, 1] += 0.05 * code.sum((1, 2))
        return z


def test_the_band_catches_a_planted_bf16_flip(monkeypatch, small_check):
    model = BF16Flip()
    x, y = torch.full((1, 3, H, W), 0.5), torch.tensor([0])
    red = x.clone()
    red[0, :, PLANT[0], PLANT[1]] = torch.tensor([1.0, 0.0, 0.0])
    with torch.no_grad():
        assert model(red).argmax(1).item() == 1  # fp32: red flips the prediction
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model(red).argmax(1).item() == 0  # bf16: it does not
    (a,) = ExhaustiveSearch(model, batch_size=64)(x, y)
    assert a.vulnerable.sum() == 1 and a.vulnerable[PLANT]
    palette = make_palette("corners")
    assert palette[a.best_colour[PLANT]].tolist() in (
        [1.0, 1.0, 0.0],
        [1.0, 1.0, 1.0],
    )  # yellow/white, not red
    search = screened(model, batch_size=64)
    (b,) = search(x, y)
    assert same_map(a, b) and b.n_fp32 < b.n_evals
    # without the band the flip is missed (the map is wrong), so the band is what caught it
    monkeypatch.setattr(ExhaustiveSearch, "_band", lambda self: (0.0, 0.0))
    (c,) = screened(model, batch_size=64)(x, y)
    assert not c.vulnerable[PLANT]


def test_certain_probability_one_needs_no_fp32_pass():
    """Where the true class's log-odds are far below log 2^-25, fp32 softmax gives exactly 1.0: the
    screened map takes that value without an fp32 pass and still equals the fp32 map (ties at 1.0
    go to the first colour, as ``min`` does)."""

    class Sure(torch.nn.Module):
        def forward(self, x):
            f = x[:, :, PLANT[0], PLANT[1]].sum(1, keepdim=True)  # 0..3
            return torch.cat([torch.full_like(f, 30.0), f - 3.0], 1)  # true class 0 by 30 or more

    x, y = torch.full((1, 3, H, W), 0.5), torch.tensor([0])
    (a,) = ExhaustiveSearch(Sure(), batch_size=64)(x, y)
    (b,) = screened(Sure(), batch_size=64)(x, y)
    assert same_map(a, b)
    assert (
        (a.best_colour[a.searched] == 0).all()
        and (a.drop[a.searched] == 0).all()
        and a.p_clean == 1.0
    )
    assert (
        b.n_fp32 == 256
    )  # nothing needed fp32: only the run-time check's 256 random candidates (4 batches of 64)


class Recorder(torch.nn.Module):
    """The Sure model (class 0 by 30 or more: every probability exactly 1.0, nothing needs fp32),
    recording which candidates (pixel, colour code) its fp32 passes saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        if not torch.is_autocast_enabled("cpu") and len(x) > 1:
            code = x[:, 0] + 2 * x[:, 1] + 4 * x[:, 2]
            changed = (code != 3.5).flatten(1)  # 0.5-grey background has code 3.5
            self.seen.append(
                {
                    (int(i), round(float(code.flatten(1)[k, i]), 3))
                    for k, i in changed.nonzero().tolist()
                }
            )
        f = x[:, :, PLANT[0], PLANT[1]].sum(1, keepdim=True)
        return torch.cat([torch.full_like(f, 30.0), f - 3.0], 1)


def test_random_check_is_large_and_new_for_every_image():
    """At least 256 random fp32 checks per image whatever the batch size (batch 32 here), and a
    different random sample for each image of one search (the generator is not reseeded)."""
    model = Recorder()
    x, y = torch.full((2, 3, H, W), 0.5), torch.tensor([0, 0])
    search = screened(model, batch_size=32, screen_check=32)  # asked for 32: the floor gives 256
    maps = search(x, y)
    assert [m.n_fp32 for m in maps] == [256, 256]
    per_image = [set().union(*model.seen[:8]), set().union(*model.seen[8:])]
    assert len(model.seen) == 16 and all(len(s) == 256 for s in per_image)
    assert per_image[0] != per_image[1]


def test_subnormal_probabilities_keep_the_fp32_best_colour():
    """Targeted at a class ~103.5 logits below the top: every fp32 target probability is
    subnormal (a few multiples of 2^-149), where a relative slack alone bounds nothing; the
    absolute slack keeps every colour a contender, so the best colour is fp32's."""

    class Far(torch.nn.Module):
        def forward(self, x):
            px = x[:, :, PLANT[0], PLANT[1]]
            t = (
                -103.5
                + 0.31 * px[:, 0] * px[:, 1] * px[:, 2]
                + 1e-4 * (x[:, 0] + 2 * x[:, 1] + 4 * x[:, 2]).sum((1, 2))
            )
            return torch.stack([torch.zeros_like(t), t, torch.full_like(t, -200.0)], 1)

    x, y, tgt = torch.zeros(1, 3, H, W), torch.tensor([0]), torch.tensor([1])
    (a,) = ExhaustiveSearch(Far(), batch_size=64)(x, y, None, tgt)
    assert 0 < a.p_clean < 2.0**-126  # subnormal
    (b,) = screened(Far(), batch_size=64)(x, y, None, tgt)
    assert same_map(a, b)


def test_screening_settings_are_checked():
    model = BF16Flip()
    with pytest.raises(ConfigError, match="onepixel.precision"):
        ExhaustiveSearch(model, precision="bf16")
    with pytest.raises(ConfigError, match="onepixel.screening.band"):
        ExhaustiveSearch(model, precision="bf16_screened", screen_band=0)
    with pytest.raises(ConfigError, match="onepixel.screening.check"):
        ExhaustiveSearch(model, precision="bf16_screened", screen_check=0)
    assert low_precision_dtype("cuda") is None  # CUDA runs the fp32 path until a GPU test exists
    assert ExhaustiveSearch(model).describe() == "fp32"
    expected = "bf16_screened" if low_precision_dtype("cpu") is not None else "fp32"
    assert ExhaustiveSearch(model, precision="bf16_screened").path == expected


def test_study_with_screening_writes_the_fp32_maps_and_tables(prepared, resnet20, small_check):
    """P1's per-chunk study (vulnerability.search_chunk, as the onepixel_search rule runs it) with
    onepixel.precision bf16_screened, every image screened: the same maps and tables as fp32, plus
    each image's fp32 evaluation count."""
    from pixelrobust import vulnerability

    split = data.load_split(prepared / "data" / "cifar10", "test", 0, 3)
    seg = vulnerability.segment_chunk(resnet20, split.images, split.labels, 16, 10.0)

    def run(**kw):
        return vulnerability.search_chunk(
            resnet20,
            split.images,
            split.labels,
            split.ids,
            seg,
            dataset="cifar10",
            model_name="resnet20_cifar10",
            palette="corners",
            grid_stride=4,
            de={"popsize": 4, "maxiter": 0, "F": 0.5, "CR": 1.0},
            de_regions=0,
            seed=0,
            batch_size=BATCH,
            **kw,
        )

    a = run()
    b = run(
        precision="bf16_screened", screening={"band": 2.0, "check": 32, "max_clean_log_odds": None}
    )
    for key in ("vulnerable", "best_colour", "drop", "searched"):
        np.testing.assert_array_equal(a["maps"][key], b["maps"][key])
    assert a["maps"]["vulnerable"].any()  # test image 2 is breakable on this grid
    fa, fb = a["images"].pop("exhaustive_fp32_evals"), b["images"].pop("exhaustive_fp32_evals")
    assert a["images"].equals(b["images"]) and a["regions"].equals(b["regions"])
    assert (fa == a["images"].exhaustive_evals).all() and (fb <= b["images"].exhaustive_evals).all()


# ----------------------------------------------------------------------------------------------
# The bf16 DE (``DifferentialEvolution(precision="bf16")``): bf16 ranks, fp32 decides success.
#
# The models here are planted: their logits under bf16 autocast differ from their fp32 logits by a
# known rule, so what fp32 must confirm, and what the band must catch, follows from the rule. The
# low-precision path is forced (``de.low = torch.bfloat16``): bf16 autocast runs on any CPU (slowly
# where it is emulated), so these tests do not depend on the machine having native bf16.
# ----------------------------------------------------------------------------------------------


class Disagree(torch.nn.Module):
    """Two classes; the logits read the red value r of the image's pixel (0, 0).

    fp32: z = [r + fp32_shift, 0.5]; under CPU autocast: z = [r + low_shift, 0.5]. Label 0, so a
    candidate succeeds in a precision when r + shift < 0.5. Records the red values it sees in each
    precision."""

    def __init__(self, fp32_shift: float, low_shift: float):
        super().__init__()
        self.anchor = torch.nn.Parameter(
            torch.zeros(1), requires_grad=False
        )  # puts the model on a device
        self.shift = {False: fp32_shift, True: low_shift}
        self.seen = {False: [], True: []}

    def forward(self, x):
        low = torch.is_autocast_enabled("cpu")
        r = x[:, 0, 0, 0].float()
        self.seen[low].append(r.clone())
        return torch.stack([r + self.shift[low], torch.full_like(r, 0.5)], 1)

    def red(self, low: bool) -> torch.Tensor:
        return torch.cat(self.seen[low]) if self.seen[low] else torch.empty(0)


def bf16_de(model, **kw) -> DifferentialEvolution:
    de = DifferentialEvolution(model, precision="bf16", **kw)
    de.low = torch.bfloat16  # forced: the path under test, whatever this CPU supports
    return de


def one_pixel_image(n=1):
    return torch.full((n, 3, 1, 1), 0.9), torch.zeros(n, dtype=torch.long)


def test_a_bf16_success_that_fp32_refuses_is_never_reported():
    # bf16 calls every candidate a success (r - 1 < 0.5 for every r in [0, 1]); fp32 none (r + 1 > 0.5)
    model = Disagree(fp32_shift=1.0, low_shift=-1.0)
    x, y = one_pixel_image(2)
    popsize, maxiter = 8, 3
    res = bf16_de(model, popsize=popsize, maxiter=maxiter, seed=0)(x, y)
    for r in res:
        assert not r.success and r.generations == maxiter and r.precision == "bf16"
        assert r.n_evals == popsize * (maxiter + 1)
        # every candidate was a bf16 "success", so every one went to fp32 and was rejected there
        assert r.rejected == r.n_evals and r.n_fp32 == r.n_evals and r.band_hits == 0
        # the reported probability is fp32's: softmax of [r + 1, 0.5] at the reported colour
        assert r.p_true == pytest.approx(
            1 / (1 + math.exp(0.5 - (float(r.colour[0]) + 1))), rel=1e-6
        )
    assert len(model.red(False)) == len(model.red(True)) == 2 * popsize * (maxiter + 1)


def test_the_band_sends_near_misses_to_fp32_and_they_are_reported():
    # bf16 is off by +0.05 on every candidate: distance to success r - 0.5 in fp32, r - 0.45 in bf16.
    # A random check shows the error 0.05, so the band (2 x 0.05) re-evaluates every candidate with
    # r - 0.45 <= 0.1 (r <= 0.55); those with 0.45 <= r < 0.5 are fp32 successes bf16 missed.
    model = Disagree(fp32_shift=0.0, low_shift=0.05)
    x, y = one_pixel_image()
    popsize = 200
    (r,) = bf16_de(model, popsize=popsize, maxiter=0, seed=3, check=1)(x, y)
    low, f32 = model.red(True), model.red(False)
    assert len(low) == popsize
    missed = ((low >= 0.45 + 1e-6) & (low < 0.5)).sum().item()
    assert missed >= 1, "the planted population must hold a near miss (pick another seed)"
    assert r.band_hits == ((low >= 0.45) & (low < 0.5)).sum().item()
    assert r.success and r.generations == 0 and r.rejected == 0
    assert float(r.colour[0]) < 0.5  # an fp32 success: r < 0.5
    # fp32 saw every candidate within the band, at most `check` (1) outside it, nothing else
    inside = (low <= 0.55 - 1e-6).sum().item()
    outside = (low > 0.55 + 1e-6).sum().item()
    assert inside <= r.n_fp32 <= inside + 1 + (popsize - inside - outside)
    assert (f32 > 0.55 + 1e-6).sum().item() <= 1
    assert r.n_fp32 == len(f32)


def test_without_low_precision_the_fp32_path_runs_and_counts_every_candidate():
    model = Disagree(fp32_shift=1.0, low_shift=-1.0)
    x, y = one_pixel_image()
    de = DifferentialEvolution(model, popsize=6, maxiter=2, seed=0, precision="bf16")
    de.low = None  # what a CPU without native bf16 (or CUDA) gets
    (r,) = de(x, y)
    assert (
        r.precision == "fp32" and not r.success and r.n_fp32 == r.n_evals == 18 and r.rejected == 0
    )
    assert len(model.red(True)) == 0
    assert "fp32" in de.describe() and "bf16" in de.describe()


def test_bf16_de_is_deterministic_under_its_seed():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 3),
    ).eval()
    x = torch.rand(2, 3, 6, 6)
    with torch.no_grad():
        y = net(x).argmax(1)

    class Recorder(
        torch.nn.Module
    ):  # keeps the candidates evaluated in fp32 (the checks and the band's)
        def __init__(self):
            super().__init__()
            self.net, self.fp32 = net, []

        def forward(self, z):
            if not torch.is_autocast_enabled("cpu"):
                self.fp32.append(z.clone())
            return self.net(z)

    def run(seed):
        torch.rand(17)  # the global random stream must not matter
        rec = Recorder()
        res = bf16_de(rec, popsize=12, maxiter=4, seed=seed)(x, y)
        return [
            (r.success, r.pixel, r.colour.tolist(), r.p_true, r.n_evals, r.n_fp32, r.band_hits)
            for r in res
        ], torch.cat(rec.fp32)

    (a, fa), (b, fb), (c, _) = run(5), run(5), run(6)
    assert a == b and torch.equal(fa, fb)
    assert a != c


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"precision": "fp16"}, "onepixel.de.precision"),
        ({"band": 0.5}, "band"),
        ({"check": 0}, "fp32 check"),
    ],
)
def test_bad_precision_settings_are_refused(kw, key):
    with pytest.raises(ConfigError, match=key):
        DifferentialEvolution(Disagree(0, 0), popsize=4, maxiter=1, **kw)


def test_mutation_partners_are_the_first_three_of_a_random_permutation():
    # the partners of member m: the first three of a random permutation of the other members, drawn
    # as argsort of P - 1 uniform keys (the definition; the code takes the three smallest keys)
    n, P, F = 2, 9, 0.1
    pop = (
        torch.rand(n, P, 4, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    )  # mutants stay in bounds
    k = torch.full((n,), 1.0)
    de = DifferentialEvolution(Disagree(0, 0), popsize=P, maxiter=1, F=F)
    got = de._mutate(pop, k, torch.Generator().manual_seed(7))
    keys = torch.rand(n, P, P - 1, generator=torch.Generator().manual_seed(7))
    for i in range(n):
        for m in range(P):
            others = [j for j in range(P) if j != m]
            a, b, c = (others[int(t)] for t in keys[i, m].argsort()[:3])
            assert torch.allclose(
                got[i, m], pop[i, a] + F * (pop[i, b] - pop[i, c]), atol=0, rtol=0
            )


def test_bf16_de_on_real_images_reports_only_fp32_adversarial_pixels(resnet20, prepared):
    from pixelrobust import data

    split = data.load_split(prepared / "data" / "cifar10", "test", 0, 6)
    x, y = split.images, split.labels
    de = bf16_de(resnet20, popsize=40, maxiter=4, seed=0, batch_size=128)
    res = de(x, y)
    for i, r in enumerate(res):
        assert r.precision == "bf16" and 0 < r.n_fp32 <= r.n_evals + 1
        adv = x[i].clone()
        adv[:, r.pixel[0], r.pixel[1]] = torch.from_numpy(r.colour)
        with torch.no_grad():
            p = resnet20(adv[None]).softmax(1)[0]  # plain fp32
        assert (p.argmax().item() != y[i].item()) == r.success
        assert r.p_true == pytest.approx(p[y[i]].item(), rel=1e-4, abs=1e-6)  # the fp32 probability


@pytest.mark.skipif(
    onepixel.low_precision_dtype(torch.device("cpu")) is None, reason="this CPU has no native bf16"
)
def test_the_bf16_de_scores_on_the_folded_copy_and_decides_on_the_model(resnet20, prepared):
    # the bf16 DE's fitness comes from the batch-norm-folded copy; every fp32 pass (success, the band's checks,
    # the reported probability) from the model itself, so the answers stay fp32's. A spy on each counts its images.
    split = data.load_split(prepared / "data" / "cifar10", "test", 0, 1)
    x, y = split.images, split.labels
    seen = {"scorer": 0, "model": 0}

    def spy(name):
        def hook(module, args):
            seen[name] += len(args[0])

        return hook

    de = bf16_de(resnet20, popsize=16, maxiter=1, seed=0, batch_size=64)
    assert de.scorer is not resnet20 and "low-precision model: batch norm folded (" in de.describe()
    h1 = de.scorer.register_forward_pre_hook(spy("scorer"))
    h2 = resnet20.register_forward_pre_hook(spy("model"))
    try:
        (r,) = de(x, y)
        assert seen["scorer"] == r.n_evals  # every candidate's fitness from the folded copy
        assert seen["model"] == r.n_fp32  # fp32 passes from the model itself
    finally:
        h1.remove()
        h2.remove()
