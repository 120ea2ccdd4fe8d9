"""Pretrained classifiers, each wrapped to take images in [0, 1] and normalise them itself.

A model is a *spec* (a dict): its architecture, dataset, normalisation and where its weights come
from. Built-in specs are in :data:`MODELS`; the config's ``models:`` section picks them by name and
may override any field or define new models over the architectures in :data:`ARCHITECTURES`.
Adding an architecture is one entry in :data:`ARCHITECTURES` (a builder and a state-dict adapter).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .data import num_classes as dataset_num_classes
from .errors import ConfigError, ModelError

# ----------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, section 4.2: 6n+2 layers, 16/32/64 channels)
# ----------------------------------------------------------------------------------------------


class _PadShortcut(nn.Module):
    """Option A shortcut: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.downsample = _PadShortcut(planes)
            else:
                self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs. ``shortcut`` 'A' (zero-pad, akamaster) or 'B' (1×1 conv, chenyaofo)."""

    def __init__(self, depth: int, num_classes: int, shortcut: str = "A"):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _strip_prefix(sd: dict, prefix: str = "module.") -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def _adapt_akamaster(sd: dict) -> dict:
    sd = _strip_prefix(sd.get("state_dict", sd))
    return {("fc." + k[len("linear."):]) if k.startswith("linear.") else k: v for k, v in sd.items()}


def _adapt_plain(sd: dict) -> dict:
    return _strip_prefix(sd.get("state_dict", sd))


def _build_mobilenet_v2(spec: dict) -> nn.Module:
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(weights=None, num_classes=spec["num_classes"])


ARCHITECTURES: dict[str, dict[str, Callable]] = {
    "cifar_resnet_a": {
        "build": lambda spec: CifarResNet(spec["depth"], spec["num_classes"], "A"),
        "adapt": _adapt_akamaster,
    },
    "cifar_resnet_b": {
        "build": lambda spec: CifarResNet(spec["depth"], spec["num_classes"], "B"),
        "adapt": _adapt_plain,
    },
    "mobilenet_v2": {"build": _build_mobilenet_v2, "adapt": _adapt_plain},
}

CIFAR10_MEAN_STD = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # akamaster uses ImageNet's
IMAGENET_MEAN_STD = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"

MODELS: dict[str, dict] = {
    "resnet20_cifar10": {
        "arch": "cifar_resnet_a", "depth": 20, "dataset": "cifar10", **CIFAR10_MEAN_STD,
        "url": _AKAMASTER + "resnet20-12fca82f.th", "file": "resnet20-12fca82f.th",
        "sha256": "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
    },
    "resnet56_cifar10": {
        "arch": "cifar_resnet_a", "depth": 56, "dataset": "cifar10", **CIFAR10_MEAN_STD,
        "url": _AKAMASTER + "resnet56-4bfd9763.th", "file": "resnet56-4bfd9763.th",
        "sha256": "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
    },
    "resnet56_cifar100": {
        "arch": "cifar_resnet_b", "depth": 56, "dataset": "cifar100",
        "mean": [0.507, 0.4865, 0.4409], "std": [0.2673, 0.2564, 0.2761],
        "url": "https://github.com/chenyaofo/pytorch-cifar-models/releases/download/resnet/cifar100_resnet56-f2eff4c8.pt",
        "file": "cifar100_resnet56-f2eff4c8.pt",
        "sha256": "f2eff4c8461ca1e0d39af83a65f7243bf7d29ec421efee3064bcee93a3caaa73",
    },
    "mobilenet_v2_imagenet": {
        "arch": "mobilenet_v2", "dataset": "imagenet", **IMAGENET_MEAN_STD,
        # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1; torchvision publishes only the first 8
        # hex digits of its sha256 (in the file name), so only that prefix is checked.
        "url": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth", "file": "mobilenet_v2-b0353104.pth",
        "sha256": "b0353104",
        # Also accepted in a mirror: torchvision's quantized MobileNetV2 dequantized to float
        # (what ../shared/data holds; 84.2 % on the 500 sample images, see docs/data.md).
        "mirror_files": {
            "mobilenet_v2_imagenet_dequantized_qnnpack.pth": "fa1cb45c6b1f62a99ccd61bc8e23397adbef344b07897098251eb41c0ed24c5f",
        },
    },
}

SPEC_KEYS = ("arch", "depth", "dataset", "mean", "std", "url", "file", "sha256", "weights", "mirror_files", "num_classes")


def resolve_spec(name: str, overrides: dict | None) -> dict:
    """The full spec of a model: the built-in entry (if any) updated with the config's fields."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if name not in MODELS and "arch" not in overrides:
        raise ConfigError(
            f"model {name!r} is not built in (built-in: {', '.join(MODELS)}); to add it, give models.{name}.arch "
            f"(one of {', '.join(ARCHITECTURES)}), dataset, mean, std and url+sha256 or weights"
        )
    spec = {"mirror_files": {}, **MODELS.get(name, {}), **overrides, "name": name}
    if spec["arch"] not in ARCHITECTURES:
        raise ConfigError(f"models.{name}.arch: unknown architecture {spec['arch']!r}; known: {', '.join(ARCHITECTURES)}")
    for key in ("dataset", "mean", "std"):
        if key not in spec:
            raise ConfigError(f"models.{name}.{key} is required for a model that is not built in")
    if "weights" not in spec and "url" not in spec:
        raise ConfigError(f"models.{name}: give either weights (a local file) or url (+ sha256)")
    _check_plausible(name, spec, overrides)
    spec.setdefault("num_classes", dataset_num_classes(spec["dataset"]))
    spec.setdefault("file", Path(spec.get("url", spec.get("weights", name))).name)
    if spec["arch"].startswith("cifar_resnet") and "depth" not in spec:
        raise ConfigError(f"models.{name}.depth is required for architecture {spec['arch']}")
    return spec


def _check_plausible(name: str, spec: dict, overrides: dict) -> None:
    """Catch model specs that would run but give wrong numbers: 0-255 normalisation, a built-in's
    weights relabelled to another dataset."""
    for key, low in (("mean", 0.0), ("std", 0.0)):
        values = [float(v) for v in spec[key]]
        if len(values) != 3:
            raise ConfigError(f"models.{name}.{key} has {len(values)} values; give one per RGB channel, e.g. [0.485, 0.456, 0.406]")
        if any(v > 1.0 for v in values):
            scaled = [round(v / 255.0, 4) for v in values]
            raise ConfigError(
                f"models.{name}.{key} is {values}, which looks like the 0-255 scale; models take images in [0, 1] and "
                f"normalise them themselves, so give {key} on the [0, 1] scale (divided by 255: {scaled})"
            )
        if any(v < low for v in values) or (key == "std" and any(v <= 0 for v in values)):
            raise ConfigError(f"models.{name}.{key} is {values}; {key} must be in {'(0, 1]' if key == 'std' else '[0, 1]'} per channel")
    builtin = MODELS.get(name)
    if builtin and "dataset" in overrides and overrides["dataset"] != builtin["dataset"] \
            and not ({"weights", "url"} & set(overrides)):
        raise ConfigError(
            f"models.{name}.dataset is {overrides['dataset']!r}, but {name}'s built-in weights were trained on "
            f"{builtin['dataset']!r} ({dataset_num_classes(builtin['dataset'])} classes); remove models.{name}.dataset, or add "
            f"the model under a new name with its own arch, dataset, mean, std and weights (or url + sha256)"
        )


# ----------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------


class Classifier(nn.Module):
    """A network behind its own normalisation: call it on images in [0, 1] (N×3×H×W), get logits."""

    def __init__(self, net: nn.Module, mean, std, name: str = "", num_classes: int | None = None):
        super().__init__()
        self.net = net
        self.name = name
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        # ours: on the CPU the network runs channels-last (NHWC); see docs/decisions.md, Foundation
        self.channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"model {self.name or type(self.net).__name__} takes images shaped (N, {self.mean.shape[1]}, H, W) "
                f"in [0, 1]; got shape {tuple(x.shape)}"
            )
        z = (x - self.mean) / self.std
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return self.net(z)


def _read_weights(path: Path, name: str) -> dict:
    if not path.is_file():
        raise ModelError(f"model {name}: weights file {path} does not exist (config key models.{name}.weights or url)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, pickle with code, ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelError(
            f"model {name}: cannot read weights file {path} ({type(e).__name__}: {first}); "
            f"it is corrupt, truncated or not a PyTorch state dict; delete it and rerun, or fix models.{name}.weights"
        ) from e
    if not isinstance(obj, dict):
        raise ModelError(f"model {name}: weights file {path} holds a {type(obj).__name__}, expected a state dict")
    return obj


def build_model(spec: dict, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Classifier:
    """Instantiate ``spec``'s architecture, load ``weights`` strictly, wrap, move to ``device``, eval mode."""
    arch = ARCHITECTURES[spec["arch"]]
    net = arch["build"](spec)
    if weights is not None:
        path = Path(weights)
        sd = arch["adapt"](_read_weights(path, spec["name"]))
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            expected = set(net.state_dict())
            missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
            detail = f"missing keys {missing[:4]}, unexpected keys {unexpected[:4]}" if (missing or unexpected) else str(e).splitlines()[-1].strip()[:300]
            raise ModelError(
                f"model {spec['name']}: weights file {path} does not fit architecture {spec['arch']}"
                f"{' depth ' + str(spec['depth']) if 'depth' in spec else ''} with {spec['num_classes']} classes "
                f"({detail}); check models.{spec['name']}.arch / depth / dataset, or the weights file"
            ) from e
    model = Classifier(net, spec["mean"], spec["std"], spec["name"], spec["num_classes"])
    model = model.to(device).eval()
    # ours: oneDNN's NHWC convolutions run our models 1.0-1.5x faster on the CPU (bench/models)
    return set_channels_last(model, torch.device(device).type == "cpu")


def set_channels_last(model: Classifier, on: bool = True) -> Classifier:
    """Run ``model``'s network channels-last (NHWC) or not; inputs keep any layout. Returns ``model``."""
    model.net.to(memory_format=torch.channels_last if on else torch.contiguous_format)
    model.channels_last = bool(on)
    return model


def weights_source(spec: dict, mirror: Path | None) -> dict:
    """Where a model's weights come from: {'kind': 'local'|'mirror'|'download', 'path'|'url', 'sha256'}."""
    if spec.get("weights"):
        return {"kind": "local", "path": str(Path(spec["weights"]).expanduser().resolve()), "sha256": spec.get("sha256")}
    if mirror is not None:
        candidates = {spec["file"]: spec.get("sha256"), **spec.get("mirror_files", {})}
        for fname, digest in candidates.items():
            if (mirror / "weights" / fname).is_file():
                return {"kind": "mirror", "path": str(mirror / "weights" / fname), "sha256": digest}
        raise ModelError(
            f"model {spec['name']}: none of {sorted(candidates)} is in the mirror's weights folder {mirror / 'weights'}; "
            f"add one, set models.{spec['name']}.weights to a local file, or unset data_mirror / PIXELROBUST_MIRROR to download"
        )
    return {"kind": "download", "url": spec["url"], "file": spec["file"], "sha256": spec.get("sha256")}


def prepare_weights(spec: dict, source: str | os.PathLike, dest: str | os.PathLike, sha256: str | None) -> Path:
    """Check a weights file's checksum and that it loads into the architecture; copy it to ``dest``."""
    from .io import copy_verified

    fix = f"replace the file or fix models.{spec['name']} (weights / sha256)"
    out = copy_verified(source, dest, sha256, what=f"weights of model {spec['name']} ({source})", fix=fix)
    try:
        build_model(spec, out)
    except Exception:
        Path(out).unlink(missing_ok=True)
        raise
    return out
