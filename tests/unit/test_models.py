"""Models: accuracy of the wrapped pretrained models on real images, and bad weights."""

from __future__ import annotations

import hashlib
import math
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from pixelrobust import cam, data, evaluate, models
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
    # a built-in relabelled to another dataset is a config error now (tests/workflow/test_bad_inputs.py); a
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


# ----------------------------------------------------------------------------------------------
# Models from other sources through config alone: torchvision and timm by name, RobustBench's folder layout,
# Python entry points (the EhanW pair); and what is found rather than configured (CAM layer, classes, input size).
#
# No test downloads anything: torchvision / timm networks get the mirror's weights or random weights saved here.
# ----------------------------------------------------------------------------------------------


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _name_of(net: nn.Module, layer: nn.Module) -> str:
    return {m: n for n, m in net.named_modules()}[layer]


# ---------------------------------------------------------------------------------------------- torchvision


def test_mobilenet_v2_by_torchvision_name_gives_the_builtin_logits(prepared):
    """The mirror's MobileNetV2 through arch torchvision:mobilenet_v2 (normalisation found from torchvision's
    weights enum) gives the built-in path's logits bit for bit, hence exactly its accuracy."""
    weights = prepared / "weights" / "mobilenet_v2_imagenet.pt"
    builtin_spec = models.resolve_spec("mobilenet_v2_imagenet", {})
    tv_spec = models.resolve_spec(
        "mnv2", {"arch": "torchvision:mobilenet_v2", "dataset": "imagenet", "weights": str(weights)}
    )
    assert tv_spec["mean"] == builtin_spec["mean"] and tv_spec["std"] == builtin_spec["std"]
    split = data.load_split(prepared / "data" / "imagenet", "test", 0, 16)
    builtin = evaluate.predict(models.build_model(builtin_spec, weights), split.images, 16)
    by_name = evaluate.predict(models.build_model(tv_spec, weights), split.images, 16)
    assert torch.equal(by_name, builtin)
    acc = (by_name.argmax(1) == split.labels).float().mean().item()
    assert (
        acc == (builtin.argmax(1) == split.labels).float().mean().item() and acc > 0.5
    )  # a real model, not noise


def test_torchvision_weights_enum_gives_url_checksum_prefix_and_preprocessing():
    spec = models.resolve_spec("r50", {"arch": "torchvision:resnet50", "dataset": "imagenet"})
    # torchvision's published IMAGENET1K_V2 recipe for ResNet-50: resize 232, crop 224 (its docs)
    assert spec["url"] == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    assert spec["sha256"] == "11ad3fa6" and spec["file"] == "resnet50-11ad3fa6.pth"
    assert (spec["input_size"], spec["resize"]) == (224, 232)
    assert spec["mean"] == [0.485, 0.456, 0.406] and spec["num_classes"] == 1000
    assert models.weights_source(spec, None) == {
        "kind": "download",
        "url": spec["url"],
        "file": spec["file"],
        "sha256": "11ad3fa6",
    }
    v1 = models.resolve_spec(
        "r50",
        {
            "arch": "torchvision:resnet50",
            "dataset": "imagenet",
            "torchvision_weights": "IMAGENET1K_V1",
        },
    )
    assert v1["sha256"] == "0676ba61" and v1["resize"] == 256
    b3 = models.resolve_spec("b3", {"arch": "torchvision:efficientnet_b3", "dataset": "imagenet"})
    assert (b3["input_size"], b3["resize"]) == (300, 320)
    with pytest.raises(ConfigError, match=r"torchvision_weights is 'IMAGENET9K'.*IMAGENET1K_V1"):
        models.resolve_spec(
            "r50",
            {
                "arch": "torchvision:resnet50",
                "dataset": "imagenet",
                "torchvision_weights": "IMAGENET9K",
            },
        )


def test_torchvision_model_from_a_local_checkpoint(tmp_path):
    """Another torchvision classifier on CIFAR-10 from a local file: DataParallel's 'module.' prefix and a
    {'state_dict': ...} wrapper are undone, normalisation is the spec's, the checksum is checked."""
    torch.manual_seed(0)
    net = models._build_by_name(
        {"arch": "torchvision:resnet18", "num_classes": 10, "dataset": "cifar10", "name": "x"}
    ).eval()
    path = tmp_path / "r18.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 7}, path
    )
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    spec = models.resolve_spec(
        "r18",
        {
            "arch": "torchvision:resnet18",
            "dataset": "cifar10",
            "mean": mean,
            "std": std,
            "weights": str(path),
        },
    )
    model = models.build_model(spec, path)
    x = torch.rand(3, 3, 32, 32)
    expected = net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
    assert models.get_weights(
        spec=spec, source=path, out={"weights": tmp_path / "out.pt"}, sha256=_sha256(path)
    ).is_file()
    with pytest.raises(ChecksumError):
        models.get_weights(
            spec=spec, source=path, out={"weights": tmp_path / "bad.pt"}, sha256="0" * 64
        )
    # off ImageNet, torchvision's enum says nothing about these weights: the normalisation must be given
    with pytest.raises(ConfigError, match=r"mean is required"):
        models.resolve_spec(
            "r18", {"arch": "torchvision:resnet18", "dataset": "cifar10", "weights": str(path)}
        )


# ---------------------------------------------------------------------------------------------- timm


def test_timm_model_from_a_local_checkpoint(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=1000).eval()
    path = tmp_path / "timm_r18.pth"
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, path)
    spec = models.resolve_spec(
        "t", {"arch": "timm:resnet18", "dataset": "imagenet", "weights": str(path)}
    )
    # found from timm's pretrained config: ImageNet normalisation, 224 px at crop_pct 0.95 (224 / 0.95 = 235.8)
    assert (
        spec["mean"] == pytest.approx([0.485, 0.456, 0.406])
        and spec["input_size"] == 224
        and spec["resize"] == 235
    )
    model = models.build_model(spec, path)
    x = torch.rand(2, 3, 224, 224)
    torch.testing.assert_close(model(x), net((x - model.mean) / model.std), rtol=1e-4, atol=1e-4)
    assert _name_of(model.net, cam.target_layer(model)) == "layer4.1"
    with pytest.raises(ConfigError, match=r"models.t.weights.*nothing is fetched"):
        models.resolve_spec("t", {"arch": "timm:resnet18", "dataset": "imagenet"})
    with pytest.raises(ConfigError, match=r"timm .* has no model 'resnet1'.*resnet1"):
        models.resolve_spec(
            "t", {"arch": "timm:resnet1", "dataset": "imagenet", "weights": str(path)}
        )


# ---------------------------------------------------------------------------------------------- entry points, EhanW


@pytest.mark.parametrize(
    "name,reported", [("resnet20_ehanw_standard", 0.901), ("resnet20_ehanw_pgd", 0.852)]
)
def test_ehanw_pair_through_the_entry_point_reaches_its_reported_accuracy(prepared, name, reported):
    """../shared/data/README.md reports 90.1 % / 85.2 % clean top-1 on the reference mirror's 1017 CIFAR-10 test
    rows, the first 1017 of the official test batch: scored here on those same rows (any mirror holding at least
    them, the full official file included; skipped on a smaller one). Tolerance from that row count: the README's
    rounding to 0.1 % (±0.05 %) plus one of the 1017 images (a tie flipped by floating-point order)."""
    readme_rows = 1017  # the rows the README's numbers were measured on (its text), not a count of this mirror
    spec = models.resolve_spec(name, {})
    assert spec["arch"] == "python:pixelrobust.zoo.ehanw:resnet20"
    held = data.read_manifest(prepared / "data" / "cifar10")["counts"]["test"]
    if held < readme_rows:
        pytest.skip(
            f"the README's accuracy is on the first {readme_rows} CIFAR-10 test rows; this mirror holds {held}"
        )
    split = data.load_split(prepared / "data" / "cifar10", "test", 0, readme_rows)
    model = models.build_model(spec, prepared / "weights" / f"{name}.pt")
    acc = (
        (evaluate.predict(model, split.images, 256).argmax(1) == split.labels).float().mean().item()
    )
    assert len(split) == readme_rows
    assert abs(acc - reported) <= 0.0005 + 1 / readme_rows, (
        f"{name}: {acc:.4f} on {readme_rows} rows, README {reported}"
    )


def test_ehanw_weights_come_from_the_mirror_or_the_pinned_commit(mirror):
    spec = models.resolve_spec("resnet20_ehanw_pgd", {})
    src = models.weights_source(spec, mirror)
    assert src["path"] == str(mirror / "robust" / "ehanw_resnet20_pgd.pth")
    sums = dict(
        line.split()[::-1]
        for line in (mirror / "SHA256SUMS").read_text().splitlines()
        if line.strip()
    )
    assert (
        src["sha256"]
        == sums["robust/ehanw_resnet20_pgd.pth"]
        == _sha256(mirror / "robust" / "ehanw_resnet20_pgd.pth")
    )
    online = models.weights_source(spec, None)
    assert online["url"].startswith("https://github.com/EhanW/advrob-cifar10/raw/4f92f135")
    assert (
        online["url"].endswith("/pretrained/resnet20_pgd.pth") and online["sha256"] == src["sha256"]
    )


def _module(tmp_path, monkeypatch, name: str, source: str):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)


NETS = """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, num_classes=10, width=4, normalise=False):
            super().__init__()
            self.normalise = normalise
            self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, 2, 1), nn.ReLU())
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            if self.normalise:  # RobustBench style: [0, 1] in, normalised inside
                x = (x - 0.5) / 0.25
            return self.head(self.body(x).mean((2, 3)))

    def tiny(num_classes, width=4):
        return Tiny(num_classes, width)

    def normalised():
        return Tiny(10, 4, normalise=True)

    def not_a_module(num_classes):
        return "a string"

    def thousand():
        return Tiny(1000)
"""


def test_entry_point_model_builds_with_kwargs_and_checks_its_classes(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, "user_nets", NETS)
    import user_nets

    torch.manual_seed(0)
    net = user_nets.Tiny(10, 6).eval()
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    cfg = {
        "arch": "python:user_nets:tiny",
        "dataset": "cifar10",
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "kwargs": {"width": 6},
        "weights": str(tmp_path / "tiny.pt"),
    }
    model = models.build_model(models.resolve_spec("mine", cfg), tmp_path / "tiny.pt")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(x), net((x - 0.5) / 0.25))
    with pytest.raises(ModelError, match=r"outputs 1000 classes, but its dataset cifar10 has 10"):
        models.build_model(
            models.resolve_spec("mine", {**cfg, "arch": "python:user_nets:thousand", "kwargs": {}})
        )
    with pytest.raises(ModelError, match=r"returned a str, not a torch nn.Module"):
        models.build_model(
            models.resolve_spec(
                "mine", {**cfg, "arch": "python:user_nets:not_a_module", "kwargs": {}}
            )
        )
    with pytest.raises(
        ConfigError, match=r"models.mine.arch: module 'user_nets' has no function 'nope'"
    ):
        models.resolve_spec("mine", {**cfg, "arch": "python:user_nets:nope"})
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_pkg.nets'.*PYTHONPATH"):
        models.resolve_spec("mine", {**cfg, "arch": "python:no_such_pkg.nets:tiny"})


# ---------------------------------------------------------------------------------------------- RobustBench


def test_robustbench_folder_entry_normalises_once(tmp_path, monkeypatch):
    """A RobustBench entry read from <model_dir>/<dataset>/<threat_model>/<Name>.pt (RobustBench's checkpoint
    form: {'state_dict': ...} with 'module.'): the network normalises inside, so the wrapper must not."""
    _module(tmp_path, monkeypatch, "rb_nets", NETS)
    import rb_nets

    torch.manual_seed(1)
    net = rb_nets.normalised().eval()
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
        folder / "Someone2024Robust.pt",
    )
    cfg = {
        "arch": "robustbench:Someone2024Robust",
        "dataset": "cifar10",
        "model_dir": str(tmp_path / "models"),
        "builder": "rb_nets:normalised",
    }
    spec = models.resolve_spec("rb", cfg)
    assert (
        spec["weights"] == str(folder / "Someone2024Robust.pt") and spec["threat_model"] == "Linf"
    )
    model = models.build_model(spec, spec["weights"])
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(
        model(x), net(x)
    )  # [0, 1] straight in: normalised once, by the network
    with pytest.raises(ConfigError, match=r"models.rb.mean .* normalise twice"):
        models.resolve_spec("rb", {**cfg, "mean": [0.4914, 0.4822, 0.4465]})
    with pytest.raises(
        ConfigError, match=r"L2.Someone2024Robust.pt does not exist.*RobustBench's own layout"
    ):
        models.resolve_spec("rb", {**cfg, "threat_model": "L2"})


def test_robustbench_without_the_package_or_a_builder_says_what_is_needed(tmp_path):
    try:
        import robustbench  # noqa: F401
    except Exception:  # not installed, or its dependencies missing (pkg_resources, geotorch, ...)
        pass
    else:
        pytest.skip("robustbench is importable here: it builds the architecture itself")
    folder = tmp_path / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    (folder / "Standard.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"robustbench==1.1.1.*models.rb.builder"):
        models.resolve_spec(
            "rb", {"arch": "robustbench:Standard", "dataset": "cifar10", "model_dir": str(tmp_path)}
        )


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_architecture_lists_each_way_to_add_one():
    with pytest.raises(ConfigError) as e:
        models.resolve_spec("r18", {"arch": "resnet18", "dataset": "imagenet"})
    msg = str(e.value)
    assert "did you mean torchvision:resnet18?" in msg
    for way in (
        "cifar_resnet_a",
        "torchvision:<model>",
        "timm:<model>",
        "robustbench:<Name>",
        "model_dir",
        "python:<package.module>:<function>",
        "config/README.md",
    ):
        assert way in msg
    with pytest.raises(ConfigError, match=r"no classification model 'resnet5'; close: resnet50"):
        models.resolve_spec("r", {"arch": "torchvision:resnet5", "dataset": "imagenet"})
    with pytest.raises(ConfigError, match=r"model 'newnet' is not built in.*torchvision:<model>"):
        models.resolve_spec("newnet", {})


# ---------------------------------------------------------------------------------------------- found, not configured


@pytest.mark.parametrize(
    "name,expected",
    [
        ("resnet20_cifar10", "layer3.2"),
        ("resnet56_cifar100", "layer3.8"),
        ("mobilenet_v2_imagenet", "features.18"),
        ("resnet20_ehanw_standard", "stage_3.2"),
    ],
)
def test_cam_layer_is_the_block_that_outputs_the_last_feature_map(name, expected):
    model = models.build_model(models.resolve_spec(name, {}))
    assert _name_of(model.net, cam.target_layer(model)) == expected


@pytest.mark.parametrize(
    "arch,expected",
    [
        ("resnet18", "layer4.1"),
        ("efficientnet_b0", "features.8"),
        ("convnext_tiny", "features.7"),
        ("densenet121", "features.norm5"),
    ],
)
def test_cam_layer_of_torchvision_models(arch, expected):
    model = models.build_model(
        models.resolve_spec("m", {"arch": f"torchvision:{arch}", "dataset": "imagenet"})
    )
    assert _name_of(model.net, cam.target_layer(model)) == expected


def test_cam_layer_is_found_by_tracing_not_by_type():
    """A network whose attributes are named nothing like layer3 / features, and whose last conv is not the
    last feature map (a 1×1 conv on a side branch runs first): the traced layer is the final block."""

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(
                nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU()),
            )
            self.side = nn.Conv2d(3, 4, 1)  # defined last, runs first
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            s = self.side(x).mean()
            return self.fc(self.trunk(x).mean((2, 3)) + s)

    model = models.Classifier(Odd(), [0.5] * 3, [0.25] * 3, "odd", 10).eval()
    assert cam.target_layer(model) is model.net.trunk[1]
    model.cam_layer = "trunk.0"
    assert cam.target_layer(model) is model.net.trunk[0]
    model.cam_layer = "trunk.9"
    with pytest.raises(ValueError, match=r"cam_layer is 'trunk.9'.*not a module"):
        cam.target_layer(model)


def test_cam_layer_override_reaches_gradcam_from_the_config(prepared):
    spec = models.resolve_spec("resnet20_cifar10", {"cam_layer": "layer2"})
    model = models.build_model(spec, prepared / "weights" / "resnet20_cifar10.pt")
    assert cam.target_layer(model) is model.net.layer2
    x = data.load_split(prepared / "data" / "cifar10", "test", 0, 2).images
    maps = cam.gradcam_pp(model, x, [0, 1])
    assert maps.shape == (2, 32, 32) and maps.max() <= 1


def test_vision_transformer_is_refused_for_gradcam_with_a_reason():
    """torchvision's ViT (a small one): its only spatial output is the patch embedding, then token blocks."""
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=10,
    )
    model = models.Classifier(vit, [0.5] * 3, [0.25] * 3, "vit", 10).eval()
    with pytest.raises(
        ValueError, match=r"conv_proj, is followed by \d+ layers with weights.*cam_layer"
    ):
        cam.target_layer(model)
    model.cam_layer = "conv_proj"  # the override is honoured even here
    assert cam.target_layer(model) is vit.conv_proj


def test_classifier_knows_its_input_size():
    assert (
        models.build_model(
            models.resolve_spec(
                "b3", {"arch": "torchvision:efficientnet_b3", "dataset": "imagenet"}
            )
        ).input_size
        == 300
    )
    assert models.build_model(models.resolve_spec("resnet20_ehanw_pgd", {})).input_size == 32
    assert math.isclose(models.probe_side({"dataset": "imagenet"}), 224)


# ---------------------------------------------------------------------------------------------- through config


def _config(*overlays):
    import yaml
    from snakemake.utils import validate

    from helpers import REPO, SCHEMA
    from pixelrobust import config as prconfig

    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    for overlay in overlays:
        prconfig._merge(
            cfg,
            yaml.safe_load((REPO / "config" / overlay).read_text())
            if isinstance(overlay, str)
            else overlay,
        )
    validate(cfg, str(SCHEMA))
    return prconfig.check(cfg)


def test_robust_pair_overlay_passes_the_config_check_with_the_pair_in_p1_p3_and_synthesis():
    """Config only (the runs are the workflow's): the overlay names both EhanW models in the P1, P3 and
    synthesis sections and the check resolves them to the entry point with CIFAR-10's classes."""
    import yaml

    from helpers import REPO

    overlay = yaml.safe_load((REPO / "config" / "robust_pair.yaml").read_text())
    specs = _config("robust_pair.yaml")
    for name in ("resnet20_ehanw_standard", "resnet20_ehanw_pgd"):
        assert (
            specs[name]["arch"] == "python:pixelrobust.zoo.ehanw:resnet20"
            and specs[name]["num_classes"] == 10
        )
        for section in ("onepixel", "gradients", "masked_pgd", "synthesis"):
            assert name in overlay[section]["models"], (section, name)


def test_input_size_found_is_checked_against_the_dataset():
    """EfficientNet-B3's torchvision weights are evaluated at resize 320, crop 300; the tiny config's
    ImageNet images are 224: a config error naming both, with the fix; matching images pass."""
    b3 = {"models": {"b3": {"arch": "torchvision:efficientnet_b3", "dataset": "imagenet"}}}
    with pytest.raises(
        ConfigError,
        match=r"b3 expects 300x300 images, but dataset imagenet gives 224x224.*resize 320, crop 300",
    ):
        _config(b3)
    assert (
        _config(b3, {"datasets": {"imagenet": {"resize": 320, "crop": 300}}})["b3"]["input_size"]
        == 300
    )
    with pytest.raises(
        ConfigError,
        match=r"models.x.arch: unknown architecture 'resnet18' \(did you mean torchvision:resnet18\?\)",
    ):
        _config({"models": {"x": {"arch": "resnet18", "dataset": "imagenet"}}})


# ---------------------------------------------------------------------------------------------- referee findings


class _Att(nn.Module):
    """A side branch that runs last: ``f * sigmoid(attention(f))`` (attention is a 1-channel conv)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU()
        )
        self.attention = nn.Conv2d(8, 1, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        f = self.features(x)
        return self.fc((f * torch.sigmoid(self.attention(f))).mean((2, 3)))


class _Pool(nn.Module):
    """A final pooling that keeps 4x4 before flatten."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 4, 1), nn.ReLU()
        )
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class _Skip(nn.Module):
    """A residual add in the top-level forward: the map the head pools comes out of no module."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = self.stem(x)
        return self.fc(torch.relu(h + self.body(h)).mean((2, 3)))


class _OneChannel(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, 2, 1)
        )
        self.fc = nn.Linear(16 * 16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


def _wrapped(net, name="net"):
    return models.Classifier(net, [0.5] * 3, [0.25] * 3, name, 10).eval()


def test_cam_layer_is_what_the_head_reads_through_functional_ops_and_pooling():
    """Traced through the autograd graph from the logits: a late 1-channel side branch is not the feature map
    (the attention-weighted map comes from ``features``); a pooling that keeps H·W > 1 is followed back to
    what it pools; a map computed outside any module (a top-level residual add) and a 1-channel map are
    refused with the layers to choose from."""
    att = _wrapped(_Att())
    assert cam.target_layer(att) is att.net.features[3]  # not attention (1 channel)
    pool = _wrapped(_Pool())
    assert cam.target_layer(pool) is pool.net.features[3]  # not pool
    with pytest.raises(
        ValueError,
        match=r"_Skip's head reads a feature map \(1x8x32x32\).*outside any module.*"
        r"models.skip.cam_layer to one of body, stem",
    ):
        cam.target_layer(_wrapped(_Skip(), "skip"))
    with pytest.raises(ValueError, match=r"features.2, has 1 channel.*models.one.cam_layer"):
        cam.target_layer(_wrapped(_OneChannel(), "one"))
    maps = cam.gradcam_pp(
        att, torch.rand(2, 3, 32, 32), [0, 1]
    )  # and Grad-CAM++ runs on the layer found
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()


def test_imagenet_resnet_on_cifar_images_is_refused_for_gradcam_with_the_layer_to_set():
    """torchvision's ResNet-18 on 32x32 images (config/README.md's resnet18_cifar example): layer4 runs on
    1x1 maps, so the last spatial map is layer3's 2x2; the error says so and names cam_layer: layer3.1,
    which then works."""
    net = models._build_by_name(
        {"arch": "torchvision:resnet18", "num_classes": 10, "dataset": "cifar10", "name": "r"}
    )
    model = _wrapped(net, "resnet18_cifar")
    model.input_size = 32
    with pytest.raises(
        ValueError,
        match=r"shrink to 1x1 at this input size \(32x32\).*layer4.0.conv1.*after layer3.1.*"
        r"\(2x2\).*set models.resnet18_cifar.cam_layer: layer3.1",
    ):
        cam.target_layer(model)
    model.cam_layer = "layer3.1"
    maps = cam.gradcam_pp(model, torch.rand(1, 3, 32, 32), [3])
    assert maps.shape == (1, 32, 32)


def _wnid_dataset(tmp_path, name="myval"):
    root = tmp_path / name
    (root / "n01440764").mkdir(parents=True)
    (root / "n01443537").mkdir()
    data.register_datasets(
        {
            name: {
                "layout": "imagefolder",
                "folder": str(root),
                "class_index": "imagenet",
                "resize": 256,
                "crop": 224,
            }
        }
    )


def test_a_user_dataset_with_imagenet_indices_gets_what_imagenet_weights_come_with(tmp_path):
    """wnid folders with class_index: imagenet (config/README.md's recipe) are ImageNet for the models:
    torchvision's enum gives mean/std, input size, resize and url, and googlenet / inception_v3 get
    transform_input as on imagenet itself."""
    _wnid_dataset(tmp_path)
    for arch in ("googlenet", "inception_v3"):
        on_user = models.resolve_spec("g", {"arch": f"torchvision:{arch}", "dataset": "myval"})
        on_imagenet = models.resolve_spec(
            "g", {"arch": f"torchvision:{arch}", "dataset": "imagenet"}
        )
        for key in ("mean", "std", "input_size", "resize", "url", "sha256", "weights_enum"):
            assert on_user[key] == on_imagenet[key], key
        assert models._build_by_name(on_user).transform_input is True


def test_user_dataset_models_are_probed_at_its_image_size(tmp_path, monkeypatch):
    """An entry-point model whose head fits 32x32 inputs only, on a 32-px user ImageFolder: probed (and traced
    for Grad-CAM++) at 32, not at 224."""
    _module(tmp_path, monkeypatch, "fixed_nets", FIXED)
    import fixed_nets

    root = tmp_path / "my32"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        from PIL import Image

        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / c / "x.png")
    data.register_datasets({"my32": {"layout": "imagefolder", "folder": str(root)}})
    torch.save(fixed_nets.fixed(2).state_dict(), tmp_path / "w.pt")
    spec = models.resolve_spec(
        "f",
        {
            "arch": "python:fixed_nets:fixed",
            "dataset": "my32",
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
            "weights": str(tmp_path / "w.pt"),
        },
    )
    assert models.probe_side(spec) == 32
    model = models.build_model(spec, tmp_path / "w.pt")
    assert model.input_size == 32 and cam.target_layer(model) is model.net.body[1]


FIXED = """
    import torch
    from torch import nn

    class Fixed(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU())
            self.fc = nn.Linear(4 * 16 * 16, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.body(x), 1))

    def fixed(num_classes):
        return Fixed(num_classes)
"""


def test_a_resize_other_than_the_weights_is_warned_naming_both():
    """ResNet-50's default (V2) weights are evaluated at resize 232, crop 224: the tiny config's ImageNet
    resize 256 runs (the crop fits) but warns with both and the key; resize 232 is silent."""
    import warnings

    r50 = {"models": {"r50": {"arch": "torchvision:resnet50", "dataset": "imagenet"}}}
    with pytest.warns(
        UserWarning,
        match=r"r50 was evaluated with resize 232 \(then crop 224\).*datasets.imagenet.resize "
        r"is 256.*set datasets.imagenet.resize: 232",
    ):
        _config(r50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _config(r50, {"datasets": {"imagenet": {"resize": 232}}})


def test_class_count_of_the_weights_is_named_beside_the_dataset(tmp_path):
    """Weights with a 10-class head on a 3-class folder: the error names both counts, not a size mismatch."""
    root = tmp_path / "three"
    for c in "abc":
        (root / c).mkdir(parents=True)
    data.register_datasets({"three": {"layout": "imagefolder", "folder": str(root), "crop": 32}})
    torch.save(
        models._build_by_name(
            {"arch": "torchvision:resnet18", "num_classes": 10, "dataset": "cifar10", "name": "x"}
        ).state_dict(),
        tmp_path / "r18.pt",
    )
    spec = models.resolve_spec(
        "r18",
        {
            "arch": "torchvision:resnet18",
            "dataset": "three",
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
            "weights": str(tmp_path / "r18.pt"),
        },
    )
    with pytest.raises(
        ModelError,
        match=r"model r18: weights file .*r18.pt does not fit: it has 10 outputs \(fc\.(bias is 10|weight is "
        r"10x512)\), but its dataset three has 3 classes.*fix models.r18.dataset",
    ):
        models.build_model(spec, tmp_path / "r18.pt")


def test_checkpoint_under_net_is_unwrapped_and_enum_is_recorded_only_when_used(tmp_path):
    torch.manual_seed(0)
    net = models._build_by_name(
        {"arch": "torchvision:resnet18", "num_classes": 10, "dataset": "cifar10", "name": "x"}
    ).eval()
    torch.save({"net": net.state_dict(), "epoch": 1}, tmp_path / "r18.pt")
    spec = models.resolve_spec(
        "r18",
        {
            "arch": "torchvision:resnet18",
            "dataset": "cifar10",
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
            "weights": str(tmp_path / "r18.pt"),
        },
    )
    assert "weights_enum" not in spec  # CIFAR weights: torchvision's ImageNet enum played no part
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(
        models.build_model(spec, tmp_path / "r18.pt")(x), net((x - 0.5) / 0.25)
    )
    assert (
        models.resolve_spec("r", {"arch": "torchvision:resnet18", "dataset": "imagenet"})[
            "weights_enum"
        ]
        == "ResNet18_Weights.IMAGENET1K_V1"
    )


# ---- the low-precision scorer: batch norm folded, fp32 of the original decides -----------------------------------


def _n_bn(net):
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_low_precision_scorer_folds_every_batch_norm_and_keeps_the_function(resnet20, prepared):
    from pixelrobust.models import low_precision_scorer

    scorer, note = low_precision_scorer(resnet20)
    assert scorer is not resnet20 and note.startswith("batch norm folded (19 of 19 layers")
    assert _n_bn(scorer.net) == 0 and _n_bn(resnet20.net) == 19  # the original is untouched
    # folding is an identity of real numbers: gamma (Wx + b - mu) / sigma + beta = W'x + b'; fp32 rounding only
    x = data.load_split(prepared / "data" / "cifar10", "test", 0, 16).images
    with torch.inference_mode():
        ref, got = resnet20(x), scorer(x)
    assert (got - ref).abs().max().item() < 1e-4 * (1 + ref.abs().max().item())
    assert torch.equal(got.argmax(1), ref.argmax(1))


class _WithBN(torch.nn.Module):
    def __init__(self, branch: bool = False):
        super().__init__()
        self.conv, self.bn, self.branch = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), branch
        self.head = torch.nn.Linear(4, 2)
        with torch.no_grad():  # a batch norm that is not the identity
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 2)
            self.bn.bias.uniform_(-1, 1)

    def forward(self, x):
        z = self.bn(self.conv(x))
        if self.branch and z.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            z = -z
        return self.head(z.mean((2, 3)))


def _classifier(net):
    from pixelrobust.models import Classifier

    torch.manual_seed(0)
    c = Classifier(net, [0.5] * 3, [0.25] * 3, "toy", 2).eval()
    c.input_size = 8
    return c


def test_low_precision_scorer_returns_the_model_where_it_cannot_fold():
    from pixelrobust.models import low_precision_scorer

    traced_not = _classifier(_WithBN(branch=True))
    scorer, note = low_precision_scorer(traced_not)
    assert scorer is traced_not and "torch.fx" in note
    plain = _classifier(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten()))
    assert low_precision_scorer(plain) == (plain, "no batch norm to fold")
    training = _classifier(_WithBN()).train()
    assert low_precision_scorer(training)[0] is training


def test_low_precision_scorer_refuses_a_fold_that_changes_the_logits(monkeypatch):
    import torch.fx.experimental.optimization as opt

    from pixelrobust.models import low_precision_scorer

    model = _classifier(_WithBN())
    real = opt.fuse

    def wrong(net, inplace=False):  # folds, then loses the batch norm's shift: a broken fold
        out = real(net, inplace=inplace)
        with torch.no_grad():
            for m in out.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.bias.zero_()
        return out

    def slightly_off(net, inplace=False):  # 1 % on every folded weight: beyond the 1e-3 tolerance
        out = real(net, inplace=inplace)
        with torch.no_grad():
            for m in out.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.weight.mul_(1.01)
        return out

    assert low_precision_scorer(model)[0] is not model  # the true fold is accepted
    for broken in (wrong, slightly_off):
        monkeypatch.setattr(opt, "fuse", broken)
        scorer, note = low_precision_scorer(model)
        assert scorer is model and "differ" in note


def test_low_precision_scorer_leaves_the_models_hooks_behind():
    from pixelrobust.models import low_precision_scorer

    model, calls = _classifier(_WithBN()), []
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    model.net.conv.register_forward_hook(lambda m, a, o: calls.append(2))
    scorer, _ = low_precision_scorer(model)
    assert calls == [1, 2]  # the probe ran the model once
    with torch.inference_mode():
        scorer(torch.rand(2, 3, 8, 8))
    assert calls == [1, 2]
