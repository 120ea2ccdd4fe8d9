"""One-pixel attacks on a model with a planted vulnerable pixel, and on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelrobust import data, models
from pixelrobust.errors import ConfigError
from pixelrobust.onepixel import DifferentialEvolution, ExhaustiveSearch, RankedSearch, make_palette

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
    assert make_palette([[0.2, 0.4, 0.6]]).tolist() == [[pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.6)]]
    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\]"):
        make_palette([[0, 0, 255]])
    with pytest.raises(ConfigError, match="unknown palette"):
        make_palette("rainbow")


def test_exhaustive_finds_exactly_the_planted_pixel():
    model = Planted()
    (m,) = ExhaustiveSearch(model, "corners", batch_size=7)(grey(), torch.tensor([0]))  # odd batch: splits pixels
    assert m.success and m.n_evals == H * W * 8
    assert m.vulnerable.sum() == 1 and m.vulnerable[PLANT]
    palette = make_palette("corners")
    colour = palette[m.best_colour[PLANT]]
    assert colour[0] == 1 and colour[1] == 0  # (1, 0, 0) or (1, 0, 1)
    p_clean, p_red = 1 / (1 + np.exp(-9.5)), 1 / (1 + np.exp(0.5))  # softmax of (0.5, 10(f - 0.9)) at f = 0, 1
    assert m.p_clean == pytest.approx(p_clean) and m.drop[PLANT] == pytest.approx(p_clean - p_red, abs=1e-6)
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
    assert g.p_true == pytest.approx(1 / (1 + np.exp(0.5)))  # class 0's probability once the pixel is red
    (r,) = RankedSearch(Planted(), prior="raster", batch_size=20)(grey(), torch.tensor([0]))
    assert r.success and r.pixel == PLANT and r.rank == 42 * 8 + 4 and r.n_evals == 360
    (t,) = RankedSearch(Planted(), batch_size=20)(grey(), torch.tensor([0]), targets=torch.tensor([1]))
    assert t.success and t.pixel == PLANT and t.rank == 0


def test_ranked_search_keeps_to_its_mask_and_budget():
    model = Planted()
    model.record = True
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, :3, :] = True  # the planted pixel is outside
    (m,) = RankedSearch(model, batch_size=7)(grey(), torch.tensor([0]), mask)
    assert not m.success and m.rank == -1 and m.n_evals == 3 * W * 8  # complete: every allowed candidate
    seen = torch.cat(model.seen[1:])  # [0] is the gradient pass on the clean image
    changed = (seen != 0.5).any(1)
    assert len(seen) == 3 * W * 8 and (changed.sum((1, 2)) == 1).all() and not (changed & ~mask[0]).any()
    (b,) = RankedSearch(Planted(), prior="raster", max_evals=100, batch_size=64)(grey(), torch.tensor([0]))
    assert not b.success and b.n_evals == 100  # the planted candidate is at rank 340, past the budget
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
        return logits + torch.stack([torch.zeros(len(x)), 2 * (x[:, 0, HINT[0], HINT[1]] - x[:, 1, HINT[0], HINT[1]])], 1)


HINT = (4, 2)


def test_neighbourhood_stage_finds_the_pixel_next_to_the_closest_one():
    """Raster prior, budget = every candidate up to and including HINT (pixel 34): the first stage
    fails, HINT has the lowest class-0 probability, and its 3x3 window's unevaluated candidates are
    pixels 35, 41, 42 (PLANT), 43 in raster order: the planted red is the 8 + 8 + 4 = 20th of them."""
    budget = (HINT[0] * W + HINT[1] + 1) * 8
    model = Hinted()
    (plain,) = RankedSearch(model, prior="raster", max_evals=budget, batch_size=16)(grey(), torch.tensor([0]))
    assert not plain.success and plain.pixel == HINT and plain.n_evals == budget and not plain.refined
    model.record = True
    (r,) = RankedSearch(model, prior="raster", max_evals=budget, batch_size=16, refine_pixels=1)(grey(), torch.tensor([0]))
    assert r.success and r.refined and r.pixel == PLANT and r.colour.tolist() == [1.0, 0.0, 0.0]
    assert r.rank == budget + 20 and r.n_evals == budget + 32  # batches of 16 in the second stage too
    seen = torch.cat(model.seen)[budget:]
    changed = (seen != 0.5).any(1).flatten(1).float().argmax(1)  # the one changed pixel of each candidate
    assert changed.tolist()[:24] == [35] * 8 + [41] * 8 + [42] * 8  # nothing evaluated twice, nothing outside the window
    # a radius-0 window around HINT holds nothing new; a complete search never needs the stage
    (z,) = RankedSearch(model, prior="raster", max_evals=budget, refine_pixels=1, refine_radius=0)(grey(), torch.tensor([0]))
    assert not z.success and z.n_evals == budget
    (c,) = RankedSearch(Hinted(), prior="raster", refine_pixels=4, batch_size=16)(grey(), torch.tensor([0]))
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
    (r,) = DifferentialEvolution(Planted(), popsize=40, maxiter=50, seed=1)(grey(), torch.tensor([0]), mask)
    assert r.success and r.pixel == PLANT and r.colour[0] > 0.9 and r.colour[1] < 0.1
    assert r.n_evals == 40 * (r.generations + 1) and r.n_evals < 40 * 51


def test_best1_strategy_finds_the_planted_pixel_and_bad_strategies_are_refused():
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, 4:7, 1:4] = True
    (r,) = DifferentialEvolution(Planted(), popsize=40, maxiter=50, seed=1, strategy="best1")(grey(), torch.tensor([0]), mask)
    assert r.success and r.pixel == PLANT
    with pytest.raises(ConfigError, match="DE strategy"):
        DifferentialEvolution(Planted(), strategy="rand2")


def test_de_never_touches_a_pixel_outside_its_region():
    model = Planted()
    model.record = True
    mask = torch.zeros(2, H, W, dtype=torch.bool)
    mask[0, :2, :] = True
    mask[1, :, 6:] = True
    res = DifferentialEvolution(model, popsize=20, maxiter=15, seed=3)(grey(2), torch.tensor([0, 0]), mask)
    assert not any(r.success for r in res) and all(r.n_evals == 20 * 16 for r in res)
    seen = torch.cat(model.seen)  # every candidate the model was shown, images interleaved by block
    assert (seen != 0.5).any()
    first = torch.cat([s[:20] for s in model.seen])  # image 0's candidates come first in each call
    second = torch.cat([s[20:] for s in model.seen])
    assert not ((first != 0.5).any(1) & ~mask[0]).any()
    assert not ((second != 0.5).any(1) & ~mask[1]).any()
    assert ((first != 0.5).any(1).sum((1, 2)) == 1).all()  # exactly one pixel changed per candidate


def test_de_is_reproducible_under_a_seed():
    de = lambda seed: DifferentialEvolution(Planted(), popsize=30, maxiter=20, seed=seed)(grey(3), torch.zeros(3, dtype=torch.long))
    a, b = de(7), de(7)
    assert [(r.pixel, r.colour.tolist(), r.n_evals) for r in a] == [(r.pixel, r.colour.tolist(), r.n_evals) for r in b]


def test_empty_region_and_bad_images_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        DifferentialEvolution(Planted(), popsize=8, maxiter=1)(grey(), torch.tensor([0]), torch.zeros(1, H, W, dtype=torch.bool))
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
    (m,) = ExhaustiveSearch(model, "corners", batch_size=256)(split.images[i : i + 1], split.labels[i : i + 1])
    palette = make_palette("corners")
    rng = np.random.default_rng(0)
    pixels = [tuple(p) for p in np.argwhere(m.vulnerable)[:5]] + [tuple(p) for p in rng.integers(0, 32, (5, 2))]
    for r, c in pixels:
        x = split.images[i].clone().repeat(8, 1, 1, 1)
        x[:, :, r, c] = palette
        with torch.no_grad():
            probs = model(x).softmax(1)
        flips = probs.argmax(1) != split.labels[i]
        assert bool(flips.any()) == bool(m.vulnerable[r, c])
        assert probs[:, split.labels[i]].min().item() == pytest.approx(m.p_clean - m.drop[r, c], abs=1e-5)
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


def test_study_maps_and_tables_are_identical_under_a_fixed_seed(prepared):
    """The whole per-chunk study (segments, map, DE, random subsets) twice with one seed: same results."""
    from pixelrobust import vulnerability

    spec = models.resolve_spec("resnet20_cifar10", {})
    model = models.build_model(spec, prepared / "weights" / "resnet20_cifar10.pt")
    split = data.load_split(prepared / "data" / "cifar10", "test", 2, 4)

    def run(seed):
        seg = vulnerability.segment_chunk(model, split.images, split.labels, 16, 10.0)
        return vulnerability.search_chunk(
            model, split.images, split.labels, split.ids, seg, dataset="cifar10", model_name="resnet20_cifar10",
            palette="corners", grid_stride=2, de={"popsize": 30, "maxiter": 3, "F": 0.5, "CR": 1.0}, de_regions=1,
            seed=seed, batch_size=256)

    a, b, c = run(5), run(5), run(6)
    for key in ("vulnerable", "best_colour", "drop", "searched"):
        np.testing.assert_array_equal(a["maps"][key], b["maps"][key])
    for key in ("images", "regions", "de_runs"):
        assert a[key].equals(b[key]), key
    assert a["maps"]["searched"][0].sum() == 256  # grid stride 2 on 32x32
    # another seed moves the seeded parts (DE's populations), never the exact map
    np.testing.assert_array_equal(a["maps"]["vulnerable"], c["maps"]["vulnerable"])
    assert not a["de_runs"][["row", "col"]].equals(c["de_runs"][["row", "col"]])


def test_targeted_study_aims_at_the_most_likely_wrong_class(prepared):
    from pixelrobust import vulnerability

    spec = models.resolve_spec("resnet20_cifar10", {})
    model = models.build_model(spec, prepared / "weights" / "resnet20_cifar10.pt")
    split = data.load_split(prepared / "data" / "cifar10", "test", 2, 3)
    seg = vulnerability.segment_chunk(model, split.images, split.labels, 16, 10.0)
    out = vulnerability.search_chunk(
        model, split.images, split.labels, split.ids, seg, dataset="cifar10", model_name="resnet20_cifar10",
        palette="corners", grid_stride=4, de={"popsize": 20, "maxiter": 2, "F": 0.5, "CR": 1.0}, de_regions=1,
        seed=0, batch_size=256, targeted=True)
    with torch.no_grad():
        logits = model(split.images)[0]
    logits[split.labels[0]] = -float("inf")
    row = out["images"].iloc[0]
    assert row.target == int(logits.argmax()) != row.label
    # a pixel marked vulnerable really turns the prediction into the target
    m = out["maps"]
    for r, c in np.argwhere(m["vulnerable"][0])[:3]:
        x = split.images.clone()
        x[0, :, r, c] = make_palette("corners")[m["best_colour"][0, r, c]]
        with torch.no_grad():
            assert int(model(x).argmax(1)) == row.target
