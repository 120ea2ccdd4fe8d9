"""Grad-CAM++ (cam.gradcam_pp) against an independent computation from the paper's formulas.

Chattopadhay et al. 2018 (Grad-CAM++, arXiv 1710.11063): for class c and the activations A^k of the chosen
layer, with g^k_ij = dS_c / dA^k_ij,

    alpha^k_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)    (Eq. 19, zero where g = 0),
    w_k = sum_ij alpha^k_ij relu(g^k_ij)               (Eq. 7 with the exponential's factor, which cancels),
    L = relu(sum_k w_k A^k), scaled to [0, 1], resized to the image and scaled to [0, 1] again.

When the layer is followed only by global average pooling and a linear head (S_c = sum_k W_ck mean_ij A^k_ij),
g^k_ij = W_ck / Z at every position (Z = H W), so alpha^k = 1 / (2 + W_ck Abar_k) and

    w_k = relu(W_ck) / (2 + W_ck Abar_k),    Abar_k = mean_ij A^k_ij,

a closed form that needs no gradient at all. Grad-CAM (no alpha) would weigh by W_ck / Z instead: negative
weights kept, and no 1 / (2 + W_ck Abar_k) factor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixelrobust import cam, data
from pixelrobust.models import Classifier


def closed_form(
    acts: torch.Tensor, weight: torch.Tensor, classes, size: tuple[int, int], guard: float = 0.0
) -> np.ndarray:
    """Grad-CAM++ of a layer followed by global average pooling and a linear head (module docstring).

    ``guard``: pytorch_grad_cam adds 1e-6 to Eq. 19's denominator; with g = W_ck / Z that makes
    w_k = relu(W_ck) / (2 + W_ck Abar_k + guard Z^2 / W_ck^2), which matters when g^2 is near 1e-6 (real heads)."""
    out = []
    for a, c in zip(acts.double(), classes):
        w_c = weight[int(c)].detach().double()
        z = a.shape[1] * a.shape[2]
        pos = w_c > 0
        w = torch.where(
            pos,
            w_c.clamp(min=0)
            / (2 + w_c * a.mean((1, 2)) + guard * z**2 / torch.where(pos, w_c, 1.0) ** 2),
            torch.zeros_like(w_c),
        )
        m = (w[:, None, None] * a).sum(0).clamp(min=0)
        m = (m - m.min()) / (m.max() - m.min())
        # resized to the image (bilinear, pixel centres), then scaled to [0, 1] again: interpolation moves the extremes
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        out.append(((m - m.min()) / (m.max() - m.min())).float())
    return torch.stack(out).numpy()


def by_the_paper(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, classes, guard: float = 0.0
) -> np.ndarray:
    """Eq. 19 and 7 with autograd gradients, for any layer (no pooling assumption); same-size layers only.
    ``guard``: added to Eq. 19's denominator, as pytorch_grad_cam does (1e-6)."""
    acts = []
    hook = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        logits = model(x)
    finally:
        hook.remove()
    a = acts[0]
    (g,) = torch.autograd.grad(logits.gather(1, torch.as_tensor(classes)[:, None]).sum(), a)
    a, g = a.detach().double(), g.double()
    alpha = torch.where(
        g != 0, g**2 / (2 * g**2 + a.sum((2, 3), keepdim=True) * g**3 + guard), torch.zeros_like(g)
    )
    w = (alpha * g.clamp(min=0)).sum((2, 3))
    m = (w[:, :, None, None] * a).sum(1).clamp(min=0)
    lo, hi = m.amin((1, 2), keepdim=True), m.amax((1, 2), keepdim=True)
    return ((m - lo) / (hi - lo)).float().numpy()


class Planted(nn.Module):
    """conv 3x3 -> ReLU -> conv 1x1 -> ReLU (the last spatial layer) -> global average pool -> linear."""

    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.ReLU()
        )
        self.fc = nn.Linear(3, n_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


@pytest.fixture
def planted():
    """Channel k of the last layer lights up region k of a 6x6 image (identity-like convs): channel 0 the top
    rows, 1 the left columns, 2 the bottom-right corner (less the first layer's channel 0, so the two layers differ);
    class 0 weighs channels 0 and 2 positively and 1 negatively, class 1 channel 1 most."""
    torch.manual_seed(0)
    net = Planted()
    with torch.no_grad():
        c1, c2 = net.features[0], net.features[2]
        c1.weight.normal_(0, 0.05)
        c1.weight[:3, :, 1, 1] += 3 * torch.eye(
            3
        )  # input channel k -> feature k at the same pixel, plus a little mixing
        c1.bias.zero_()
        c2.weight.copy_(torch.eye(3, 4)[:, :, None, None] + 0.1 * torch.rand(3, 4, 1, 1))
        c2.weight[
            2, 0
        ] = (
            -1.0
        )  # the last layer's channel 2 is cut to 0 where the first layer's channel 0 is bright
        c2.bias.zero_()
        net.fc.weight.copy_(torch.tensor([[4.0, -3.0, 1.0], [0.5, 5.0, 1.5], [2.0, 2.0, 2.0]]))
        net.fc.bias.zero_()
    x = torch.full((2, 3, 6, 6), 0.05)
    x[:, 0, :2, :] = 0.9  # channel 0: the top two rows
    x[:, 1, :, :2] = 0.6  # channel 1: the left two columns
    x[:, 2, 3:, 3:] = 0.8  # channel 2: the bottom-right corner
    x[1] = x[1].flip(-1) * 0.7 + 0.1  # a second, different image
    model = Classifier(net, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], "planted", 3).eval()
    return model, x


def test_gradcam_pp_matches_the_closed_form_on_a_planted_model(planted):
    model, x = planted
    net = model.net
    with torch.no_grad():
        acts = net.features(x)
    for classes in ([0, 0], [1, 1], [2, 0]):
        got = cam.gradcam_pp(model, x, classes)
        want = closed_form(acts, net.fc.weight, classes, (6, 6), guard=1e-6)
        assert got.shape == (2, 6, 6) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5)
        # without the library's guard the paper's formula differs by at most 1e-6 / g^2 relative (g = W_ck / 36,
        # at least 1 / 36 here: 1.3e-3 of a weight)
        np.testing.assert_allclose(
            got, closed_form(acts, net.fc.weight, classes, (6, 6)), atol=1e-3
        )
        # the general formula (autograd gradients) agrees with the closed form: the two references are consistent
        np.testing.assert_allclose(
            by_the_paper(model, net.features, x, classes, guard=1e-6), want, atol=1e-5
        )
    # the class matters: class 0 lights the top rows (channel 0), class 1 the left columns (channel 1)
    c0, c1 = cam.gradcam_pp(model, x[:1], [0]), cam.gradcam_pp(model, x[:1], [1])
    assert np.abs(c0 - c1).max() > 0.3
    assert (
        c0[0, :2, 2:].mean() > c0[0, 2:, :2].mean() + 0.3
        and c1[0, 2:, :2].mean() > c1[0, :2, 2:].mean() + 0.3
    )
    # the alpha weighting matters: Grad-CAM's weights (W_ck / Z, negative ones kept) give another map here
    a = acts[0].double()
    gc = (net.fc.weight[0].detach().double()[:, None, None] * a).sum(0).clamp(min=0)
    gc = ((gc - gc.min()) / (gc.max() - gc.min())).numpy()
    assert np.abs(gc - c0[0]).max() > 0.05


def test_gradcam_pp_weighs_the_layer_it_is_given(planted, monkeypatch):
    """The same model at the first ReLU (no pooling head after it: the general formula) gives another map,
    which is also what the paper's formulas give at that layer."""
    model, x = planted
    net = model.net
    last = cam.gradcam_pp(model, x, [0, 1])
    monkeypatch.setattr(cam, "target_layer", lambda m, *args, **kw: m.net.features[1])
    first = cam.gradcam_pp(model, x, [0, 1])
    np.testing.assert_allclose(
        first, by_the_paper(model, net.features[1], x, [0, 1], guard=1e-6), atol=1e-5
    )
    assert np.abs(first - last).max() > 0.1


def test_the_workflow_models_use_their_last_spatial_block(resnet20, mobilenet, prepared):
    """ResNet-20: layer3[-1] (64 x 8 x 8), MobileNetV2: features[-1] (1280 x 7 x 7). Each is the last spatial
    activation: pooled and passed through the head it gives the logits; and on real images Grad-CAM++ there is
    the closed form of the pooling head (module docstring), checked against the library."""
    assert cam.target_layer(resnet20) is resnet20.net.layer3[-1]
    assert cam.target_layer(mobilenet) is mobilenet.net.features[-1]
    cifar = data.load_split(prepared / "data" / "cifar10", "test", 0, 4)
    imagenet = data.load_split(prepared / "data" / "imagenet", "test", 0, 2)
    for model, head, split, shape in (
        (resnet20, resnet20.net.fc, cifar, (64, 8, 8)),
        (mobilenet, mobilenet.net.classifier[-1], imagenet, (1280, 7, 7)),
    ):
        acts = []
        hook = cam.target_layer(model).register_forward_hook(
            lambda m, i, o, acts=acts: acts.append(o.detach())
        )
        with torch.no_grad():
            logits = model(split.images)
        hook.remove()
        assert tuple(acts[0].shape[1:]) == shape
        torch.testing.assert_close(head(acts[0].mean((2, 3))), logits, rtol=1e-4, atol=1e-4)
        # for a class the model does not predict too (a map of the predicted class would pass the labels' test
        # on correctly classified images even if the class argument were ignored)
        other = (logits.argmin(1) + 0) % logits.shape[1]
        assert (other != logits.argmax(1)).all()
        for classes in (split.labels, other):
            got = cam.gradcam_pp(model, split.images, classes)
            want = closed_form(
                acts[0], head.weight, classes, tuple(split.images.shape[-2:]), guard=1e-6
            )
            np.testing.assert_allclose(got, want, atol=1e-4)
