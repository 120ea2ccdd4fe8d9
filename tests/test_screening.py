"""The screened exhaustive map (low precision ranks, fp32 decides) against the fp32 map: equal on every
image tried here, and the parts of the run-time bound that exactness rests on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelrobust import data, onepixel
from pixelrobust.errors import ConfigError
from pixelrobust.onepixel import ExhaustiveSearch, low_precision_dtype, make_palette

H = W = 8
PLANT = (5, 2)  # (row, col)
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
