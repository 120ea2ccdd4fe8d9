"""Incremental evaluation of one-pixel candidates (src/pixelrobust/incremental.py) against the full
forward pass, on the mirror's MobileNetV2 and a real ImageNet sample image."""

import numpy as np
import pytest
import torch

from pixelrobust.errors import ConfigError
from pixelrobust.incremental import IncrementalMobileNetV2, supports, window_sizes
from pixelrobust.onepixel import INCREMENTAL_CHECK, ExhaustiveSearch, make_palette
from pixelrobust.vulnerability import grid_mask

# corners, edges (both parities), interior: every colour of the RGB-cube corners at each
PIXELS = [
    (0, 0),
    (0, 223),
    (223, 0),
    (223, 223),
    (0, 100),
    (1, 57),
    (111, 0),
    (222, 130),
    (150, 223),
    (64, 1),
    (112, 113),
    (37, 200),
]
TOL = 1e-4  # logits of magnitude ~10-20; the incremental path differs from the full pass by rounding (~1e-5)


def _full_logits(model, image, rows, cols, colours):
    x = image[None].repeat(len(rows), 1, 1, 1)
    x[torch.arange(len(rows)), :, rows, cols] = colours
    with torch.inference_mode():
        return model(x)


def _candidates():
    pal = make_palette("corners")
    rows = torch.tensor([r for r, _ in PIXELS]).repeat_interleave(len(pal))
    cols = torch.tensor([c for _, c in PIXELS]).repeat_interleave(len(pal))
    return rows, cols, pal.repeat(len(PIXELS), 1)


def test_window_sizes_follow_the_kernels_and_strides(mobilenet):
    # a window of h changed inputs reaches ceil((h + k - 1) / s) outputs of a k x k, stride-s convolution;
    # block 0: 3x3 s2 -> 2; block 1: dw 3x3 -> 4; block 2: dw 3x3 s2 -> ceil(6/2) = 3; block 3: 5; block 4: s2 -> 4;
    # 5, 6: 6, 8; block 7: s2 -> 5; then +2 per stride-1 block
    sizes = window_sizes(mobilenet, 224, 12)
    assert [w for w, _ in sizes] == [2, 4, 3, 5, 4, 6, 8, 5, 7, 9, 11, 13]
    assert [s for _, s in sizes] == [112, 112, 56, 56, 28, 28, 28, 14, 14, 14, 14, 14]
    # the default: the last block whose window covers at most 20 % of its activation, 5x5 of 14x14 (7x7 is 25 %)
    assert IncrementalMobileNetV2(mobilenet).prepare(torch.zeros(3, 224, 224)).n_switch == 8


@pytest.fixture(scope="module")
def reference(mobilenet, imagenet):
    """The full forward pass's logits of every candidate of ``_candidates`` on the first image."""
    return _full_logits(mobilenet, imagenet[0][0], *_candidates())


@pytest.mark.parametrize("switch", [None, 4])
def test_incremental_logits_equal_the_full_forward_pass(mobilenet, imagenet, reference, switch):
    image = imagenet[0][0]
    rows, cols, colours = _candidates()
    inc = IncrementalMobileNetV2(mobilenet, switch=switch).prepare(image)
    z = inc(rows, cols, colours)
    ref = reference
    diff = (z - ref).abs().max().item()
    assert diff < TOL, diff
    assert torch.equal(z.argmax(1), ref.argmax(1))
    # the candidates really change the logits (a clean-image answer would not pass)
    clean = _full_logits(mobilenet, image, rows[:1], cols[:1], image[:, 0, 0][None])
    assert (ref - clean).abs().amax(1).min() > 100 * TOL


def test_a_missing_residual_add_is_caught(mobilenet, imagenet, reference):
    """The tolerance separates a broken path from rounding: drop the residual adds of the
    incremental blocks and the logits move far beyond it."""
    image = imagenet[0][0]
    rows, cols, colours = _candidates()
    inc = IncrementalMobileNetV2(mobilenet, switch=4).prepare(image)
    for st in inc.steps:
        st.residual_end = False
    z = inc(rows, cols, colours)
    assert (z - reference).abs().max() > 100 * TOL


@pytest.fixture(scope="module")
def full_map(mobilenet, imagenet):
    """The fp32 map of the first image on a stride-56 grid (16 pixels x 8 colours), batch 32."""
    image, label = imagenet[0][:1], imagenet[1][:1]
    return ExhaustiveSearch(mobilenet, "corners", 32)(image, label, grid_mask(224, 224, 56)[None])[
        0
    ]


@pytest.mark.parametrize("switch", [None, 10])
def test_incremental_map_equals_the_fp32_map(mobilenet, imagenet, full_map, switch):
    """Both branches: the default switch (blocks 0-7; on this CPU the incremental results equal the
    fp32 ones bit for bit and are taken as they are) and switch 10 (rounding differences: the band
    sends the near-boundary candidates and every pixel's best colours to the full fp32 pass)."""
    image, label = imagenet[0][:1], imagenet[1][:1]
    inc = ExhaustiveSearch(mobilenet, "corners", 32, incremental="auto", incremental_switch=switch)
    assert inc.path == "fp32_incremental" and inc.describe().startswith("fp32_incremental")
    a, (b,) = full_map, inc(image, label, grid_mask(224, 224, 56)[None])
    assert b.precision == "fp32_incremental" and a.precision == "fp32"
    assert np.array_equal(a.vulnerable, b.vulnerable)
    assert np.array_equal(a.best_colour, b.best_colour)
    assert np.array_equal(a.drop, b.drop, equal_nan=True)  # bit for bit
    assert b.screen_error < 1e-4 and b.n_evals == 128
    if b.screen_error > 0:  # the banded branch: every pixel's best colour had a full fp32 pass
        assert b.n_fp32 >= 16 + 32
    else:  # the bit-exact branch: the random check only (64 candidates: two batches of 32)
        assert b.n_fp32 == INCREMENTAL_CHECK == 64


def test_other_models_and_off_run_the_usual_path(resnet20, mobilenet):
    assert not supports(resnet20) and supports(mobilenet)
    assert ExhaustiveSearch(resnet20, incremental="auto").path == "fp32"
    assert ExhaustiveSearch(mobilenet, incremental="off").path == "fp32"
    assert ExhaustiveSearch(mobilenet, incremental=False).path == "fp32"  # YAML's bare off
    with pytest.raises(ConfigError, match="onepixel.incremental"):
        ExhaustiveSearch(mobilenet, incremental="on")
    with pytest.raises(ValueError, match="MobileNetV2"):
        IncrementalMobileNetV2(resnet20)
