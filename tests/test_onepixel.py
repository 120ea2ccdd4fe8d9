"""One-pixel attacks on a model with a planted vulnerable pixel, and on real images."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def test_study_maps_and_tables_are_identical_under_a_fixed_seed(prepared):
    """The whole per-chunk study (segments, map, DE, random subsets) twice with one seed: same results."""
    from pixelrobust import vulnerability

    spec = models.resolve_spec("resnet20_cifar10", {})
    model = models.build_model(spec, prepared / "weights" / "resnet20_cifar10.pt")
    split = data.load_split(prepared / "data" / "cifar10", "test", 2, 4)

    def run(seed):
        seg = vulnerability.segment_chunk(model, split.images, split.labels, 16, 10.0)
        return vulnerability.search_chunk(
            model,
            split.images,
            split.labels,
            split.ids,
            seg,
            dataset="cifar10",
            model_name="resnet20_cifar10",
            palette="corners",
            grid_stride=2,
            de={"popsize": 30, "maxiter": 3, "F": 0.5, "CR": 1.0},
            de_regions=1,
            seed=seed,
            batch_size=256,
        )

    a, b, c = run(5), run(5), run(6)
    for key in ("vulnerable", "best_colour", "drop", "searched"):
        np.testing.assert_array_equal(a["maps"][key], b["maps"][key])
    for key in ("images", "regions", "de_runs"):
        assert a[key].equals(b[key]), key
    assert a["maps"]["searched"][0].sum() == 256  # grid stride 2 on 32x32
    # another seed moves the seeded parts (DE's populations), never the exact map
    np.testing.assert_array_equal(a["maps"]["vulnerable"], c["maps"]["vulnerable"])
    assert not a["de_runs"][["row", "col"]].equals(c["de_runs"][["row", "col"]])


def _grid_study(prepared, start: int, stop: int, de: dict, de_regions: int, **kw):
    """Real ResNet-20 on CIFAR-10 test images start:stop: 16 SLIC segments, the corner palette on a stride-4 grid."""
    from pixelrobust import vulnerability

    model = models.build_model(
        models.resolve_spec("resnet20_cifar10", {}), prepared / "weights" / "resnet20_cifar10.pt"
    )
    split = data.load_split(prepared / "data" / "cifar10", "test", start, stop)
    seg = vulnerability.segment_chunk(model, split.images, split.labels, 16, 10.0)
    out = vulnerability.search_chunk(
        model,
        split.images,
        split.labels,
        split.ids,
        seg,
        dataset="cifar10",
        model_name="resnet20_cifar10",
        palette="corners",
        grid_stride=4,
        de={"F": 0.5, "CR": 1.0, **de},
        de_regions=de_regions,
        seed=0,
        batch_size=256,
        **kw,
    )
    return model, split, seg, out


def test_targeted_study_aims_at_the_most_likely_wrong_class(prepared):
    model, split, _, out = _grid_study(
        prepared, 2, 3, {"popsize": 20, "maxiter": 2}, 1, targeted=True
    )
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


# ---- P1's claims, per image (vulnerability.image_claim_stats and its controls) ---------------------


def test_random_controls_match_enumerating_every_order_and_placement():
    """The region-order control of "only some pixels" against enumerating every order of the regions
    (regions taken whole until they cover the budget); the random placement against every placement."""
    from itertools import combinations, permutations

    from pixelrobust.vulnerability import image_seed, random_multi_region, random_region_success

    for sizes, vul, budget in [
        ([30, 10, 10, 10, 40], [0, 1, 0, 0, 1], 0.25),
        ([30, 10, 10, 10, 40], [1, 0, 0, 0, 0], 0.45),
        ([5] * 8, [1, 1, 1, 0, 0, 0, 0, 0], 0.25),
        ([2, 7, 1, 5, 9], [0, 0, 3, 0, 0], 0.6),
    ]:
        sz, hit = np.array(sizes), np.array(vul) > 0
        exact = []
        for order in permutations(range(len(sizes))):
            k = int(np.searchsorted(np.cumsum(sz[list(order)]), budget * sz.sum())) + 1
            exact.append(hit[list(order[:k])].any())
        assert random_region_success(
            sz, np.array(vul), budget, n_perm=40_000, seed=1
        ) == pytest.approx(np.mean(exact), abs=0.01)
    # 8 equal regions, a quarter is two of them: 1 - C(5, 2) / C(8, 2) with 3 vulnerable ones
    assert random_region_success(
        np.full(8, 5), np.array([1, 1, 1, 0, 0, 0, 0, 0]), 0.25, n_perm=40_000, seed=2
    ) == pytest.approx(1 - 10 / 28, abs=0.01)
    assert random_region_success(np.full(4, 5), np.zeros(4), 0.25) == 0
    # seeded from the image id: the same id gives the same number, and the seed is stable across runs
    assert (
        image_seed("cifar10-test-00007")
        == image_seed("cifar10-test-00007")
        != image_seed("cifar10-test-00008")
    )
    assert image_seed("abc") == 891568578  # zlib.crc32(b"abc"), fixed by the CRC-32 standard
    sizes = [3, 4, 5]
    labels = np.repeat(np.arange(3), sizes)
    for V in (2, 3, 4):
        multi = [len(set(labels[list(c)])) >= 2 for c in combinations(range(sum(sizes)), V)]
        assert random_multi_region(np.array(sizes), V) == pytest.approx(np.mean(multi), abs=1e-12)
    assert random_multi_region(np.array(sizes), 1) == 0


SEMANTIC = {"score": "occlusion", "direction": "positive"}
RESTRICTED = {"budget": 0.25, "min_retention": 0.5, "min_effect": 0.05}
YY, XX = np.mgrid[:32, :32]


def block_segments(shift: int = 0) -> np.ndarray:
    """32x32 image in a 5x5 grid of 7-pixel blocks (the last row and column of blocks 4 or fewer pixels
    wide), moved by ``shift`` pixels: 25 regions, like SLIC's on CIFAR."""
    return ((YY + shift) // 7).clip(0, 4) * 5 + ((XX + shift) // 7).clip(0, 4)


def quadrants():
    """8x8 image: region 0 top-left 4x4, 1 the right half (32 pixels), 2 bottom-left 4x4."""
    seg = np.zeros((8, 8), np.int32)
    seg[:, 4:] = 1
    seg[4:, :4] = 2
    return seg


def test_blob_control_is_seeded_at_the_vulnerable_pixels():
    """A 2x2 cluster across the boundary of regions 0 and 2 (rows 3-4, columns 1-2) is one place: the
    blob of 4 around each of its pixels takes the pixel itself, then of the four at distance 1 the two
    inside the cluster (nearer its centroid), so it spans both rows and crosses: 4 of 4 seeds. Two
    pixels in opposite corners are scattered: each blob of 2 stays in its corner's region: 0 of 2."""
    from pixelrobust.vulnerability import blob_multi_region

    seg, searched = quadrants(), np.ones((8, 8), bool)
    cluster = np.zeros((8, 8), bool)
    cluster[3:5, 1:3] = True
    assert blob_multi_region(seg, searched, cluster) == 1.0
    corners = np.zeros((8, 8), bool)
    corners[0, 0] = corners[7, 7] = True
    assert blob_multi_region(seg, searched, corners) == 0.0
    one = np.zeros((8, 8), bool)
    one[2, 2] = True
    assert blob_multi_region(seg, searched, one) == 0  # one pixel is never in two regions
    assert (
        blob_multi_region(np.zeros((8, 8), np.int32), searched, cluster) == 0
    )  # one region: no blob can cross


def test_scattered_is_not_held_for_tight_clusters_on_a_boundary():
    """40 images, each with a 2x2 vulnerable cluster lying across a region boundary: always >= 2 regions,
    but so is a blob of 4 where the cluster is, so "scattered" is not held (a blob placed anywhere
    crosses a boundary for few seeds, which made it held). Pixels spread over distant regions are held."""
    from pixelrobust.vulnerability import claim_rows, image_claim_stats

    rng = np.random.default_rng(0)
    seg, searched = block_segments(), np.ones((32, 32), bool)
    scores = {"occlusion": rng.normal(size=25), "cam": rng.normal(size=25)}
    rows = {"cluster": [], "spread": []}
    for i in range(40):
        vul = np.zeros((32, 32), bool)
        r0, c0 = (
            7 * rng.integers(1, 4) - 1,
            rng.integers(1, 4) * 7 + rng.integers(1, 5),
        )  # rows r0 | r0 + 1: a boundary
        vul[r0 : r0 + 2, c0 : c0 + 2] = True
        spread = np.zeros((32, 32), bool)
        spread[rng.integers(1, 6), rng.integers(1, 6)] = spread[
            rng.integers(22, 27), rng.integers(22, 27)
        ] = True
        for kind, v in (("cluster", vul), ("spread", spread)):
            s = image_claim_stats(
                seg,
                v,
                searched,
                scores,
                score="occlusion",
                direction="positive",
                budget=0.25,
                n_perm=50,
            )
            rows[kind].append(
                {
                    "dataset": "x",
                    "model": "m",
                    "image_id": str(i),
                    "n_segments": 25,
                    "primary": True,
                    **s,
                }
            )
    verdict = {
        k: claim_rows(
            pd.DataFrame(v), semantic=SEMANTIC, restricted=RESTRICTED, n_boot=500, seed=0
        )[1]
        for k, v in rows.items()
    }
    assert verdict["cluster"]["observed"] == 1 and verdict["cluster"]["control_value"] == 1
    assert verdict["cluster"]["verdict"] != "held"
    assert verdict["spread"]["observed"] == 1 and verdict["spread"]["control_value"] == 0
    assert verdict["spread"]["verdict"] == "held"


def stripes():
    """8x8 image in four vertical stripes of two columns: regions 0-3 left to right."""
    return np.repeat(np.arange(4, dtype=np.int32), 2)[None, :].repeat(8, 0)


def test_semantic_rho_and_its_flipped_and_rotated_control():
    """The vulnerable pixels are one full column in the top-scoring stripe: region shares (0, 0, 0, 1/2),
    scores (1, 2, 3, 4), so rho = 3 / sqrt(15). Of the 7 flips and rotations of the 8x8 map, the
    up-down flip keeps column 7 (rho 3 / sqrt(15)), the left-right flip and the half turn move it to
    column 0 (rho -3 / sqrt(15)), the other four make it a row, 2 pixels in every stripe (constant
    shares: no rho). The control is the mean of the three: -1 / sqrt(15)."""
    from pixelrobust.vulnerability import image_claim_stats

    seg, searched = stripes(), np.ones((8, 8), bool)
    vul = np.zeros((8, 8), bool)
    vul[:, 7] = True
    scores = {"occlusion": np.array([1.0, 2, 3, 4]), "cam": np.full(4, 0.5)}
    s = image_claim_stats(
        seg, vul, searched, scores, score="occlusion", direction="positive", budget=0.25
    )
    assert s["rho_occlusion"] == pytest.approx(3 / np.sqrt(15))
    assert s["rho_occlusion_control"] == pytest.approx(-1 / np.sqrt(15))
    assert np.isnan(s["rho_cam"]) and np.isnan(
        s["rho_cam_control"]
    )  # a constant score gives no rank correlation
    assert s["n_vulnerable"] == 8 and s["n_vulnerable_regions"] == 1 and not s["multi_region"]
    # the budget of 1/4 is one stripe: the declared order decides which one
    assert s["restricted_regions"] == 1 and s["restricted_pixels"] == 16 and s["restricted_success"]
    neg = image_claim_stats(
        seg, vul, searched, scores, score="occlusion", direction="negative", budget=0.25
    )
    assert not neg["restricted_success"] and neg["restricted_pixels"] == 16
    # the control: one of the four stripes in random order (a quarter is one stripe) holds the column: 1/4
    assert s["random_regions_success"] == pytest.approx(0.25, abs=0.03)
    # a budget just above one stripe takes the second too (regions are taken whole)
    assert (
        image_claim_stats(
            seg, vul, searched, scores, score="occlusion", direction="positive", budget=0.26
        )["restricted_pixels"]
        == 32
    )


def test_claim_stats_on_a_grid_and_without_vulnerable_pixels():
    from pixelrobust.vulnerability import grid_mask, image_claim_stats

    seg = stripes()
    searched = grid_mask(8, 8, 2).numpy()  # rows and columns 1, 3, 5, 7: one column of each stripe
    vul = np.zeros((8, 8), bool)
    vul[1, 7] = vul[3, 1] = True
    scores = {"occlusion": np.array([4.0, 3, 2, 1]), "cam": np.array([0.1, 0.2, 0.3, 0.4])}
    s = image_claim_stats(
        seg, vul, searched, scores, score="cam", direction="positive", budget=0.25
    )
    assert (
        s["n_searched"] == 16
        and s["n_vulnerable"] == 2
        and s["multi_region"]
        and s["n_regions"] == 4
    )
    # shares (1/4, 0, 0, 1/4) against occlusion (4, 3, 2, 1): rho = 0. The control moves the map on the
    # 4x4 search grid (grid column g is stripe g), the pixels at grid (0, 3) and (1, 0): the flips and the
    # half turn put them in stripes {0, 3} (rho 0), the transpose and the quarter turn in {0, 1}
    # (rho 2 / sqrt(5)), the three-quarter turn and the anti-transpose in {2, 3} (rho -2 / sqrt(5)): mean 0
    assert s["rho_occlusion"] == pytest.approx(0, abs=1e-12)
    assert s["rho_occlusion_control"] == pytest.approx(0, abs=1e-12)
    assert s["restricted_success"]  # cam ranks stripe 3 first, which holds (1, 7)
    none = image_claim_stats(
        seg,
        np.zeros((8, 8), bool),
        searched,
        scores,
        score="cam",
        direction="positive",
        budget=0.25,
    )
    assert (
        not none["whole_success"]
        and not none["restricted_success"]
        and none["random_regions_success"] == 0
    )
    assert np.isnan(none["rho_cam"]) and np.isnan(none["blob_multi_region"])
    off_grid = searched.copy()
    off_grid[0, 0] = True
    with pytest.raises(ValueError, match="grid"):
        image_claim_stats(
            seg, vul, off_grid, scores, score="cam", direction="positive", budget=0.25
        )


def test_dihedral_control_keeps_the_grid_and_the_distance_from_the_centre():
    from pixelrobust.vulnerability import dihedral_maps

    square, wide = np.arange(16).reshape(4, 4), np.arange(6).reshape(2, 3)
    assert (
        len(dihedral_maps(square)) == 7 and len(dihedral_maps(wide)) == 3
    )  # non-square: flips and half turn
    for g in (square, wide):
        r, c = np.indices(g.shape)
        dist = np.hypot(r - (g.shape[0] - 1) / 2, c - (g.shape[1] - 1) / 2)
        seen = {g.tobytes()}
        for m in dihedral_maps(g):
            assert (
                m.shape == g.shape and m.tobytes() not in seen
            )  # every transform is a different one
            seen.add(m.tobytes())
            where = {v: d for v, d in zip(g.ravel(), dist.ravel())}
            assert all(where[v] == pytest.approx(d) for v, d in zip(m.ravel(), dist.ravel()))


def semantic_verdict(score_of, vulnerable_of, n: int = 40, seed: int = 0) -> dict:
    """The semantic claim's row over ``n`` synthetic 32x32 images (block regions moved by 0-3 pixels):
    ``score_of(seg, rng)`` gives the declared score per region, ``vulnerable_of(seg, score, rng)`` the map."""
    from pixelrobust.vulnerability import claim_rows, image_claim_stats

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        seg = block_segments(int(rng.integers(0, 4)))
        score = score_of(seg, rng)
        vul = vulnerable_of(seg, score, rng)
        s = image_claim_stats(
            seg,
            vul,
            np.ones((32, 32), bool),
            {"occlusion": score, "cam": rng.normal(size=25)},
            score="occlusion",
            direction="positive",
            budget=0.25,
            n_perm=50,
        )
        rows.append(
            {
                "dataset": "x",
                "model": "m",
                "image_id": str(i),
                "n_segments": 25,
                "primary": True,
                **s,
            }
        )
    return claim_rows(
        pd.DataFrame(rows), semantic=SEMANTIC, restricted=RESTRICTED, n_boot=500, seed=0
    )[2]


def centre_distance(seg: np.ndarray) -> np.ndarray:
    """Each region's centroid distance from the image centre."""
    n = np.bincount(seg.ravel(), minlength=25)
    cy, cx = (
        np.bincount(seg.ravel(), YY.ravel(), 25) / n,
        np.bincount(seg.ravel(), XX.ravel(), 25) / n,
    )
    return np.hypot(cy - 15.5, cx - 15.5)


def test_semantic_is_not_held_for_a_score_that_only_knows_the_position():
    """Vulnerable pixels drawn more often near the centre, a "semantic" score that is minus the region's
    distance from the centre: no content at all, and the flipped/rotated map keeps every pixel's
    distance from the centre, so it is not held (a cyclic shift moves central pixels to the edges and
    held it). A score that drives where the vulnerable pixels are, region by region, is held."""
    centre = np.exp(-((YY - 15.5) ** 2 + (XX - 15.5) ** 2) / (2 * 6**2))
    position = semantic_verdict(
        lambda seg, rng: -centre_distance(seg) + rng.normal(0, 1, 25),
        lambda seg, score, rng: rng.random((32, 32)) < 0.15 * centre,
    )
    assert position["observed"] > 0.2  # the position score does track the centre-biased map
    assert position["verdict"] != "held"
    content = semantic_verdict(
        lambda seg, rng: rng.normal(size=25),
        lambda seg, score, rng: rng.random((32, 32)) < 0.1 * (score[seg] > 0.8),
    )
    assert content["verdict"] == "held" and content["ci_low"] > 0.3


def some_verdict(
    score_of, vulnerable_of, n: int = 40, seed: int = 0, restricted=RESTRICTED
) -> dict:
    """The "only some pixels" row over ``n`` synthetic images (block regions), as :func:`semantic_verdict`."""
    from pixelrobust.vulnerability import claim_rows, image_claim_stats

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        seg = block_segments()
        score = score_of(seg, rng)
        s = image_claim_stats(
            seg,
            vulnerable_of(seg, score, rng),
            np.ones((32, 32), bool),
            {"occlusion": score, "cam": score},
            score="occlusion",
            direction="positive",
            budget=0.25,
            seed=i,
        )
        rows.append(
            {
                "dataset": "x",
                "model": "m",
                "image_id": str(i),
                "n_segments": 25,
                "primary": True,
                **s,
            }
        )
    return claim_rows(
        pd.DataFrame(rows), semantic=SEMANTIC, restricted=restricted, n_boot=500, seed=0
    )[0]


def cluster(seg: np.ndarray, rng, region: int | None = None) -> np.ndarray:
    """A 3x4 cluster of vulnerable pixels anywhere, or at the corner of ``region``."""
    vul = np.zeros((32, 32), bool)
    if region is None:
        y0, x0 = rng.integers(0, 29, 2)
    else:
        ys, xs = np.nonzero(seg == region)
        y0, x0 = ys.min(), xs.min()
    vul[y0 : y0 + 3, x0 : x0 + 4] = True
    return vul


def test_only_some_pixels_is_compared_with_random_regions_of_the_same_budget():
    """A noise score on images with many scattered vulnerable pixels: both the restricted search and
    random regions almost always hit, so it is not held (against a random pixel subset it was held,
    by 0.0004). A noise score on clustered maps: no better or worse than random regions (against
    random pixels, which hit clusters more often than whole regions do, it was far below). A score
    that puts the cluster's region first is held."""
    noise = lambda seg, rng: rng.normal(size=25)  # noqa: E731
    many = some_verdict(noise, lambda seg, score, rng: rng.random((32, 32)) < 0.03)
    assert many["verdict"] != "held" and abs(many["effect"]) < 0.05
    uninformative = some_verdict(noise, lambda seg, score, rng: cluster(seg, rng))
    assert (
        uninformative["verdict"] == "inconclusive"
        and uninformative["ci_low"] < 0 < uninformative["ci_high"]
    )
    oracle = some_verdict(noise, lambda seg, score, rng: cluster(seg, rng, int(np.argmax(score))))
    assert oracle["verdict"] == "held" and oracle["observed"] == 1 and oracle["control_value"] < 0.5


def test_claim_settings_are_checked():
    from pixelrobust.vulnerability import check_claim_settings

    ok = RESTRICTED
    check_claim_settings({"score": "cam", "direction": "negative"}, ok)
    with pytest.raises(ConfigError, match="onepixel.semantic.score"):
        check_claim_settings({"score": "gradient", "direction": "positive"}, ok)
    with pytest.raises(ConfigError, match="onepixel.semantic.direction"):
        check_claim_settings({"score": "cam", "direction": "up"}, ok)
    with pytest.raises(ConfigError, match="onepixel.restricted.budget"):
        check_claim_settings(
            {"score": "cam", "direction": "positive"}, {**RESTRICTED, "budget": 1.0}
        )
    with pytest.raises(ConfigError, match="onepixel.restricted.min_effect"):
        check_claim_settings(
            {"score": "cam", "direction": "positive"}, {"budget": 0.25, "min_retention": 0.5}
        )


def test_claim_images_reuse_the_saved_maps_and_resegment_for_the_sensitivity(prepared):
    """On real ResNet-20 images: the primary rows agree with the search's own tables; the other segment
    counts come from new SLIC segmentations of the same maps (same vulnerable pixels, other regions)."""
    from pixelrobust import vulnerability

    model, split, seg, res = _grid_study(prepared, 0, 2, {"popsize": 4, "maxiter": 0}, 0)
    table = vulnerability.claim_images_chunk(
        model,
        split.images,
        split.labels,
        split.ids,
        seg,
        res["maps"],
        dataset="cifar10",
        model_name="resnet20_cifar10",
        n_segments=16,
        compactness=10.0,
        sensitivity=[6, 16],
        occlusion="blur",
        semantic=SEMANTIC,
        restricted=RESTRICTED,
        batch_size=256,
    )
    searched = res["images"][res["images"].correct]
    assert list(table.columns) == vulnerability.CLAIM_IMAGE_COLUMNS
    assert len(table) == 2 * len(searched) and sorted(set(table.n_segments)) == [6, 16]
    prim = table[table.primary].set_index("image_id")
    for r in searched.itertuples():
        assert (
            prim.loc[r.image_id, "n_vulnerable"] == r.n_vulnerable
            and prim.loc[r.image_id, "n_searched"] == 64
        )
        assert prim.loc[r.image_id, "n_vulnerable_regions"] == r.n_vulnerable_regions
    other = table[~table.primary].set_index("image_id")
    assert (other.n_vulnerable == prim.n_vulnerable).all() and (
        other.n_regions < prim.n_regions
    ).all()


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


@pytest.mark.parametrize(
    "key,bad,good",
    [
        ("budget", [0.0, 1.0, None], [0.5]),
        ("min_retention", [0.0, 1.0, None], [0.5]),
        ("min_effect", [-0.01, 1.0, None], [0.0, 0.5]),
    ],
)
def test_claim_settings_bounds_and_messages(key, bad, good):
    # (0, 1) open for the budget and the retention, [0, 1) for the margin; a missing key is refused; the message
    # names the key and the value given
    from pixelrobust.vulnerability import check_claim_settings

    semantic = {"score": "cam", "direction": "positive"}
    for value in good:
        check_claim_settings(semantic, {**RESTRICTED, key: value})
    for value in bad:
        restricted = (
            {**RESTRICTED, key: value}
            if value is not None
            else {k: v for k, v in RESTRICTED.items() if k != key}
        )
        with pytest.raises(ConfigError, match=rf"onepixel\.restricted\.{key}.* got {value!r}"):
            check_claim_settings(semantic, restricted)
    with pytest.raises(
        ConfigError, match=r"onepixel\.semantic\.score must be one of .*, got 'gradient'"
    ):
        check_claim_settings({"score": "gradient", "direction": "positive"}, RESTRICTED)
    with pytest.raises(
        ConfigError,
        match=r"onepixel\.semantic\.direction must be 'positive' or 'negative', got 'up'",
    ):
        check_claim_settings({"score": "cam", "direction": "up"}, RESTRICTED)


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


def _claim_images(n=20, attackable=16, restricted_hits=8, multi=12, blob=2, rho_nan=2):
    """Hand-made claim-image rows: the first ``attackable`` images are broken by the whole-image search, the first
    ``restricted_hits`` also by the restricted one (random regions never); of the attackable ones the first ``multi``
    have vulnerable pixels in >= 2 regions, the first ``blob`` also their compact blobs; the last ``rho_nan`` have
    no defined rho."""
    idx = np.arange(n)
    att = idx < attackable
    rho_ok = att & (idx < attackable - rho_nan)
    return pd.DataFrame(
        {
            "dataset": "cifar10",
            "model": "m",
            "image_id": [str(i) for i in idx],
            "n_segments": 25,
            "primary": True,
            "whole_success": att.astype(float),
            "restricted_success": (idx < restricted_hits).astype(float),
            "random_regions_success": 0.0,
            "restricted_pixels": 256,
            "n_searched": 1024,
            "multi_region": (att & (idx < multi)).astype(float),
            "blob_multi_region": (att & (idx < blob)).astype(float),
            "random_multi_region": np.where(att, 0.5, np.nan),
            "rho_occlusion": np.where(rho_ok, 0.5, np.nan),
            "rho_occlusion_control": np.where(rho_ok, 0.1, np.nan),
            "rho_cam": np.where(rho_ok, 0.2, np.nan),
            "rho_cam_control": np.where(rho_ok, 0.3, np.nan),
        }
    )


def test_claim_rows_on_hand_made_images():
    from pixelrobust.vulnerability import CLAIM_TABLE_COLUMNS, CLAIMS, claim_rows

    strict = {**RESTRICTED, "min_retention": 0.9}
    some, scattered, semantic = claim_rows(
        _claim_images(), semantic=SEMANTIC, restricted=strict, n_boot=400, seed=0
    )
    for row, claim in ((some, "some"), (scattered, "scattered"), (semantic, "semantic")):
        assert row["claim"] == CLAIMS[claim] and set(row) <= set(CLAIM_TABLE_COLUMNS)
        assert {
            "dataset",
            "model",
            "n_segments",
            "primary",
            "verdict",
            "n_images",
            "n_skipped",
            "statistic",
            "observed",
            "control",
            "control_value",
            "effect",
            "ci_low",
            "ci_high",
            "reference_value" if claim != "semantic" else "secondary",
            "cost_share",
        } <= set(row)
        assert (row["dataset"], row["model"], row["n_segments"], row["primary"]) == (
            "cifar10",
            "m",
            25,
            True,
        )
    # only some pixels: 8 of 20 restricted successes against none for random regions; retention 8 of the 16
    # whole-image successes, whose interval lies below the 0.9 asked for, so the claim is not held
    assert (some["n_images"], some["n_skipped"]) == (20, 0)
    assert (
        some["observed"] == 0.4
        and some["control_value"] == 0.0
        and some["effect"] == pytest.approx(0.4)
    )
    assert (
        some["secondary_value"] == 0.5
        and some["secondary_threshold"] == 0.9
        and some["secondary_ci_high"] < 0.9
    )
    assert (
        some["reference_value"] == 0.8
        and some["cost_share"] == 0.25
        and some["verdict"] == "not held"
    )
    lenient = claim_rows(
        _claim_images(),
        semantic=SEMANTIC,
        restricted={**RESTRICTED, "min_retention": 0.1},
        n_boot=400,
        seed=0,
    )[0]
    assert lenient["verdict"] != "not held"  # the retention threshold is what failed it
    # scattered: 12 of the 16 attackable images in >= 2 regions, 2 of their blobs: 10 discordant pairs, all one way
    assert (
        scattered["n_images"] == 16
        and scattered["observed"] == 0.75
        and scattered["control_value"] == 0.125
    )
    assert scattered["effect"] == pytest.approx(0.625) and scattered["verdict"] == "held"
    assert scattered["reference_value"] == 0.5 and scattered["n_skipped"] == 0
    # semantic: rho 0.5 against its control 0.1 on the 14 images with a rho; the undeclared score as secondary
    assert (semantic["n_images"], semantic["n_skipped"]) == (14, 2)
    assert (
        semantic["effect"] == pytest.approx(0.4)
        and semantic["observed"] == 0.5
        and semantic["control_value"] == pytest.approx(0.1)
    )
    assert semantic["secondary_value"] == pytest.approx(-0.1) and semantic["verdict"] == "held"
    # an image whose control is undefined (but not its rho) is skipped too
    d = _claim_images()
    d.loc[0, "rho_occlusion_control"] = np.nan
    d.loc[1, "rho_cam_control"] = np.nan
    sem = claim_rows(d, semantic=SEMANTIC, restricted=strict, n_boot=100, seed=0)[2]
    assert (sem["n_images"], sem["n_skipped"]) == (13, 3) and sem["effect"] == pytest.approx(0.4)
    assert sem["secondary_value"] == pytest.approx(-0.1)
    # the bootstrap follows the seed
    again = claim_rows(_claim_images(), semantic=SEMANTIC, restricted=strict, n_boot=400, seed=0)[0]
    assert (again["secondary_ci_low"], again["secondary_ci_high"]) == (
        some["secondary_ci_low"],
        some["secondary_ci_high"],
    )
    # no attackable image: the scattered and semantic claims have no images, and no interval
    none = claim_rows(
        _claim_images(attackable=0, restricted_hits=0, multi=0, blob=0),
        semantic=SEMANTIC,
        restricted=strict,
        n_boot=100,
        seed=0,
    )
    assert (
        none[1]["n_images"] == 0
        and none[1]["verdict"] == "too few images"
        and np.isnan(none[1]["ci_low"])
    )
    assert none[2]["n_images"] == 0 and none[2]["verdict"] == "too few images"


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


def test_claim_rows_with_one_image_give_too_few_images_not_an_error():
    """onepixel.n_images may be 1 (schema minimum): one searched image gives rows, each 'too few images'."""
    from pixelrobust.vulnerability import claim_rows

    rows = claim_rows(
        _claim_images(n=1, attackable=1, restricted_hits=1, multi=1, blob=0, rho_nan=0),
        semantic=SEMANTIC,
        restricted=RESTRICTED,
        n_boot=200,
        seed=0,
    )
    assert len(rows) == 3 and {r["verdict"] for r in rows} == {"too few images"}
    assert all(r["n_images"] == 1 for r in rows)
