"""Pretrained classifiers, each wrapped to take images in [0, 1] and normalise them itself.

A model is a *spec* (a dict): its architecture, dataset, normalisation and where its weights come
from. Built-in specs are in :data:`MODELS`; the config's ``models:`` section picks them by name and
may override any field or define new models. ``arch`` is one of the built-in architectures in
:data:`ARCHITECTURES` or a name from another source (:data:`ARCH_KINDS`, config/README.md "Your own model"):

* ``torchvision:<name>``: any torchvision classification model; for ImageNet its weights enum gives the
  download URL and checksum prefix, the normalisation and the input size / resize;
* ``timm:<name>``: any timm model (optional package timm), weights from a local checkpoint;
* ``robustbench:<Name>``: a RobustBench model-zoo entry, read from ``<model_dir>/<dataset>/<threat_model>/<Name>.pt``;
  the network normalises inside, so the wrapper's mean/std are the identity;
* ``python:<package.module>:<function>``: anything else, a function returning an ``nn.Module``.

What a model needs that can be found is found, not configured: the Grad-CAM++ layer (cam.target_layer,
by tracing), the number of classes (one forward pass, checked against the dataset), the input size.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .data import dataset_info
from .data import num_classes as dataset_num_classes
from .errors import ConfigError, ModelError
from .io import copy_verified

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
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs. ``shortcut`` 'A' (zero-pad, akamaster) or 'B' (1×1 conv, chenyaofo)."""

    def __init__(self, depth: int, num_classes: int, shortcut: str = "A"):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ConfigError(
                f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}"
            )
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
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in sd.items()}


def _adapt_akamaster(sd: dict) -> dict:
    sd = _strip_prefix(sd.get("state_dict", sd))
    return {
        ("fc." + k[len("linear.") :]) if k.startswith("linear.") else k: v for k, v in sd.items()
    }


def _adapt_plain(sd: dict) -> dict:
    return _strip_prefix(sd.get("state_dict", sd))


def _build_mobilenet_v2(spec: dict) -> nn.Module:
    # lazy: torchvision takes about 1 s to import; models is imported by the workflow's main process
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

CIFAR10_MEAN_STD = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}  # akamaster uses ImageNet's
IMAGENET_MEAN_STD = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
_EHANW = "https://github.com/EhanW/advrob-cifar10/raw/4f92f1357a8a19cc687f856410cfa558dc94fd12/pretrained/"

MODELS: dict[str, dict] = {
    "resnet20_cifar10": {
        "arch": "cifar_resnet_a",
        "depth": 20,
        "dataset": "cifar10",
        **CIFAR10_MEAN_STD,
        "url": _AKAMASTER + "resnet20-12fca82f.th",
        "file": "resnet20-12fca82f.th",
        "sha256": "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
    },
    "resnet56_cifar10": {
        "arch": "cifar_resnet_a",
        "depth": 56,
        "dataset": "cifar10",
        **CIFAR10_MEAN_STD,
        "url": _AKAMASTER + "resnet56-4bfd9763.th",
        "file": "resnet56-4bfd9763.th",
        "sha256": "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
    },
    "resnet56_cifar100": {
        "arch": "cifar_resnet_b",
        "depth": 56,
        "dataset": "cifar100",
        "mean": [0.507, 0.4865, 0.4409],
        "std": [0.2673, 0.2564, 0.2761],
        "url": "https://github.com/chenyaofo/pytorch-cifar-models/releases/download/resnet/cifar100_resnet56-f2eff4c8.pt",
        "file": "cifar100_resnet56-f2eff4c8.pt",
        "sha256": "f2eff4c8461ca1e0d39af83a65f7243bf7d29ec421efee3064bcee93a3caaa73",
    },
    "mobilenet_v2_imagenet": {
        "arch": "mobilenet_v2",
        "dataset": "imagenet",
        **IMAGENET_MEAN_STD,
        # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1; torchvision publishes only the first 8
        # hex digits of its sha256 (in the file name), so only that prefix is checked.
        "url": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        "file": "mobilenet_v2-b0353104.pth",
        "sha256": "b0353104",
        # Also accepted in a mirror: torchvision's quantized MobileNetV2 dequantized to float
        # (what ../shared/data holds; 84.2 % on the 500 sample images, see docs/data.md).
        "mirror_files": {
            "mobilenet_v2_imagenet_dequantized_qnnpack.pth": "fa1cb45c6b1f62a99ccd61bc8e23397adbef344b07897098251eb41c0ed24c5f",
        },
    },
    # A matched pair from github EhanW/advrob-cifar10 (MIT) at commit 4f92f135: the same ResNet-20 trained
    # normally and with PGD adversarial training (mild: ε 8/255 on normalised inputs ≈ 1.8/255 in pixels).
    # Not among the default models; ../shared/data/README.md (robust/) and config/robust_pair.yaml.
    "resnet20_ehanw_standard": {
        "arch": "python:pixelrobust.zoo.ehanw:resnet20",
        "dataset": "cifar10",
        **IMAGENET_MEAN_STD,
        "url": _EHANW + "resnet20.pth",
        "file": "ehanw_resnet20_standard.pth",
        "sha256": "1a11083200835bf42ed0e415589c6c1d1c7e23f38ea186d8efd55bdaa9efccca",
        "mirror_files": {
            "robust/ehanw_resnet20_standard.pth": "1a11083200835bf42ed0e415589c6c1d1c7e23f38ea186d8efd55bdaa9efccca"
        },
    },
    "resnet20_ehanw_pgd": {
        "arch": "python:pixelrobust.zoo.ehanw:resnet20",
        "dataset": "cifar10",
        **IMAGENET_MEAN_STD,
        "url": _EHANW + "resnet20_pgd.pth",
        "file": "ehanw_resnet20_pgd.pth",
        "sha256": "e82e8084fb081b846d669e84b10a58e49aaa8d8739d75f21e28ff5c2ed323ef2",
        "mirror_files": {
            "robust/ehanw_resnet20_pgd.pth": "e82e8084fb081b846d669e84b10a58e49aaa8d8739d75f21e28ff5c2ed323ef2"
        },
    },
}

SPEC_KEYS = (
    "arch",
    "depth",
    "dataset",
    "mean",
    "std",
    "url",
    "file",
    "sha256",
    "weights",
    "mirror_files",
    "num_classes",
    "torchvision_weights",
    "threat_model",
    "model_dir",
    "builder",
    "kwargs",
    "cam_layer",
    "input_size",
)


# ----------------------------------------------------------------------------------------------
# Architectures by name: torchvision, timm, RobustBench, Python entry points
# ----------------------------------------------------------------------------------------------

ARCH_KINDS = ("torchvision", "timm", "robustbench", "python")
TIMM_PIN = "timm==1.0.31"
ROBUSTBENCH_PIN = "robustbench==1.1.1"
ROBUSTBENCH_THREAT_MODELS = ("Linf", "L2", "corruptions")
IDENTITY_MEAN_STD = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def how_to_add(name: str) -> str:
    """The ways to give ``models.<name>.arch``, for error messages."""
    return (
        f"give models.{name}.arch as one of: a built-in architecture ({', '.join(ARCHITECTURES)}; with depth for the CIFAR "
        f"ResNets); torchvision:<model> (any torchvision classifier, e.g. torchvision:resnet50); timm:<model> (needs "
        f"{TIMM_PIN}, weights from a local checkpoint); robustbench:<Name> with threat_model and model_dir "
        f"(<model_dir>/<dataset>/<threat_model>/<Name>.pt); python:<package.module>:<function> returning an nn.Module "
        f"(e.g. python:pixelrobust.zoo.ehanw:resnet20). See config/README.md, 'Your own model'"
    )


def arch_kind(arch: str) -> tuple[str, str]:
    """``('builtin', arch)`` or ``(kind, rest)`` for ``kind:rest``; raises ``KeyError`` for anything else."""
    if arch in ARCHITECTURES:
        return "builtin", arch
    kind, sep, rest = arch.partition(":")
    if sep and kind in ARCH_KINDS and rest:
        return kind, rest
    raise KeyError(arch)


def _close(word: str, names, n: int = 5) -> str:
    near = difflib.get_close_matches(word, list(names), n=n, cutoff=0.6)
    return f"; close: {', '.join(near)}" if near else ""


def torchvision_names() -> list[str]:
    """torchvision's classification models (not detection, segmentation, video or quantized ones)."""
    # lazy: torchvision takes about 1 s to import; models is imported by the workflow's main process
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _resolve_torchvision(name: str, arch: str, spec: dict, given: dict) -> None:
    # lazy: torchvision takes about 1 s to import; models is imported by the workflow's main process
    import torchvision
    import torchvision.models as tvm

    names = torchvision_names()
    if arch not in names:
        raise ConfigError(
            f"models.{name}.arch: torchvision {torchvision.__version__} has no classification model {arch!r}"
            f"{_close(arch, names)}; the {len(names)} it has: {', '.join(names)}"
        )
    enum = tvm.get_model_weights(arch)
    tag = spec.get("torchvision_weights", "DEFAULT")
    try:
        w = enum[tag]
    except KeyError:
        raise ConfigError(
            f"models.{name}.torchvision_weights is {tag!r}; {enum.__name__} has "
            f"{', '.join(['DEFAULT'] + [m.name for m in enum])}"
        ) from None
    if not imagenet_classes(
        spec["dataset"]
    ):  # the enum's weights are ImageNet's: the user brings weights and normalisation
        return
    spec["weights_enum"] = (
        f"{enum.__name__}.{w.name}"  # where mean/std, sizes and (unless given) the url come from
    )
    t = w.transforms()
    spec.setdefault("mean", [float(v) for v in t.mean])
    spec.setdefault("std", [float(v) for v in t.std])
    spec.setdefault("input_size", int(t.crop_size[0]))
    spec.setdefault("resize", int(t.resize_size[0]))
    spec["num_params"] = w.meta.get("num_params")
    if "weights" not in given and "url" not in given:
        spec["url"] = w.url
        spec["file"] = Path(w.url).name
        # torchvision checks the sha256 prefix in the file name (torch.hub's '-<hex>.' convention); so do we
        m = re.search(r"-([a-f0-9]{8,})\.", Path(w.url).name)
        spec["sha256"] = m.group(1) if m else None


def _timm(name: str):
    try:
        # lazy: optional (the timm extra), about 1.3 s to import
        import timm
    except ImportError:
        raise ConfigError(
            f"models.{name}.arch names a timm model, but timm is not installed; install the optional "
            f"extra: pip install 'pixelrobust[timm]' ({TIMM_PIN})"
        ) from None
    return timm


def _resolve_timm(name: str, arch: str, spec: dict, given: dict) -> None:
    timm = _timm(name)
    if not timm.is_model(arch):
        near = timm.list_models(f"*{arch.split('.')[0]}*")[:10]
        raise ConfigError(
            f"models.{name}.arch: timm {timm.__version__} has no model {arch!r}"
            f"{'; close: ' + ', '.join(near) if near else ''}; list them with "
            f'python -c "import timm; print(timm.list_models())"'
        )
    if "weights" not in spec and "url" not in spec:
        raise ConfigError(
            f"models.{name}: a timm model needs its checkpoint as a local file: set models.{name}.weights "
            f"(or url + sha256); nothing is fetched from a hub"
        )
    cfg = timm.models.get_pretrained_cfg(arch, allow_unregistered=True)
    if imagenet_classes(spec["dataset"]) and cfg is not None:
        spec.setdefault("mean", [float(v) for v in cfg.mean])
        spec.setdefault("std", [float(v) for v in cfg.std])
        spec.setdefault("input_size", int(cfg.input_size[-1]))
        spec.setdefault("resize", int(cfg.input_size[-1] / (cfg.crop_pct or 1.0)))


_RB_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet"}


def robustbench_path(spec: dict) -> Path:
    """Where RobustBench keeps an entry: ``<model_dir>/<dataset>/<threat_model>/<Name>.pt``."""
    return (
        Path(spec["model_dir"]).expanduser()
        / _RB_DATASETS[spec["dataset"]]
        / spec["threat_model"]
        / f"{arch_kind(spec['arch'])[1]}.pt"
    )


def _robustbench_builder(spec: dict):
    """RobustBench's own architecture for an entry, or None when robustbench cannot be imported."""
    try:
        # lazy: optional (the robustbench extra), about 1 s to import
        import robustbench  # noqa: F401  (the package as a whole: its model_zoo alone may import half-way)
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except (
        Exception
    ):  # not installed, or its own dependencies missing (pkg_resources, geotorch, ...)
        return None
    entries = model_dicts[BenchmarkDataset(_RB_DATASETS[spec["dataset"]])][
        ThreatModel(spec["threat_model"])
    ]
    rb_name = arch_kind(spec["arch"])[1]
    if rb_name not in entries:
        raise ConfigError(
            f"models.{spec['name']}.arch: RobustBench has no {spec['dataset']}/{spec['threat_model']} entry "
            f"{rb_name!r}{_close(rb_name, entries)}"
        )
    return lambda s: entries[rb_name]["model"]()


def _resolve_robustbench(name: str, arch: str, spec: dict, given: dict) -> None:
    spec.setdefault("threat_model", "Linf")
    if spec["threat_model"] not in ROBUSTBENCH_THREAT_MODELS:
        raise ConfigError(
            f"models.{name}.threat_model is {spec['threat_model']!r}; RobustBench's are "
            f"{', '.join(ROBUSTBENCH_THREAT_MODELS)}"
        )
    if spec["dataset"] not in _RB_DATASETS:
        raise ConfigError(
            f"models.{name}.dataset is {spec['dataset']!r}; RobustBench's model zoo covers {', '.join(_RB_DATASETS)}"
        )
    for key in (
        "mean",
        "std",
    ):  # RobustBench networks normalise inside: ours must not normalise again
        if key in given and [float(v) for v in given[key]] != IDENTITY_MEAN_STD[key]:
            raise ConfigError(
                f"models.{name}.{key} is {given[key]}, but RobustBench models take images in [0, 1] and "
                f"normalise them inside; a {key} here would normalise twice: remove models.{name}.{key}"
            )
    spec.update(IDENTITY_MEAN_STD)
    if "weights" not in spec:
        if "model_dir" not in spec:
            raise ConfigError(
                f"models.{name}: a RobustBench model needs models.{name}.model_dir, the folder RobustBench keeps "
                f"its models in (<model_dir>/<dataset>/<threat_model>/<Name>.pt), or models.{name}.weights"
            )
        path = robustbench_path(spec)
        if not path.is_file():
            raise ConfigError(
                f"models.{name}: {path} does not exist; put the checkpoint there (RobustBench's own layout: with robustbench "
                f"installed, robustbench.utils.load_model({arch!r}, model_dir={str(spec['model_dir'])!r}, dataset="
                f"{_RB_DATASETS[spec['dataset']]!r}, threat_model={spec['threat_model']!r}) downloads it there), or fix "
                f"models.{name}.model_dir / threat_model"
            )
        spec["weights"] = str(path)
    if "builder" not in spec and _robustbench_builder(spec) is None:
        raise ConfigError(
            f"models.{name}: building RobustBench's architecture for {arch!r} needs the package robustbench "
            f"({ROBUSTBENCH_PIN}, pip install 'pixelrobust[robustbench]'), which cannot be imported here; or give "
            f"models.{name}.builder: <package.module>:<function> returning the same network (with its normalisation inside)"
        )
    if "builder" in spec:
        _entry_point(name, spec["builder"], "builder")


def _entry_point(name: str, target: str, key: str = "arch") -> Callable:
    module, sep, func = target.rpartition(":")
    if not sep or not module or not func:
        raise ConfigError(f"models.{name}.{key}: {target!r} is not <package.module>:<function>")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"models.{name}.{key}: cannot import {module!r} ({e}); make it importable (install it, or put "
            f"its folder on PYTHONPATH) or fix the name"
        ) from None
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise ConfigError(f"models.{name}.{key}: module {module!r} has no function {func!r}")
    return fn


def _call_entry_point(fn: Callable, spec: dict, key: str) -> nn.Module:
    kwargs = dict(spec.get("kwargs") or {})
    try:
        if "num_classes" in inspect.signature(fn).parameters and "num_classes" not in kwargs:
            kwargs["num_classes"] = spec["num_classes"]
    except (TypeError, ValueError):
        pass
    net = fn(**kwargs)
    if not isinstance(net, nn.Module):
        raise ModelError(
            f"model {spec['name']}: {spec[key]} returned a {type(net).__name__}, not a torch nn.Module"
        )
    return net


def _resolve_python(name: str, target: str, spec: dict, given: dict) -> None:
    _entry_point(name, target)


_RESOLVE = {
    "torchvision": _resolve_torchvision,
    "timm": _resolve_timm,
    "robustbench": _resolve_robustbench,
    "python": _resolve_python,
}


def imagenet_classes(dataset: str) -> bool:
    """Whether a dataset's labels are ImageNet's 1000 class indices: ``imagenet`` itself, or a user dataset
    with ``class_index: imagenet`` (e.g. wnid folders). Models on it get what torchvision's / timm's ImageNet
    weights come with: their normalisation, input size and resize, googlenet's / inception_v3's
    ``transform_input``."""
    try:
        return bool(dataset_info(dataset)["imagenet_index"])
    except Exception:  # an unknown dataset: the error that names it comes from the class count
        return dataset == "imagenet"


def _build_by_name(spec: dict) -> nn.Module:
    kind, rest = arch_kind(spec["arch"])
    if kind == "torchvision":
        # lazy: torchvision takes about 1 s to import; models is imported by the workflow's main process
        import torchvision.models as tvm

        extra = {}
        if rest in ("googlenet", "inception_v3") and imagenet_classes(spec["dataset"]):
            # torchvision's builders switch these on with ImageNet weights (weights=None leaves them off)
            extra = {"transform_input": True, "aux_logits": True, "init_weights": False}
        return tvm.get_model(rest, weights=None, num_classes=spec["num_classes"], **extra)
    if kind == "timm":
        return _timm(spec["name"]).create_model(
            rest, pretrained=False, num_classes=spec["num_classes"]
        )
    if kind == "robustbench":
        if spec.get("builder"):
            return _call_entry_point(
                _entry_point(spec["name"], spec["builder"], "builder"), spec, "builder"
            )
        return _robustbench_builder(spec)(spec)
    return _call_entry_point(_entry_point(spec["name"], rest), spec, "arch")


def _fit_keys(sd: dict, net: nn.Module) -> dict:
    """A checkpoint's state dict under the names ``net`` uses: unwrapped from {'state_dict': ...}, {'model': ...} or {'net': ...},
    'module.' (DataParallel) and 'model.' (RobustBench's wrappers) prefixes removed or added as ``net`` needs."""
    for key in ("state_dict", "model", "net", "state_dict_ema"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    want = set(net.state_dict())
    plain = _strip_prefix(_strip_prefix(sd, "module."), "model.")
    for candidate in (
        sd,
        _strip_prefix(sd, "module."),
        plain,
        {"model." + k: v for k, v in plain.items()},
    ):
        if set(candidate) == want:
            return candidate
    return _strip_prefix(sd, "module.")  # the strict load names what does not fit


def resolve_spec(name: str, overrides: dict | None) -> dict:
    """The full spec of a model: the built-in entry (if any) updated with the config's fields, and what the
    architecture's source tells (torchvision's / timm's normalisation and input size, RobustBench's file)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if name not in MODELS and "arch" not in overrides:
        raise ConfigError(
            f"model {name!r} is not built in (built-in: {', '.join(MODELS)}); to add it, {how_to_add(name)}; "
            f"and give dataset, and mean, std and weights (or url + sha256) where the source does not"
        )
    spec = {"mirror_files": {}, **MODELS.get(name, {}), **overrides, "name": name}
    try:
        kind, rest = arch_kind(spec["arch"])
    except KeyError:
        hint = (
            f" (did you mean torchvision:{spec['arch']}?)"
            if spec["arch"] in torchvision_names()
            else ""
        )
        raise ConfigError(
            f"models.{name}.arch: unknown architecture {spec['arch']!r}{hint}; known: {', '.join(ARCHITECTURES)}, "
            f"or by name: {', '.join(k + ':...' for k in ARCH_KINDS)}; {how_to_add(name)}"
        ) from None
    if "dataset" not in spec:
        raise ConfigError(f"models.{name}.dataset is required for a model that is not built in")
    if kind != "builtin":
        _RESOLVE[kind](name, rest, spec, overrides)
    for key in ("mean", "std"):
        if key not in spec:
            raise ConfigError(
                f"models.{name}.{key} is required for a model that is not built in (found only for "
                f"torchvision and timm models on ImageNet, and RobustBench models)"
            )
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
            raise ConfigError(
                f"models.{name}.{key} has {len(values)} values; give one per RGB channel, e.g. [0.485, 0.456, 0.406]"
            )
        if any(v > 1.0 for v in values):
            scaled = [round(v / 255.0, 4) for v in values]
            raise ConfigError(
                f"models.{name}.{key} is {values}, which looks like the 0-255 scale; models take images in [0, 1] and "
                f"normalise them themselves, so give {key} on the [0, 1] scale (divided by 255: {scaled})"
            )
        if any(v < low for v in values) or (key == "std" and any(v <= 0 for v in values)):
            raise ConfigError(
                f"models.{name}.{key} is {values}; {key} must be in {'(0, 1]' if key == 'std' else '[0, 1]'} per channel"
            )
    builtin = MODELS.get(name)
    if (
        builtin
        and "dataset" in overrides
        and overrides["dataset"] != builtin["dataset"]
        and not ({"weights", "url"} & set(overrides))
    ):
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
        # the Grad-CAM++ layer's dotted name in ``net`` (models.<name>.cam_layer); None: found by cam.target_layer
        self.cam_layer: str | None = None
        self.input_size: int | tuple[int, int] | None = (
            None  # side (or (H, W)) it is run at (models.probe_side), for tracing
        )

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
        raise ModelError(
            f"model {name}: weights file {path} does not exist (config key models.{name}.weights or url)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, pickle with code, ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelError(
            f"model {name}: cannot read weights file {path} ({type(e).__name__}: {first}); "
            f"it is corrupt, truncated or not a PyTorch state dict; delete it and rerun, or fix models.{name}.weights"
        ) from e
    if not isinstance(obj, dict):
        raise ModelError(
            f"model {name}: weights file {path} holds a {type(obj).__name__}, expected a state dict"
        )
    return obj


def build_model(
    spec: dict, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> Classifier:
    """Instantiate ``spec``'s architecture, load ``weights`` strictly, wrap, move to ``device``, eval mode."""
    kind, _ = arch_kind(spec["arch"])
    net = ARCHITECTURES[spec["arch"]]["build"](spec) if kind == "builtin" else _build_by_name(spec)
    if weights is not None:
        path = Path(weights)
        raw = _read_weights(path, spec["name"])
        sd = ARCHITECTURES[spec["arch"]]["adapt"](raw) if kind == "builtin" else _fit_keys(raw, net)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            _refuse_class_count(spec, path, sd, net)
            expected = set(net.state_dict())
            missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
            detail = (
                f"missing keys {missing[:4]}, unexpected keys {unexpected[:4]}"
                if (missing or unexpected)
                else str(e).splitlines()[-1].strip()[:300]
            )
            raise ModelError(
                f"model {spec['name']}: weights file {path} does not fit architecture {spec['arch']}"
                f"{' depth ' + str(spec['depth']) if 'depth' in spec else ''} with {spec['num_classes']} classes "
                f"({detail}); check models.{spec['name']}.arch / depth / dataset, or the weights file"
            ) from e
    if kind != "builtin":
        check_outputs(net, spec)
    model = Classifier(net, spec["mean"], spec["std"], spec["name"], spec["num_classes"])
    model.cam_layer = spec.get("cam_layer")
    model.input_size = probe_side(spec)
    model = model.to(device).eval()
    # ours: oneDNN's NHWC convolutions run our models 1.0-1.5x faster on the CPU (bench/models)
    return set_channels_last(model, torch.device(device).type == "cpu")


def _refuse_class_count(spec: dict, path: Path, sd: dict, net: nn.Module) -> None:
    """A checkpoint whose classifier has another number of outputs than the dataset has classes: say so, naming
    both (the strict load's size mismatch otherwise)."""
    n = spec["num_classes"]
    want = net.state_dict()
    for key, t in reversed(list(sd.items())):  # the classifier is last
        if (
            key in want
            and torch.is_tensor(t)
            and t.ndim >= 1
            and want[key].ndim == t.ndim
            and want[key].shape[0] == n
            and t.shape[0] != n
            and tuple(want[key].shape[1:]) == tuple(t.shape[1:])
        ):
            try:
                n_data = dataset_num_classes(spec["dataset"])
            except Exception:
                n_data = None
            if n_data == n:
                what, fix = (
                    f"its dataset {spec['dataset']} has {n} classes",
                    (
                        f"use weights trained on {spec['dataset']}'s classes, or fix models.{spec['name']}.dataset (or "
                        f"datasets.{spec['dataset']}: its classes in the model's output order)"
                    ),
                )
            else:
                what, fix = (
                    f"the model is built for {n} classes (models.{spec['name']}.num_classes)",
                    (f"remove models.{spec['name']}.num_classes or fix it"),
                )
            raise ModelError(
                f"model {spec['name']}: weights file {path} does not fit: it has {t.shape[0]} outputs ({key} is "
                f"{'x'.join(map(str, t.shape))}), but {what}; label indices are the model's output indices: {fix}"
            )


def probe_side(spec: dict) -> int | tuple[int, int]:
    """The image side a model is run at: its ``input_size`` when found or given, else its dataset's image size
    (CIFAR 32; a user dataset's as registered, (height, width) when not square; ImageNet and unknown 224)."""
    if spec.get("input_size"):
        size = spec["input_size"]
        return int(size) if not isinstance(size, (list, tuple)) else _side_or_hw(size)
    try:
        size = dataset_info(spec["dataset"])["size"]
    except Exception:
        size = None
    return _side_or_hw(size) if size else 224


def _side_or_hw(size) -> int | tuple[int, int]:
    h, w = (int(v) for v in size)
    return h if h == w else (h, w)


def _probe_hw(spec: dict) -> tuple[int, int]:
    side = probe_side(spec)
    return (side, side) if isinstance(side, int) else side


def check_outputs(net: nn.Module, spec: dict) -> None:
    """One forward pass of a blank image: the network runs at its input size and gives one logit per class of
    the dataset (a model trained on other classes is refused here, with both counts)."""
    h, w = _probe_hw(spec)
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, 3, h, w))
    except Exception as e:
        raise ModelError(
            f"model {spec['name']} ({spec['arch']}) fails on a 1x3x{h}x{w} input ({type(e).__name__}: "
            f"{str(e)[:200]}); set models.{spec['name']}.input_size to the side it takes"
        ) from e
    if isinstance(out, (tuple, list)) or not torch.is_tensor(out) or out.ndim != 2:
        raise ModelError(
            f"model {spec['name']} ({spec['arch']}) must return logits shaped (N, classes); it returns "
            f"{type(out).__name__}{tuple(out.shape) if torch.is_tensor(out) else ''}"
        )
    if out.shape[1] != spec["num_classes"]:
        raise ModelError(
            f"model {spec['name']} ({spec['arch']}) outputs {out.shape[1]} classes, but its dataset "
            f"{spec['dataset']} has {spec['num_classes']}; use weights trained on {spec['dataset']} or fix "
            f"models.{spec['name']}.dataset"
        )


def set_channels_last(model: Classifier, on: bool = True) -> Classifier:
    """Run ``model``'s network channels-last (NHWC) or not; inputs keep any layout. Returns ``model``."""
    model.net.to(memory_format=torch.channels_last if on else torch.contiguous_format)
    model.channels_last = bool(on)
    return model


def low_precision_scorer(model: Classifier, tolerance: float = 1e-3) -> tuple[nn.Module, str]:
    """The model a low-precision pass runs (ours): a copy of ``model`` with every batch norm folded into the
    convolution (or linear layer) before it (``torch.fx``'s ``fuse``, eval mode), and a line for the log.

    Only for passes whose results fp32 re-checks: the bf16 DE's fitness (fp32 of the original ``model`` decides
    success and gives every reported probability; the band is measured against it), so the copy changes the
    search path, never an answer. Folding removes the batch-norm pass: the bf16 ResNet-20 forward ran 1.39x faster
    here (1 thread, batch 256), MobileNetV2 1.6x (docs/p1.md, "The bf16 DE"). The copy is kept only if its fp32
    logits equal ``model``'s within ``tolerance`` × (1 + the largest logit) on a random probe batch; a model that
    is not a :class:`Classifier`, does not trace, has no batch norm, cannot take the probe or fails the check is
    returned as it is, and the line says why. ``model`` itself is never changed, and hooks registered on it are
    not carried over to the copy."""
    with warnings.catch_warnings():  # its import touches torch.jit's deprecated script_method
        warnings.simplefilter("ignore", DeprecationWarning)
        # lazy: only low-precision searches need it
        from torch.fx.experimental.optimization import fuse

    if not isinstance(model, Classifier):
        return (
            model,
            f"batch norm not folded ({type(model).__name__} is not a pixelrobust Classifier)",
        )
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.net.modules())
    if not n_bn:
        return model, "no batch norm to fold"
    if model.training:
        return model, "batch norm not folded (the model is in training mode)"
    try:
        folded = copy.deepcopy(model)
        for (
            m
        ) in folded.modules():  # a spy or Grad-CAM hook on the original must not fire on the copy
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
            m._backward_hooks.clear()
        folded.net = fuse(folded.net, inplace=True)
    # torch.fx cannot trace data-dependent control flow, some custom modules, ...
    except Exception as e:
        return model, f"batch norm not folded (torch.fx: {type(e).__name__}: {str(e)[:120]})"
    folded_n = n_bn - sum(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.net.modules()
    )
    if not folded_n:
        return model, f"batch norm not folded (none of its {n_bn} layers follows a convolution)"
    set_channels_last(folded, model.channels_last)
    side = model.input_size or 32
    h, w = (side, side) if isinstance(side, int) else side
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, model.mean.shape[1], h, w, generator=gen).to(model.mean.device)
    try:
        with torch.inference_mode():
            ref, got = model(x).float(), folded(x).float()
    except Exception as e:  # a probe the model cannot take (another input size, ...)
        return model, f"batch norm not folded (probe batch: {type(e).__name__}: {str(e)[:120]})"
    diff, scale = (got - ref).abs().max().item(), 1.0 + ref.abs().max().item()
    if not diff <= tolerance * scale:  # NaN included
        return (
            model,
            f"batch norm not folded (the folded copy's fp32 logits differ by {diff:.3g} on a probe batch)",
        )
    return (
        folded,
        f"batch norm folded ({folded_n} of {n_bn} layers; fp32 probe difference {diff:.2g})",
    )


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients (a model that is attacked or explained, not trained). Returns
    ``model``."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def weights_source(spec: dict, mirror: Path | None) -> dict:
    """Where a model's weights come from: {'kind': 'local'|'mirror'|'download', 'path'|'url', 'sha256'}."""
    if spec.get("weights"):
        return {
            "kind": "local",
            "path": str(Path(spec["weights"]).expanduser().resolve()),
            "sha256": spec.get("sha256"),
        }
    if mirror is not None:
        candidates = {spec["file"]: spec.get("sha256"), **spec.get("mirror_files", {})}
        for fname, digest in candidates.items():
            # in weights/, or (a path with a folder, e.g. robust/...) relative to the mirror itself
            for path in (mirror / "weights" / fname, *([mirror / fname] if "/" in fname else [])):
                if path.is_file():
                    return {"kind": "mirror", "path": str(path), "sha256": digest}
        raise ModelError(
            f"model {spec['name']}: none of {sorted(candidates)} is in the mirror's weights folder {mirror / 'weights'}; "
            f"add one, set models.{spec['name']}.weights to a local file, or unset data_mirror / PIXELROBUST_MIRROR to download"
        )
    return {
        "kind": "download",
        "url": spec["url"],
        "file": spec["file"],
        "sha256": spec.get("sha256"),
    }


def get_weights(*, source: str | os.PathLike, out: dict, spec: dict, sha256: str | None) -> Path:
    """Rule ``get_weights``: check a weights file's checksum (``sha256``, None: none to check) and that it
    loads into ``spec``'s architecture; copy ``source`` to ``out["weights"]`` (returned)."""
    fix = f"replace the file or fix models.{spec['name']} (weights / sha256)"
    dest = copy_verified(
        source, out["weights"], sha256, what=f"weights of model {spec['name']} ({source})", fix=fix
    )
    try:
        build_model(spec, dest)
    except Exception:
        Path(dest).unlink(missing_ok=True)
        raise
    return dest
