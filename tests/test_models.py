"""Models: accuracy of the wrapped pretrained models on real images, and bad weights."""

from __future__ import annotations

import pytest
import torch

from pixelrobust import data, evaluate, models
from pixelrobust.errors import ChecksumError, ConfigError, ModelError


def _accuracy(prepared, name, n=None):
    spec = models.resolve_spec(name, {})
    split = data.load_split(prepared / "data" / spec["dataset"], "test", 0, n)
    model = models.build_model(spec, prepared / "weights" / f"{name}.pt")
    table = evaluate.prediction_table(
        evaluate.predict(model, split.images, 256), split.labels, split.ids
    )
    return len(table), table.top1.mean(), table.top5.mean()


# The reference top-1 of each model: (accuracy, the rows it was measured on, its decimals in percent, where from,
# provenance allowance). CIFAR: the authors' published numbers on the full official test set (../shared/data/README.md,
# weights table). MobileNetV2: no author measured it on the ImageNet sample images; the mirror's README reports
# 84.2 % for these weights on all 1000 of them (the only published number for this set).
# Provenance allowance (ours): how far the published number may be from what these very weights score on those very
# rows, for reasons of where the number came from rather than of sampling.
# - akamaster (ResNet-20/56, CIFAR-10): the checkpoints carry best_prec1 91.78 / 93.62 beside the README's
#   91.73 / 93.39, and that repo's trainer saves the last epoch's state_dict with the best epoch's best_prec1, so
#   neither number was measured on the weights shipped; nobody here has scored them on all 10000 rows. 0.003
#   covers the larger README-checkpoint gap (ResNet-56: 0.0023) rounded up.
# - chenyaofo (ResNet-56, CIFAR-100): its README's number for the released asset, not re-measured here on all 10000
#   rows either; no second number contradicts it, so 0.001 (a tenth of a percent).
# - the ImageNet sample (MobileNetV2): a number from the mirror's README, measured once with this project's
#   preprocessing on a PIL build not recorded; 0.005 (5 of its 1000 images) on top of the decoding allowance below.
REFERENCE = {
    "resnet20_cifar10": (0.9173, 10000, 2, "akamaster/pytorch_resnet_cifar10", 0.003),
    "resnet56_cifar10": (0.9339, 10000, 2, "akamaster/pytorch_resnet_cifar10", 0.003),
    "resnet56_cifar100": (0.7263, 10000, 2, "chenyaofo/pytorch-cifar-models", 0.001),
    "mobilenet_v2_imagenet": (
        0.842,
        1000,
        1,
        "../shared/data/README.md, all 1000 sample images",
        0.005,
    ),
}
# Ours: what the same weights may differ by on the very same images, from arithmetic alone (BLAS order,
# channels-last: a near tie flips) on CIFAR, and from JPEG decoding and resizing (PIL builds) on ImageNet.
IMPLEMENTATION = {"cifar10": 0.002, "cifar100": 0.002, "imagenet": 0.005}


def accuracy_tolerance(name: str, n: int) -> float:
    """How far top-1 on ``n`` of the reference's ``N`` rows may fall from the reference, at 99.9 %.

    A mirror holds a subset of the official rows (the first n CIFAR test rows; every other ImageNet
    sample class), which we treat as a simple random sample of the N rows the reference was measured on.
    The number correct in it is then hypergeometric: its share has variance p(1 - p)/n x (N - n)/(N - 1)
    (zero when the mirror holds all N rows). The bound is z = 3.29 (two-sided 99.9 % normal quantile)
    standard deviations, plus half a unit of the reference's last printed digit, plus the implementation and
    provenance allowances above. On the reference mirror (n = 1017 of 10000, 916 of 10000, 500 of 1000) this is
    0.032, 0.029, 0.049 and 0.049; with the full official files, 0.0051 (akamaster), 0.0031 (chenyaofo) and 0.0105
    (ImageNet)."""
    import math
    from statistics import NormalDist

    p, N, decimals, _, provenance = REFERENCE[name]
    assert 0 < n <= N, f"{name}: {n} images, the reference has {N}"
    z = NormalDist().inv_cdf(1 - 0.001 / 2)
    sd = math.sqrt(p * (1 - p) / n * (N - n) / (N - 1))
    return (
        z * sd
        + 0.5 * 10 ** -(decimals + 2)
        + IMPLEMENTATION[models.resolve_spec(name, {})["dataset"]]
        + provenance
    )


@pytest.mark.parametrize(
    "name", ["resnet20_cifar10", "resnet56_cifar10", "resnet56_cifar100", "mobilenet_v2_imagenet"]
)
def test_models_reach_their_published_accuracy(prepared, mirror_counts, name):
    """Every image of the mirror's test split is scored, and top-1 is the reference's within the
    tolerance that the mirror's row count justifies (``accuracy_tolerance``). Measured 2026-11-29 on the
    reference mirror: 0.9164, 0.9272, 0.7096, 0.834. Faults this catches there: colour channels in BGR
    order give 0.847, 0.857, 0.471, 0.682 (each at least 0.06 below, over twice the tolerance); mean and
    std on the 0-255 scale or no normalisation give 0.002-0.53."""
    n, acc, acc5 = _accuracy(prepared, name)
    assert n == mirror_counts[models.resolve_spec(name, {})["dataset"]]["test"]
    p, N, _, source, _ = REFERENCE[name]
    tol = accuracy_tolerance(name, n)
    assert abs(acc - p) <= tol, (
        f"{name}: top-1 {acc:.4f} on {n} images, {source} reports {p} on {N} (± {tol:.4f})"
    )
    assert acc5 > acc


def test_accuracy_tolerance_catches_swapped_channels(prepared):
    """The tolerance is not so wide that a preprocessing fault passes: ResNet-20 fed BGR images.

    Paired, on the mirror's own rows: BGR must score below RGB on the same images (the exact paired interval of
    the difference excludes 0). The accuracy test, which admits RGB anywhere in reference ± tolerance, is sure to
    reject BGR only when the measured drop d exceeds twice the tolerance (RGB at the top of the band, BGR just
    below its foot); on a mirror too small for that (tolerance(n) >= d / 2, e.g. its first 300 rows) that part is
    skipped, naming the row count n at which it would apply (derived from d and ``accuracy_tolerance``)."""
    import numpy as np

    from pixelrobust.stats import paired_diff_ci

    spec = models.resolve_spec("resnet20_cifar10", {})
    split = data.load_split(prepared / "data" / "cifar10", "test")
    model = models.build_model(spec, prepared / "weights" / "resnet20_cifar10.pt")
    rgb = (
        (evaluate.predict(model, split.images, 256).argmax(1) == split.labels).numpy().astype(float)
    )
    bgr = (
        (evaluate.predict(model, split.images.flip(1), 256).argmax(1) == split.labels)
        .numpy()
        .astype(float)
    )
    d, low, _ = paired_diff_ci(rgb, bgr, 0, np.random.default_rng(0))
    assert low > 0, (
        f"BGR ({bgr.mean():.4f}) is not below RGB ({rgb.mean():.4f}) on the same {len(rgb)} images"
    )
    n, N = len(rgb), REFERENCE["resnet20_cifar10"][1]
    if accuracy_tolerance("resnet20_cifar10", n) >= d / 2:
        need = next(
            (m for m in range(n, N + 1) if accuracy_tolerance("resnet20_cifar10", m) < d / 2), None
        )
        pytest.skip(
            f"a BGR drop of {d:.3f} on {n} rows is within twice the tolerance; the accuracy test is sure to "
            f"catch it from {need} rows"
            if need
            else f"a BGR drop of {d:.3f} is within twice any tolerance"
        )
    p = REFERENCE["resnet20_cifar10"][0]
    assert p - bgr.mean() > accuracy_tolerance("resnet20_cifar10", n), (
        f"BGR top-1 {bgr.mean():.4f} passes"
    )


def test_accuracy_tolerance_shrinks_with_the_rows_held():
    """A subset is a sample of the reference's rows; the full set leaves only the fixed allowances."""
    tols = [accuracy_tolerance("resnet20_cifar10", n) for n in (100, 1017, 5000, 10000)]
    assert tols == sorted(tols, reverse=True)
    assert tols[-1] == pytest.approx(
        0.00005 + IMPLEMENTATION["cifar10"] + REFERENCE["resnet20_cifar10"][4]
    )
    assert accuracy_tolerance("mobilenet_v2_imagenet", 1000) == pytest.approx(
        0.0005 + IMPLEMENTATION["imagenet"] + REFERENCE["mobilenet_v2_imagenet"][4]
    )
    with pytest.raises(AssertionError):
        accuracy_tolerance("resnet20_cifar10", 10001)


@pytest.mark.parametrize("name", ["resnet20_cifar10", "mobilenet_v2_imagenet"])
def test_channels_last_on_the_cpu_gives_the_nchw_logits_and_gradients(prepared, name):
    spec = models.resolve_spec(name, {})
    model = models.build_model(spec, prepared / "weights" / f"{name}.pt")
    conv = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert model.channels_last and conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = data.load_split(prepared / "data" / spec["dataset"], "test", 0, 4).images.requires_grad_(
        True
    )
    out_cl = model(x)
    (g_cl,) = torch.autograd.grad(out_cl.logsumexp(1).sum(), x)
    models.set_channels_last(model, False)
    assert not model.channels_last and conv.weight.is_contiguous()
    out = model(x)
    (g,) = torch.autograd.grad(out.logsumexp(1).sum(), x)
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g_cl, g, rtol=1e-3, atol=1e-5)
    assert torch.equal(out_cl.argmax(1), out.argmax(1))


def test_wrapper_normalises_inside_and_checks_shape():
    net = torch.nn.Identity()
    model = models.Classifier(net, [0.5, 0.25, 0.0], [0.5, 0.5, 2.0], name="probe")
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)) / torch.tensor(
        [0.5, 0.5, 2.0]
    ).view(1, 3, 1, 1)
    assert torch.allclose(model(x), expected)
    with pytest.raises(
        ValueError, match=r"probe takes images shaped \(N, 3, H, W\).*\(2, 1, 4, 4\)"
    ):
        model(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="got shape"):
        model(torch.rand(3, 4, 4))


def test_new_model_over_a_known_architecture_is_config_only(prepared):
    """A model not in the registry, defined by config fields, loads and scores like the built-in one."""
    spec = models.resolve_spec(
        "my_resnet20",
        {
            "arch": "cifar_resnet_a",
            "depth": 20,
            "dataset": "cifar10",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "weights": str(prepared / "weights" / "resnet20_cifar10.pt"),
        },
    )
    model = models.build_model(spec, spec["weights"])
    split = data.load_split(prepared / "data" / "cifar10", "test", 0, 200)
    ref = models.build_model(
        models.resolve_spec("resnet20_cifar10", {}), prepared / "weights" / "resnet20_cifar10.pt"
    )
    assert torch.equal(evaluate.predict(model, split.images), evaluate.predict(ref, split.images))


def test_unknown_model_and_architecture_are_config_errors():
    with pytest.raises(ConfigError, match="models.foo.arch"):
        models.resolve_spec("foo", {})
    with pytest.raises(ConfigError, match="unknown architecture 'vgg'"):
        models.resolve_spec("foo", {"arch": "vgg", "dataset": "cifar10"})
    with pytest.raises(ConfigError, match="6n\\+2"):
        models.build_model(models.resolve_spec("resnet20_cifar10", {"depth": 21}))


def test_wrong_architecture_weights_are_named(prepared):
    spec = models.resolve_spec("resnet56_cifar10", {})
    with pytest.raises(
        ModelError,
        match=r"resnet20_cifar10.pt does not fit architecture cifar_resnet_a depth 56.*models.resnet56_cifar10",
    ):
        models.build_model(spec, prepared / "weights" / "resnet20_cifar10.pt")
    # a built-in relabelled to another dataset is a config error now (tests/test_bad_inputs.py); a
    # 10-class spec on the 100-class file still fails at loading: fc shape differs
    c100 = {**models.resolve_spec("resnet56_cifar100", {}), "num_classes": 10}
    with pytest.raises(ModelError, match="does not fit"):
        models.build_model(c100, prepared / "weights" / "resnet56_cifar100.pt")


def test_corrupt_weights_file_is_named(prepared, tmp_path):
    bad = tmp_path / "resnet20.th"
    bad.write_bytes((prepared / "weights" / "resnet20_cifar10.pt").read_bytes()[:10000])
    with pytest.raises(ModelError, match=r"resnet20.th.*corrupt, truncated"):
        models.build_model(models.resolve_spec("resnet20_cifar10", {}), bad)


def test_get_weights_checks_sha256_and_keeps_nothing_on_failure(prepared, tmp_path):
    spec = models.resolve_spec("resnet20_cifar10", {})
    src = prepared / "weights" / "resnet20_cifar10.pt"
    with pytest.raises(ChecksumError, match=r"expected 0{64}"):
        models.get_weights(
            spec=spec, source=src, out={"weights": tmp_path / "w.pt"}, sha256="0" * 64
        )
    wrong = models.resolve_spec("resnet56_cifar10", {})
    with pytest.raises(ModelError, match="does not fit"):
        models.get_weights(spec=wrong, source=src, out={"weights": tmp_path / "w.pt"}, sha256=None)
    assert list(tmp_path.iterdir()) == []
    out = models.get_weights(
        spec=spec, source=src, out={"weights": tmp_path / "w.pt"}, sha256=spec["sha256"]
    )
    assert out.read_bytes() == src.read_bytes()


def test_weights_source_prefers_local_then_mirror(mirror, tmp_path):
    spec = models.resolve_spec("mobilenet_v2_imagenet", {})
    src = models.weights_source(spec, mirror)
    assert src["kind"] == "mirror" and src["path"].endswith(
        "mobilenet_v2_imagenet_dequantized_qnnpack.pth"
    )
    assert models.weights_source(spec, None) == {
        "kind": "download",
        "url": spec["url"],
        "file": "mobilenet_v2-b0353104.pth",
        "sha256": "b0353104",
    }
    local = models.resolve_spec("mobilenet_v2_imagenet", {"weights": str(tmp_path / "x.pth")})
    assert models.weights_source(local, mirror)["kind"] == "local"
    with pytest.raises(ModelError, match="mirror's weights folder"):
        models.weights_source(spec, tmp_path)


def test_nan_model_is_reported():
    class NaNNet(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 10), float("nan"))

    model = models.Classifier(NaNNet(), [0, 0, 0], [1, 1, 1], name="nan_model")
    with pytest.raises(FloatingPointError, match="NaN"):
        evaluate.predict(model, torch.rand(4, 3, 32, 32))


def test_freeze_puts_a_model_in_eval_mode_without_parameter_gradients():
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5)
    ).train()
    assert models.freeze(net) is net
    assert not any(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.randn(3, 4, requires_grad=True)
    assert torch.equal(net(x), net(x))  # no dropout, batch norm from its running statistics
    (g,) = torch.autograd.grad(net(x).sum(), x)  # the input's gradient still flows
    assert g.shape == x.shape and g.abs().sum() > 0
