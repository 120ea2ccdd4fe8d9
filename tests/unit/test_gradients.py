"""pixelrobust.gradients (P3): pixel masks, the loss gradient, dataset and architecture gradient maps, on
constructed inputs and real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelrobust import models
from pixelrobust.gradients import (
    architecture_gradient_map,
    dataset_gradient_map,
    input_gradients,
    loss_gradient,
    neutral_copy,
    pixel_mask,
)
from pixelrobust.maps import iou
from pixelrobust.prm import (
    lattice_mask,
)

# ---- masks and IoU ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 32), (7, 5), (224, 224)])
@pytest.mark.parametrize("k", [0, 1, 5, 10, 25, 33.3, 50, 100])
@pytest.mark.parametrize("kind", ["top", "bottom", "random"])
def test_masks_select_exactly_k_percent(shape, k, kind):
    gmap = torch.from_numpy(np.random.default_rng(1).random(shape))
    mask = pixel_mask(gmap, k, kind, seed=3)
    n = shape[0] * shape[1]
    assert mask.shape == shape and mask.dtype == torch.bool
    assert mask.sum().item() == round(n * k / 100)
    if 0 < mask.sum() < n and kind != "random":
        inside, outside = gmap[mask], gmap[~mask]
        assert (inside.min() >= outside.max()) if kind == "top" else (inside.max() <= outside.min())


def test_masks_with_ties_are_exact_and_deterministic():
    gmap = torch.zeros(10, 10)
    gmap[:, :3] = 1.0  # 30 tied maxima
    top = pixel_mask(gmap, 10, "top")
    assert top.sum() == 10 and gmap[top].min() == 1.0
    # ties are broken by pixel order (row-major): the first ten of the 30 maxima, and of the 70 minima
    want = torch.zeros(10, 10, dtype=torch.bool)
    want[:3, :3] = want[3, 0] = True
    assert torch.equal(top, want)
    want = torch.zeros(10, 10, dtype=torch.bool)
    want[0, 3:] = want[1, 3:6] = True
    assert torch.equal(pixel_mask(gmap, 10, "bottom"), want)
    r1, r2, r3 = (pixel_mask(gmap, 20, "random", seed=s) for s in (0, 0, 1))
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)


def test_bad_mask_arguments():
    with pytest.raises(ValueError, match="k_percent must be in"):
        pixel_mask(torch.zeros(4, 4), 120)
    with pytest.raises(ValueError, match="mask kind"):
        pixel_mask(torch.zeros(4, 4), 10, "middle")
    with pytest.raises(ValueError, match="H×W"):
        pixel_mask(torch.zeros(3, 4, 4), 10)


def test_top_quarter_of_the_lattice_map_is_the_lattice():
    lat = lattice_mask("s2", 32, 32)  # a quarter of the pixels
    assert iou(lat, lat) == 1.0 and iou(pixel_mask(lat.double(), 25, "top"), lat) == 1.0
    assert iou(pixel_mask(lat.double(), 25, "bottom"), lat) == 0.0


def test_loss_gradient_of_a_linear_model_from_first_principles():
    # logits = W x: the margin loss (best other logit - true logit) has gradient W[best other] - W[true];
    # the summed cross-entropy has gradient W^T (softmax - one-hot), per image
    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, -1.0], [-2.0, 1.0, 0.5]], dtype=torch.float64)
    model = torch.nn.Linear(3, 3, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w)
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    logits = x @ w.T  # [[1, 0, -2], [4, 1, 2]]: the best other classes are 1 and 0
    margin = loss_gradient(model, x, y, "margin")
    torch.testing.assert_close(margin, torch.stack([w[1] - w[0], w[0] - w[2]]))
    p = torch.softmax(logits, 1)
    ce = loss_gradient(model, x, y, "ce")
    torch.testing.assert_close(ce, (p - torch.nn.functional.one_hot(y, 3).double()) @ w)
    assert torch.equal(x, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]], dtype=torch.float64))


# ---- gradient maps ----------------------------------------------------------------------------


def test_dataset_gradient_map_is_mean_abs_gradient(resnet20, cifar_test):
    x, y = cifar_test.images[:12], cifar_test.labels[:12]
    gmap = dataset_gradient_map(resnet20, x, y, batch_size=5)
    per_image = torch.stack(
        [input_gradients(resnet20, x[i : i + 1], y[i : i + 1])[0] for i in range(12)]
    )
    expected = per_image.abs().mean(dim=1).mean(dim=0).double()
    assert gmap.shape == (32, 32)
    torch.testing.assert_close(gmap, expected, rtol=1e-4, atol=1e-9)
    assert gmap.min() >= 0 and gmap.max() > 0


def test_gradient_map_averages_the_images_from_start(resnet20, prepared, cifar_test, tmp_path):
    """gradients.start: the map is the mean over images start .. start + n - 1 of the split, not 0 .. n - 1."""
    from pixelrobust.gradients import gradient_map
    from pixelrobust.io import load_npz

    spec = models.resolve_spec("resnet20_cifar10", {})
    args = {
        "data": prepared / "data" / "cifar10",
        "weights": prepared / "weights" / "resnet20_cifar10.pt",
        "spec": spec,
        "split": "test",
        "n_images": 6,
        "constant": 0.1,
        "batch_size": 4,
        "device": "cpu",
    }
    out = gradient_map(out={"npz": tmp_path / "m.npz"}, start=6, **args)
    x, y = cifar_test.images, cifar_test.labels
    torch.testing.assert_close(
        out["dataset_map"], dataset_gradient_map(resnet20, x[6:12], y[6:12]), rtol=1e-4, atol=1e-9
    )
    assert not torch.allclose(
        out["dataset_map"], dataset_gradient_map(resnet20, x[:6], y[:6]), rtol=1e-2, atol=0
    )
    saved = load_npz(tmp_path / "m.npz")
    assert int(saved["start"]) == 6 and int(saved["n_images"]) == 6
    with pytest.raises(ValueError, match="gradients.start for cifar10 is 99999"):
        gradient_map(out={"npz": tmp_path / "x.npz"}, start=99999, **args)


def test_architecture_map_leaves_the_model_alone_and_sees_the_stride(resnet20):
    before = {k: v.clone() for k, v in resnet20.state_dict().items()}
    amap = architecture_gradient_map(resnet20.net, (3, 32, 32), 0.1)
    assert all(torch.equal(before[k], v) for k, v in resnet20.state_dict().items())
    assert amap.shape == (32, 32) and amap.max() == pytest.approx(1.0) and amap.min() > 0
    assert torch.allclose(amap, amap.T, atol=1e-6)  # the architecture is symmetric in x and y
    neutral = neutral_copy(resnet20.net, 0.1)
    assert all(
        (p == 0.1).all() or (n.endswith("bias") and (p == 0).all())
        for n, p in neutral.named_parameters()
    )
    # a single stride-2 1x1 convolution: the map is exactly its lattice
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1, stride=2), torch.nn.Flatten(), torch.nn.LazyLinear(2)
    )
    net(torch.zeros(1, 3, 8, 8))
    amap = architecture_gradient_map(net, (3, 8, 8), 0.5)
    assert torch.equal(amap > 0, lattice_mask("s2", 8, 8))


def test_saturated_architecture_map_is_an_error():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU6(), torch.nn.Flatten(), torch.nn.LazyLinear(2)
    )
    net(torch.zeros(1, 3, 8, 8))
    with pytest.raises(FloatingPointError, match="architecture_constant"):
        architecture_gradient_map(net, (3, 8, 8), 10.0)


def test_backward_batches_are_capped_by_pixels_and_the_map_does_not_depend_on_them():
    from pixelrobust.gradients import BACKWARD_PIXELS, backward_batch, dataset_gradient_map

    # 32 images of 224 x 224, any configured batch of 32 x 32 images up to 1568, never below one image
    assert BACKWARD_PIXELS // (224 * 224) == 32
    assert backward_batch(256, (224, 224)) == 32 and backward_batch(16, (224, 224)) == 16
    assert backward_batch(256, (32, 32)) == 256 and backward_batch(4096, (32, 32)) == 1568
    assert backward_batch(256, (2000, 2000)) == 1
    # the map is a mean over images: batching it another way changes nothing but rounding
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(10),
    )
    x, y = torch.rand(12, 3, 8, 8), torch.randint(0, 10, (12,))
    net(x)
    a, b = dataset_gradient_map(net.eval(), x, y, 12), dataset_gradient_map(net, x, y, 5)
    torch.testing.assert_close(a, b)


def test_centre_mask_takes_the_pixels_nearest_the_centre_without_a_row_bias():
    from pixelrobust.gradients import centre_mask
    from pixelrobust.masked_pgd import build_masks

    for shape, k in (((32, 32), 10), ((224, 224), 1), ((31, 20), 25)):
        m = centre_mask(shape, k).numpy()
        h, w = shape
        assert m.sum() == round(k / 100 * h * w)
        r, c = np.mgrid[0:h, 0:w]
        dist = np.hypot(r - (h - 1) / 2, c - (w - 1) / 2)
        assert dist[m].max() <= dist[~m].min() + 1e-12  # a disc: nothing outside is nearer
        # the cut through the last ring is not taken row by row (pixel order would put 54 of 102 pixels in the
        # upper half of 32 x 32 at k 10 against 48 in the lower): the two halves differ by at most 2 pixels
        upper, lower = (m & (r < (h - 1) / 2)).sum(), (m & (r > (h - 1) / 2)).sum()
        assert abs(int(upper) - int(lower)) <= 2, (shape, k, upper, lower)
    # the centre mask ignores the gradient maps: the same whatever they hold
    a = build_masks({"dataset_map": np.random.default_rng(0).random((32, 32))}, ["centre"], [5], 0)
    b = build_masks({"dataset_map": np.zeros((32, 32))}, ["centre"], [5], 1)
    assert torch.equal(a["centre", 5.0], b["centre", 5.0]) and a["centre", 5.0][15:17, 15:17].all()
