"""Image folders built from the mirror for the user-dataset tests, and the tiny config with one of them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from helpers import REPO

# The mirror's CIFAR-10 pickle read with pickle alone (cifar_rows), and its test rows written as 32x32 PNGs in
# root/<class name>/<row>.png (png_folder): the functions tools/demo_checkpoints.py writes config/own_models.yaml's
# ImageFolder with, so the folder these tests check is the one that demo runs on.
_tool = importlib.util.spec_from_file_location(
    "demo_checkpoints", REPO / "tools" / "demo_checkpoints.py"
)
_demo = importlib.util.module_from_spec(_tool)
_tool.loader.exec_module(_demo)
cifar_rows = _demo.cifar_rows
png_folder = _demo.write_cifar_folder


def row_of(image_id: str) -> int:
    return int(image_id.rsplit("/", 1)[1])


# ----------------------------------------------------------------------------------------------
# Through the config
# ----------------------------------------------------------------------------------------------


def tiny_with(tmp_path: Path, mirror: Path) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    root = png_folder(mirror, tmp_path / "pngs", range(40))
    cfg["datasets"]["mycifar"] = {"layout": "imagefolder", "folder": str(root)}
    cfg["models"]["resnet20_mine"] = {
        "arch": "cifar_resnet_a",
        "depth": 20,
        "dataset": "mycifar",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "weights": str(mirror / "weights" / "resnet20-12fca82f.th"),
    }
    for section in ("onepixel", "gradients", "masked_pgd", "prm", "defense_eval"):
        cfg[section]["models"] = [*cfg[section]["models"], "resnet20_mine"]
    cfg["synthesis"]["models"] = [*cfg["synthesis"]["models"], "resnet20_mine"]
    return cfg


def merge(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base
