"""Datasets: where they come from, how they are checked, and how they are loaded.

Three datasets are built in (``cifar10``, ``cifar100``, ``imagenet``). Each can come from

* the official download (CIFAR tarballs with the md5 published on the CIFAR page; the ImageNet
  sample images from a pinned commit of github EliSchwartz/imagenet-sample-images, every file
  checked against ``checksums/imagenet_sample_images.sha256``; the Keras class-index file), or
* a local mirror folder laid out like the official files (config ``data_mirror`` or the environment
  variable ``PIXELROBUST_MIRROR``), checked for layout, shapes and counts instead of the tarball
  checksum, because a mirror may hold a subset of the rows, or
* for ImageNet, a user's own folder of images (e.g. ILSVRC2012 validation) plus a label file.

Any other name under the config's ``datasets:`` is a user dataset (``USER_KEYS``): an ImageFolder
(``layout: imagefolder``, one sub-folder per class, ``root/<class>/<image>``) or a labelled folder
(``layout: labels``, images plus a ``<file> <label>`` file), at its native size or resized and
centre-cropped, with a test split only. How class names become label indices: ``classes`` (an
explicit list), ``class_index`` (``imagenet``: the ImageNet index, so wnid folders get the
indices of ImageNet models; or a JSON file), else the sorted folder names as torchvision's
``ImageFolder`` sorts them (docs/decisions.md, "Datasets").

``prepare_dataset`` turns any of these into ``resources/data/<name>/`` with a ``manifest.json``
written last; ``load_split`` reads that folder and returns float images in [0, 1], integer labels
and a stable image id per image.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import DataError
from .io import atomic_path, copy_verified, file_digest, verify_checksum
from .schema import with_defaults

MANIFEST = "manifest.json"

# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

CIFAR = {
    "cifar10": {
        "archive": "cifar-10-python.tar.gz",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "splits": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "meta": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
        "num_classes": 10,
        "official_counts": {"train": 50000, "test": 10000},
    },
    "cifar100": {
        "archive": "cifar-100-python.tar.gz",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "splits": {"train": ["train"], "test": ["test"]},
        "meta": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
        "num_classes": 100,
        "official_counts": {"train": 50000, "test": 10000},
    },
}

IMAGENET_SAMPLE_COMMIT = "bc69043e2862758a1906c6a24a792bb28c6bb2ff"
IMAGENET = {
    "sample_archive": f"imagenet-sample-images-{IMAGENET_SAMPLE_COMMIT[:8]}.zip",
    "sample_url": (
        "https://github.com/EliSchwartz/imagenet-sample-images/archive/"
        f"{IMAGENET_SAMPLE_COMMIT}.zip"
    ),
    "sample_folder": "imagenet-sample-images",
    "class_index": "imagenet_class_index.json",
    "class_index_url": "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json",
    "class_index_sha256": "ecae206bed9024d38507c0c6a3f8c4dc079f465ad34e44c3ffd0ea5ddf6cfa50",
    "num_classes": 1000,
    "image_suffixes": (".jpeg", ".jpg", ".png"),
}

DATASETS = ("cifar10", "cifar100", "imagenet")

# User datasets (any other name under datasets:): their keys, and the image files accepted (the
# suffixes torchvision's ImageFolder accepts; other files in the folders are ignored and counted).
USER_KEYS = (
    "layout",
    "folder",
    "labels",
    "classes",
    "class_index",
    "num_classes",
    "resize",
    "crop",
)
LAYOUTS = ("imagefolder", "labels")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Environment variable that carries what models need to know of the user datasets (class count,
# whether labels are ImageNet's indices, image size) from the workflow (which registers them when it
# reads the config) into its script jobs, as PYTHONPATH carries src/.
CLASSES_ENV = "PIXELROBUST_DATASET_CLASSES"
_REGISTERED: dict[str, dict] = {}


def is_builtin(name: str) -> bool:
    return name in DATASETS


def num_classes(name: str, cfg: dict | None = None) -> int:
    """Classes of a dataset: built in, from ``cfg`` (its ``datasets.<name>`` entry), or registered."""
    if name in CIFAR:
        return CIFAR[name]["num_classes"]
    if name == "imagenet":
        return IMAGENET["num_classes"]
    if cfg is not None:
        return user_num_classes(name, cfg)
    return int(dataset_info(name)["num_classes"])


def dataset_info(name: str) -> dict:
    """What a model needs to know of a dataset: ``num_classes``; ``imagenet_index`` (labels are ImageNet's
    1000 class indices, so ImageNet models and their preprocessing apply); ``size`` ((height, width) of the
    images, None when not known before preparation). User datasets: as registered by register_datasets."""
    if name in CIFAR:
        return {
            "num_classes": CIFAR[name]["num_classes"],
            "imagenet_index": False,
            "size": (32, 32),
        }
    if name == "imagenet":
        return {"num_classes": IMAGENET["num_classes"], "imagenet_index": True, "size": None}
    info = _REGISTERED.get(name)
    if info is None:
        info = json.loads(os.environ.get(CLASSES_ENV) or "{}").get(name)
    if isinstance(info, int):  # written by an older register_datasets: the count alone
        info = {"num_classes": info}
    if info is not None:
        size = info.get("size")
        return {
            "num_classes": int(info["num_classes"]),
            "imagenet_index": bool(info.get("imagenet_index")),
            "size": tuple(size) if size else None,
        }
    raise DataError(
        f"dataset {name!r} is neither built in ({', '.join(DATASETS)}) nor under datasets: in the config; add "
        f"datasets.{name} with layout: imagefolder (or labels) and folder: <path> (config/README.md, 'Your own images')"
    )


def register_datasets(datasets: dict) -> dict[str, int]:
    """Check every user dataset under ``datasets`` and record what models need of it (dataset_info; here and,
    through the environment, for script jobs). Returns the class counts."""
    info = {}
    for name, cfg in (datasets or {}).items():
        if name not in DATASETS:
            cfg = check_user_config(name, cfg)
            size = image_size(name, cfg)
            info[name] = {
                "num_classes": num_classes(name, cfg),
                "imagenet_index": cfg["class_index"] == "imagenet",
                "size": list(size) if size else None,
            }
    _REGISTERED.clear()
    _REGISTERED.update(info)
    os.environ[CLASSES_ENV] = json.dumps(info, sort_keys=True)
    return {name: i["num_classes"] for name, i in info.items()}


@functools.lru_cache(maxsize=1)
def imagenet_sample_checksums() -> dict[str, str]:
    """sha256 of every file of the pinned ImageNet sample commit, by file name."""
    text = (
        importlib_resources.files("pixelrobust") / "checksums" / "imagenet_sample_images.sha256"
    ).read_text()
    out = {}
    for line in text.splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.strip()] = digest
    return out


def downloads(name: str, cfg: dict) -> dict[str, dict]:
    """Files the official route downloads for a dataset: {file name: {url, checksum, algorithm}}."""
    if name in CIFAR:
        spec = CIFAR[name]
        return {spec["archive"]: {"url": spec["url"], "checksum": spec["md5"], "algorithm": "md5"}}
    class_index_file = {
        IMAGENET["class_index"]: {
            "url": IMAGENET["class_index_url"],
            "checksum": IMAGENET["class_index_sha256"],
            "algorithm": "sha256",
        }
    }
    if (
        name not in DATASETS
    ):  # a user dataset downloads only the ImageNet class index, if it uses it
        return class_index_file if cfg.get("class_index") == "imagenet" else {}
    files = {
        IMAGENET["class_index"]: {
            "url": IMAGENET["class_index_url"],
            "checksum": IMAGENET["class_index_sha256"],
            "algorithm": "sha256",
        }
    }
    if imagenet_config(cfg)["source"] == "sample":
        # GitHub builds the zip on the fly, so its bytes are not stable: every image inside is
        # checked against the per-file sha256 list instead.
        files[IMAGENET["sample_archive"]] = {
            "url": IMAGENET["sample_url"],
            "checksum": None,
            "algorithm": "sha256",
        }
    return files


# ----------------------------------------------------------------------------------------------
# Checking files
# ----------------------------------------------------------------------------------------------


def _fix_hint(name: str) -> str:
    return (
        f"fix or replace the file, or point data_mirror / PIXELROBUST_MIRROR at a complete copy "
        f"(config key datasets.{name})"
    )


def _prepared_hint(data_dir: str | os.PathLike) -> str:
    """The fix when a prepared copy under resources/data/ is damaged: delete it, rerun."""
    return (
        f"the prepared copy {data_dir} was damaged or changed after preparation; delete the folder {data_dir} "
        "and rerun (the workflow prepares it again from its source)"
    )


def _unpickle(path: Path, name: str, fix: str | None = None) -> dict:
    fix = fix or _fix_hint(name)
    if not path.is_file():
        raise DataError(f"dataset {name}: missing file {path}; {fix}")
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated or not a pickle at all
        raise DataError(
            f"dataset {name}: cannot read {path} ({type(e).__name__}: {e}); it is corrupt or truncated; {fix}"
        ) from e
    if not isinstance(d, dict):
        raise DataError(
            f"dataset {name}: {path} holds a {type(d).__name__}, expected a dict; {fix}"
        )
    return d


def _check_cifar_batch(
    path: Path, name: str, fix: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one CIFAR pickle and check its keys, shapes, dtype and labels (``fix``: the hint on failure)."""
    spec = CIFAR[name]
    fix = fix or _fix_hint(name)
    d = _unpickle(path, name, fix)
    for key in ("data", spec["label_key"]):
        if key not in d:
            raise DataError(f"dataset {name}: {path} has no key '{key}' (keys: {sorted(d)}); {fix}")
    data = np.asarray(d["data"])
    labels = np.asarray(d[spec["label_key"]], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(
            f"dataset {name}: {path} 'data' has shape {data.shape} dtype {data.dtype}, expected (N, 3072) uint8 "
            f"(32x32 RGB); {fix}"
        )
    if len(labels) != len(data) or len(data) == 0:
        raise DataError(
            f"dataset {name}: {path} has {len(data)} images but {len(labels)} labels; {fix}"
        )
    if labels.min() < 0 or labels.max() >= spec["num_classes"]:
        raise DataError(
            f"dataset {name}: {path} has labels outside [0, {spec['num_classes'] - 1}] "
            f"(min {labels.min()}, max {labels.max()}); {fix}"
        )
    return data, labels


def check_cifar_folder(folder: Path, name: str) -> dict[str, int]:
    """Check a CIFAR folder in the official python layout; return the image count per split."""
    spec = CIFAR[name]
    if not folder.is_dir():
        raise DataError(f"dataset {name}: folder {folder} does not exist; {_fix_hint(name)}")
    meta = _unpickle(folder / spec["meta"], name)
    if len(meta.get(spec["names_key"], [])) != spec["num_classes"]:
        raise DataError(
            f"dataset {name}: {folder / spec['meta']} lacks {spec['num_classes']} '{spec['names_key']}'; {_fix_hint(name)}"
        )
    counts = {}
    for split, files in spec["splits"].items():
        n = 0
        for fname in files:
            data, _ = _check_cifar_batch(folder / fname, name)
            n += len(data)
        if n > spec["official_counts"][split]:
            raise DataError(
                f"dataset {name}: split {split} has {n} images, more than the official {spec['official_counts'][split]}"
            )
        counts[split] = n
    return counts


def _load_class_index(path: Path) -> dict[str, int]:
    """wnid -> class index from the Keras ``imagenet_class_index.json``."""
    try:
        raw = json.loads(Path(path).read_text())
        index = {v[0]: int(k) for k, v in raw.items()}
    except Exception as e:
        raise DataError(
            f"dataset imagenet: cannot read class index {path} ({e}); expected the Keras imagenet_class_index.json"
        ) from e
    if len(index) != IMAGENET["num_classes"]:
        raise DataError(
            f"dataset imagenet: class index {path} has {len(index)} classes, expected 1000"
        )
    return index


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGENET["image_suffixes"])


def _label_lines(path: Path, name: str = "imagenet") -> list[tuple[int, str, str]]:
    """(line number, file name, label text) of a label file, without comments and header."""
    path = Path(path)
    suffixes = IMAGENET["image_suffixes"] if name == "imagenet" else IMAGE_SUFFIXES
    if not path.is_file():
        raise DataError(
            f"dataset {name}: label file {path} does not exist (config key datasets.{name}.labels)"
        )
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first file name
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"dataset {name}: label file {path} is not UTF-8 text ({e}); save it as UTF-8 "
            f"(config key datasets.{name}.labels)"
        ) from e
    rows = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) < 2:
            raise DataError(
                f"dataset {name}: {path}:{lineno}: expected '<file> <label>', got {line!r}"
            )
        if not rows and not parts[0].lower().endswith(suffixes) and not parts[1].isdigit():
            continue  # header
        if parts[0] in seen:
            raise DataError(
                f"dataset {name}: {path}:{lineno}: {parts[0]} is listed twice (first on line {seen[parts[0]]}); "
                f"list each image once (config key datasets.{name}.labels)"
            )
        seen[parts[0]] = lineno
        rows.append((lineno, parts[0], parts[1]))
    if not rows:
        raise DataError(f"dataset {name}: label file {path} lists no images")
    return rows


def read_label_file(
    path: Path,
    class_index: dict[str, int],
    name: str = "imagenet",
    n_classes: int = IMAGENET["num_classes"],
) -> list[tuple[str, int]]:
    """Read a label file for an image folder: one ``<file name> <label>`` per line.

    The separator may be whitespace or a comma; the label is a class index (0..999, torchvision
    order) or a WordNet id (``n01440764``); for a user dataset, an index in [0, ``n_classes``) or a
    class name of ``class_index``. A first line that is not an image name is a header.
    """
    rows = []
    what = (
        "a known wnid"
        if name == "imagenet"
        else f"a class name of datasets.{name}.classes / class_index"
    )
    for lineno, fname, label in _label_lines(path, name):
        if (
            label in class_index
        ):  # a class name first: classes may be named by numbers ("0", "7", ...)
            y = class_index[label]
            if label.isdigit() and int(label) < n_classes and int(label) != y:
                raise DataError(
                    f"dataset {name}: {path}:{lineno}: label {label!r} is ambiguous: class name {label!r} has index {y}, "
                    f"but read as an index it is class {int(label)}; number the classes so that class 'k' is at "
                    f"position k of datasets.{name}.classes / class_index, or give them names that are not numbers"
                )
        elif label.isdigit():
            y = int(label)
        else:
            raise DataError(
                f"dataset {name}: {path}:{lineno}: label {label!r} is neither a class index nor {what}"
            )
        if not 0 <= y < n_classes:
            extra = (
                ""
                if name == "imagenet"
                else (
                    f" (the dataset has {n_classes} classes: datasets.{name}.num_classes, classes or class_index)"
                )
            )
            raise DataError(
                f"dataset {name}: {path}:{lineno}: label {y} outside [0, {n_classes - 1}]{extra}"
            )
        rows.append((fname, y))
    return rows


def resolve_mirror(config: dict) -> Path | None:
    """The local mirror folder: config ``data_mirror`` if set, else ``$PIXELROBUST_MIRROR``, else None."""
    value = config.get("data_mirror") or os.environ.get("PIXELROBUST_MIRROR") or None
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise DataError(
            f"data mirror {value} (config key data_mirror or environment variable PIXELROBUST_MIRROR) "
            "is not a folder; fix the path, or unset both to download the official files"
        )
    return path


# ----------------------------------------------------------------------------------------------
# User datasets: an ImageFolder or a labelled folder under any other name in datasets:
# ----------------------------------------------------------------------------------------------


def check_user_config(name: str, cfg: dict | None) -> dict:
    """A user dataset's settings, checked (errors name ``datasets.<name>.<key>``), every key present.

    ``resize`` alone means shorter side to ``resize``, then a centre crop of ``resize`` x ``resize``.
    """
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", str(name)):
        raise DataError(
            f"dataset name {name!r} (under datasets:): use letters, digits and '_' only, starting with a letter"
        )
    if not isinstance(cfg, dict) or not cfg:
        raise DataError(
            f"dataset {name!r} is not built in ({', '.join(DATASETS)}); describe it under datasets.{name}: "
            f"layout: imagefolder (one sub-folder per class) or labels (a folder and a label file), and folder: <path> "
            "(config/README.md, 'Your own images')"
        )
    unknown = sorted(set(cfg) - set(USER_KEYS))
    if unknown:
        raise DataError(
            f"datasets.{name}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"a user dataset takes {', '.join(USER_KEYS)}"
        )
    out = {k: cfg.get(k) for k in USER_KEYS}
    if out["layout"] not in LAYOUTS:
        raise DataError(
            f"datasets.{name}.layout is {out['layout']!r}; use imagefolder (folder/<class>/<image>) or labels "
            f"(images in folder, '<file> <label>' lines in datasets.{name}.labels)"
        )
    if not out["folder"]:
        raise DataError(f"datasets.{name}.folder is not set; give the folder that holds the images")
    folder = Path(out["folder"]).expanduser()
    if not folder.is_dir():
        raise DataError(f"datasets.{name}.folder: {out['folder']} is not a folder; fix the path")
    if out["layout"] == "labels":
        if not out["labels"]:
            raise DataError(
                f"datasets.{name}.layout is labels, so datasets.{name}.labels (a file of '<file> <label>' lines) "
                "must be set"
            )
        if not Path(out["labels"]).expanduser().is_file():
            raise DataError(
                f"datasets.{name}.labels: {out['labels']} does not exist (config key datasets.{name}.labels)"
            )
    elif out["labels"]:
        raise DataError(
            f"datasets.{name}.labels is set, but layout imagefolder takes labels from the sub-folders; remove "
            f"datasets.{name}.labels, or use layout: labels"
        )
    if out["classes"] is not None and out["class_index"] is not None:
        raise DataError(f"datasets.{name}: give classes or class_index, not both")
    if out["classes"] is not None:
        classes = out["classes"]
        if (
            not isinstance(classes, list)
            or len(classes) < 2
            or not all(isinstance(c, str) and c for c in classes)
        ):
            raise DataError(
                f"datasets.{name}.classes must be a list of at least two class names (label index = position)"
            )
        dup = sorted({c for c in classes if classes.count(c) > 1})
        if dup:
            raise DataError(
                f"datasets.{name}.classes lists {', '.join(dup)} more than once; list each class once"
            )
    ci = out["class_index"]
    if ci is not None and ci != "imagenet" and not Path(ci).expanduser().is_file():
        raise DataError(
            f"datasets.{name}.class_index: {ci} does not exist; give a JSON file, or 'imagenet' for the "
            "ImageNet class index (wnid folders get the indices of ImageNet models)"
        )
    for key in ("resize", "crop", "num_classes"):
        v = out[key]
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, int) or v < (2 if key == "num_classes" else 1)
        ):
            raise DataError(
                f"datasets.{name}.{key} is {v!r}; give a whole number >= {2 if key == 'num_classes' else 1} or null"
            )
    if out["resize"] is not None and out["crop"] is None:
        out["crop"] = out["resize"]
    if out["resize"] is not None and out["crop"] > out["resize"]:
        raise DataError(
            f"datasets.{name}.crop ({out['crop']}) must not exceed datasets.{name}.resize ({out['resize']})"
        )
    return out


def _class_folders(folder: Path) -> list[str]:
    """The class sub-folders of an ImageFolder, sorted as torchvision's ImageFolder sorts them."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def read_class_index(path: str | os.PathLike, name: str) -> tuple[list[str], list[str]]:
    """(class keys, display names) in label order from a JSON class index.

    Accepted: the Keras ``imagenet_class_index.json`` layout ``{"0": ["n01440764", "tench"], ...}``
    (keys are the wnids), ``{"cat": 0, "dog": 1}``, or ``["cat", "dog"]``. Indices must be 0..n-1.
    """
    fix = (
        f'(config key datasets.{name}.class_index; expected {{"0": ["key", "name"], ...}}, '
        '{"key": index, ...} or ["key", ...])'
    )
    try:
        raw = json.loads(Path(path).expanduser().read_text(encoding="utf-8-sig"))
        if isinstance(raw, list):
            pairs = [(i, str(k), str(k)) for i, k in enumerate(raw)]
        elif isinstance(raw, dict) and all(isinstance(v, list) for v in raw.values()):
            pairs = [(int(i), str(v[0]), str(v[1] if len(v) > 1 else v[0])) for i, v in raw.items()]
        elif isinstance(raw, dict):
            pairs = [(int(v), str(k), str(k)) for k, v in raw.items()]
        else:
            raise ValueError(f"a JSON {type(raw).__name__}")
    except (OSError, ValueError, TypeError, IndexError) as e:
        raise DataError(
            f"dataset {name}: cannot read class index {path} ({type(e).__name__}: {e}) {fix}"
        ) from e
    pairs.sort()
    if [i for i, _, _ in pairs] != list(range(len(pairs))) or len(pairs) < 2:
        raise DataError(
            f"dataset {name}: class index {path} must number its {len(pairs)} classes 0..{len(pairs) - 1}, each "
            f"once {fix}"
        )
    keys = [k for _, k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise DataError(
            f"dataset {name}: class index {path} names {', '.join(dup[:5])} more than once {fix}"
        )
    return keys, [n for _, _, n in pairs]


def user_num_classes(name: str, cfg: dict) -> int:
    """How many classes (model outputs) a user dataset has; a declared num_classes must agree."""
    cfg = check_user_config(name, cfg)
    declared = cfg["num_classes"]
    if cfg["classes"] is not None:
        n, how = len(cfg["classes"]), f"datasets.{name}.classes lists"
    elif cfg["class_index"] == "imagenet":
        n, how = IMAGENET["num_classes"], f"datasets.{name}.class_index (ImageNet) has"
    elif cfg["class_index"] is not None:
        n, how = (
            len(read_class_index(cfg["class_index"], name)[0]),
            f"datasets.{name}.class_index {cfg['class_index']} has",
        )
    elif cfg["layout"] == "imagefolder":
        n, how = (
            len(_class_folders(Path(cfg["folder"]).expanduser())),
            f"datasets.{name}.folder {cfg['folder']} has",
        )
        if n < 2:
            raise DataError(
                f"dataset {name}: {cfg['folder']} has {n} class sub-folder{'s' if n != 1 else ''}; layout "
                f"imagefolder wants one sub-folder per class (folder/<class>/<image>), at least two"
            )
    elif declared is None:
        raise DataError(
            f"dataset {name}: a labels dataset needs its number of classes: set datasets.{name}.num_classes "
            f"(labels are indices 0..num_classes-1), or datasets.{name}.classes / class_index (labels may then "
            "be class names)"
        )
    else:
        return int(declared)
    if declared is not None and declared != n:
        raise DataError(
            f"datasets.{name}.num_classes is {declared}, but {how} {n} classes; remove num_classes or fix it"
        )
    return n


def _imagenet_class_index_file(name: str, mirror: Path | None, downloaded: dict | None) -> Path:
    path = (
        mirror / IMAGENET["class_index"]
        if mirror is not None
        else Path((downloaded or {}).get(IMAGENET["class_index"], ""))
    )
    if not path.is_file():
        raise DataError(
            f"dataset {name}: class_index imagenet needs {IMAGENET['class_index']} (not found at {path}); "
            f"{_fix_hint(name)}"
        )
    return path


def _imagefolder_rows(
    name: str, folder: Path, keys: list[str] | None
) -> tuple[list[tuple[str, int]], list[str], int]:
    """(relative image path, label) of an ImageFolder, its class keys, and the ignored non-image files."""
    stray = sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if stray:
        raise DataError(
            f"dataset {name}: {folder} holds images directly ({stray[0]}, ...); layout imagefolder wants "
            f"folder/<class>/<image>: move them into class sub-folders, or use layout: labels with a label file"
        )
    folders = _class_folders(folder)
    if keys is None:
        keys = folders
    index = {k: i for i, k in enumerate(keys)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise DataError(
            f"dataset {name}: {len(unknown)} sub-folder{'s' if len(unknown) != 1 else ''} of {folder} "
            f"({', '.join(unknown[:5])}) {'are' if len(unknown) != 1 else 'is'} not a class of "
            f"datasets.{name}.classes / class_index; rename or remove {'them' if len(unknown) != 1 else 'it'}, "
            "or add the class"
        )
    rows, ignored = [], 0
    for cls in folders:
        found = []
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.startswith("."):
                    continue
                if Path(f).suffix.lower() in IMAGE_SUFFIXES:
                    found.append(Path(dirpath, f).relative_to(folder).as_posix())
                else:
                    ignored += 1
        if not found:
            raise DataError(
                f"dataset {name}: class folder {folder / cls} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                "add some, or remove the folder (an empty class still shifts the label indices)"
            )
        rows += [(f, index[cls]) for f in sorted(found)]
    return rows, keys, ignored


def _user_rows(
    name: str, cfg: dict, keys: list[str] | None
) -> tuple[list[tuple[str, int]], list[str] | None, int]:
    folder = Path(cfg["folder"]).expanduser()
    if cfg["layout"] == "imagefolder":
        return _imagefolder_rows(name, folder, keys)
    n = user_num_classes(name, cfg) if keys is None else len(keys)
    rows = read_label_file(
        Path(cfg["labels"]).expanduser(), {k: i for i, k in enumerate(keys or [])}, name, n
    )
    missing = [f for f, _ in rows if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"dataset {name}: {len(missing)} image{'s' if len(missing) != 1 else ''} listed in {cfg['labels']} "
            f"{'are' if len(missing) != 1 else 'is'} not in {folder} (first: {missing[0]}); fix datasets.{name}.folder / labels"
        )
    return rows, keys, 0


def _user_keys_for_listing(name: str, cfg: dict) -> list[str] | None:
    """Class keys known without the ImageNet index file (None: sorted folders, or any key of that index)."""
    if cfg["classes"] is not None:
        return list(cfg["classes"])
    if cfg["class_index"] not in (None, "imagenet"):
        return read_class_index(cfg["class_index"], name)[0]
    return None


def _user_listing(name: str, cfg: dict) -> list[str]:
    """The image files of a user dataset (relative to its folder), without decoding anything."""
    cfg = check_user_config(name, cfg)
    folder = Path(cfg["folder"]).expanduser()
    if cfg["layout"] == "labels":
        return [f for _, f, _ in _label_lines(Path(cfg["labels"]).expanduser(), name)]
    # the ImageNet index is only read at preparation: here any sub-folder name counts
    keys = _user_keys_for_listing(name, cfg)
    if cfg["class_index"] == "imagenet":
        keys = _class_folders(folder)
    return [f for f, _ in _imagefolder_rows(name, folder, keys)[0]]


def imagenet_config(cfg: dict | None) -> dict:
    """``datasets.imagenet`` as given (possibly partial, or None), the schema's defaults filled in."""
    return with_defaults("datasets.imagenet", cfg)


def image_size(name: str, cfg: dict | None) -> tuple[int, int] | None:
    """(height, width) of the images ``load_split`` returns for a dataset (None: a user folder without images)."""
    if name in CIFAR:
        return (32, 32)
    if name == "imagenet":
        crop = int(imagenet_config(cfg)["crop"])
        return (crop, crop)
    cfg = check_user_config(name, cfg)
    if cfg["crop"] is not None:
        return (cfg["crop"], cfg["crop"])
    files = _user_listing(name, cfg)
    if not files:
        return None
    path = Path(cfg["folder"]).expanduser() / files[0]
    try:
        with Image.open(path) as im:  # reads the header only
            return (im.height, im.width)
    except (OSError, SyntaxError) as e:
        raise DataError(
            f"dataset {name}: cannot read image {path} ({_pil_error(e)}); it is corrupt or not an image"
        ) from e


def _prepare_user(name: str, cfg: dict, out: Path, mirror: Path | None, downloaded: dict) -> dict:
    cfg = check_user_config(name, cfg)
    folder = Path(cfg["folder"]).expanduser().resolve()
    n_classes = user_num_classes(name, cfg)
    keys, names = (
        (list(cfg["classes"]), list(cfg["classes"])) if cfg["classes"] is not None else (None, None)
    )
    extra: dict = {}
    if cfg["class_index"] == "imagenet":
        src = _imagenet_class_index_file(name, mirror, downloaded)
        copy_verified(
            src,
            out / IMAGENET["class_index"],
            IMAGENET["class_index_sha256"],
            what="ImageNet class index",
        )
        keys, names = read_class_index(out / IMAGENET["class_index"], name)
    elif cfg["class_index"] is not None:
        path = Path(cfg["class_index"]).expanduser().resolve()
        keys, names = read_class_index(path, name)
        extra.update(class_index=str(path), class_index_sha256=file_digest(path))
    rows, keys, ignored = _user_rows(name, cfg, keys)
    if names is None:
        names = list(keys) if keys is not None else [str(i) for i in range(n_classes)]
    if cfg["layout"] == "labels":
        labels_path = Path(cfg["labels"]).expanduser().resolve()
        extra.update(labels=str(labels_path), labels_sha256=file_digest(labels_path))
        fix = f"replace it, or remove its line from the label file {labels_path} (config key datasets.{name}.labels)"
    else:
        fix = f"replace it, or move it out of {folder} (config key datasets.{name}.folder)"
    index, first, ids = [], None, {}
    for rel, y in rows:
        path = folder / rel
        sha = _decode_check(path, fix, name)
        with Image.open(path) as im:
            size = (im.height, im.width)
        if cfg["crop"] is None and first is None:
            first = (rel, size)
        elif cfg["crop"] is None and size != first[1]:
            raise DataError(
                f"dataset {name}: images differ in size ({first[0]} is {first[1][1]}x{first[1][0]}, {rel} is "
                f"{size[1]}x{size[0]}, width x height); the studies need one size: set datasets.{name}.resize and crop "
                "(e.g. 256 and 224, as for ImageNet models), or crop alone (a centre crop of the native images)"
            )
        elif cfg["resize"] is None and cfg["crop"] is not None and min(size) < cfg["crop"]:
            raise DataError(
                f"dataset {name}: {rel} is {size[1]}x{size[0]}, smaller than datasets.{name}.crop "
                f"({cfg['crop']}); set datasets.{name}.resize too, or a smaller crop"
            )
        image_id = Path(rel).with_suffix("").as_posix()
        if image_id in ids:
            raise DataError(
                f"dataset {name}: {ids[image_id]} and {rel} would have the same image id {image_id!r}; "
                "rename one of them"
            )
        ids[image_id] = rel
        index.append((str(path), y, sha, image_id))
    if not index:
        raise DataError(f"dataset {name}: no images in {folder}")
    size = [cfg["crop"], cfg["crop"]] if cfg["crop"] is not None else list(first[1])
    with open(out / "index.tsv", "w") as fh:
        for path, y, sha, image_id in index:
            fh.write(f"{path}\t{y}\t{sha}\t{image_id}\n")
    (out / "classes.json").write_text(json.dumps(names, indent=1) + "\n")
    return {
        **extra,
        "kind": "folder",
        "layout": cfg["layout"],
        "source": f"folder:{folder}",
        "counts": {"test": len(index)},
        "num_classes": n_classes,
        "resize": cfg["resize"],
        "crop": cfg["crop"],
        "size": size,
        "ignored_files": ignored,
    }


def available_images(name: str, cfg: dict, mirror: Path | None, split: str = "test") -> int:
    """How many images a split will have once prepared (known before anything is downloaded)."""
    if name not in DATASETS:
        if split != "test":
            raise DataError(
                f"dataset {name} (your own images) has only a 'test' split, not {split!r}"
            )
        return len(_user_listing(name, cfg))
    if name in CIFAR:
        spec = CIFAR[name]
        if mirror is None:
            return spec["official_counts"][split]
        folder = mirror / spec["folder"]
        return sum(len(_cifar_labels(folder / f, name)) for f in spec["splits"][split])
    if split != "test":
        raise DataError(
            f"dataset imagenet has only a 'test' split here (the sample or your validation folder), not {split!r}"
        )
    cfg = imagenet_config(cfg)
    if cfg["source"] == "folder":
        return len(_label_lines(Path(cfg["labels"])))
    if mirror is None:
        return len(imagenet_sample_checksums())
    folder = mirror / IMAGENET["sample_folder"]
    if not folder.is_dir():
        raise DataError(
            f"dataset imagenet: mirror folder {folder} does not exist; {_fix_hint(name)}"
        )
    return len(_list_images(folder))


@functools.lru_cache(maxsize=16)
def _cifar_labels(path: Path, name: str) -> np.ndarray:
    return _check_cifar_batch(path, name)[1]


def _stat_entry(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path.name}:missing"
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def source_fingerprint(name: str, cfg: dict, mirror: Path | None) -> str:
    """A digest of a dataset's source files as they are now: a ``prepare_dataset`` param.

    Snakemake reruns a job whose params changed, so editing, adding or removing a source file
    (the image folder and label file of ``datasets.imagenet.source: folder``, the mirror's files)
    re-prepares ``resources/data/<name>``. Each file counts by name, size and modification time
    (a stat, no reading), the label file by its sha256; downloads are rule inputs already.
    For a folder source, a listed image that is missing is an error here, before anything runs.
    """
    entries: list[str] = []
    if name not in DATASETS:
        user = check_user_config(name, cfg)
        folder = Path(user["folder"]).expanduser()
        if user["labels"]:
            entries.append(f"labels:{file_digest(Path(user['labels']).expanduser())}")
        if user["class_index"] == "imagenet" and mirror is not None:
            entries.append(_stat_entry(mirror / IMAGENET["class_index"]))
        elif user["class_index"] is not None:
            entries.append(f"class_index:{file_digest(Path(user['class_index']).expanduser())}")
        # relative paths: an image moved to another class folder changes its label
        for rel in _user_listing(name, user):
            entries.append(rel + ":" + _stat_entry(folder / rel).split(":", 1)[1])
        return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
    if name in CIFAR:
        if mirror is not None:
            spec = CIFAR[name]
            folder = mirror / spec["folder"]
            entries = [
                _stat_entry(folder / f) for f in [spec["meta"], *sum(spec["splits"].values(), [])]
            ]
    else:
        if mirror is not None:
            entries.append(_stat_entry(mirror / IMAGENET["class_index"]))
        cfg = imagenet_config(cfg)
        if cfg["source"] == "folder":
            labels = Path(cfg["labels"]).expanduser()
            folder = Path(cfg["folder"]).expanduser()
            lines = _label_lines(labels)
            missing = [f for _, f, _ in lines if not (folder / f).is_file()]
            if missing:
                raise DataError(
                    f"dataset imagenet: {len(missing)} image{'s' if len(missing) != 1 else ''} listed in {labels} {'are' if len(missing) != 1 else 'is'} not in {folder} "
                    f"(first: {missing[0]}); fix datasets.imagenet.folder / labels"
                )
            entries.append(f"labels:{file_digest(labels)}")
            entries += [_stat_entry(folder / f) for _, f, _ in lines]
        elif mirror is not None:
            folder = mirror / IMAGENET["sample_folder"]
            entries += (
                [_stat_entry(p) for p in _list_images(folder)] if folder.is_dir() else ["missing"]
            )
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def _pil_error(e: Exception) -> str:
    """PIL's error without the in-memory buffer's repr (``<_io.BytesIO object at 0x...>``)."""
    return f"{type(e).__name__}: " + re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))


_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _to_rgb(im, path, name: str, fix: str):
    """An image as 8-bit RGB. 16-bit greyscale (PNG's only deep greyscale, Pillow mode I;16 or I) is scaled
    to 8 bits by value * 255 / 65535 (rounded); PIL's own convert would clip it to 255, almost all white.
    Other 32-bit integer and float images (TIFF) have no agreed range: refused."""
    if im.mode in _16BIT_MODES or (im.mode == "I" and im.format == "PNG"):
        a = np.asarray(im).astype(np.uint32)
        if a.size and (int(a.max()) > 65535 or int(a.min()) < 0):
            raise DataError(
                f"dataset {name}: image {path} is {im.mode} with values outside 0..65535; {fix}"
            )
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("I", "F") or im.mode.startswith("I;"):
        raise DataError(
            f"dataset {name}: image {path} has 32-bit {'float' if im.mode == 'F' else 'integer'} pixels (mode {im.mode}), "
            f"whose range is not known; save it as 8- or 16-bit (PNG) or 8-bit JPEG; {fix}"
        )
    return im.convert("RGB")


def _decode_check(path: Path, fix: str, name: str = "imagenet") -> str:
    """Decode an image fully (a 0-byte or truncated file fails here) and check its pixels can be read as
    RGB (_to_rgb); return its sha256."""
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode_error = None
            try:
                _to_rgb(im, path, name, fix)
            except DataError as e:
                mode_error = e
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"dataset {name}: cannot decode image {path} ({_pil_error(e)}); it is empty, corrupt or not an image; {fix}"
        ) from e
    if mode_error is not None:
        raise mode_error
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# Preparing resources/data/<name>
# ----------------------------------------------------------------------------------------------


def prepare_dataset(
    *,
    dataset: str,
    settings: dict,
    out: dict,
    mirror: str | os.PathLike | None = None,
    inputs: dict | None = None,
) -> dict:
    """Build ``out["data"]`` (``resources/data/<dataset>``) from a mirror or from downloaded files
    (rule ``prepare_dataset``).

    ``settings`` are the dataset's config (``datasets.<dataset>``); ``mirror`` is the data mirror's
    folder (None: the downloads). ``inputs`` are the rule's inputs by name: the downloads under their
    file names (those of :func:`downloads`) are read from it; the others (the mirror's files, a folder
    source's label file and folder, a class index file) are inputs so that edits rerun the rule, and
    are read through ``mirror`` and ``settings``. The folder is assembled under a temporary name and
    renamed when complete; ``manifest.json`` records the source and the count per split.

    Example::

        prepare_dataset(dataset="cifar10", settings={}, out={"data": "resources/data/cifar10"},
                        mirror="../shared/data")
    """
    name, cfg = dataset, settings
    mirror = Path(mirror) if mirror is not None else None
    if name not in DATASETS:
        check_user_config(name, cfg)  # an unknown name without settings: says what to add
    downloaded = inputs or {}
    with atomic_path(out["data"]) as tmp:
        tmp.mkdir()
        if name not in DATASETS:
            manifest = _prepare_user(name, cfg, tmp, mirror, downloaded)
        elif name in CIFAR:
            manifest = _prepare_cifar(name, tmp, mirror, downloaded)
        else:
            manifest = _prepare_imagenet(cfg, tmp, mirror, downloaded)
        manifest["dataset"] = name
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _prepare_cifar(name: str, out: Path, mirror: Path | None, downloaded: dict) -> dict:
    spec = CIFAR[name]
    if mirror is not None:
        src = mirror / spec["folder"]
        counts = check_cifar_folder(src, name)
        for fname in [spec["meta"], *sum(spec["splits"].values(), [])]:
            shutil.copyfile(src / fname, out / fname)
        source = f"mirror:{src}"
    else:
        archive = Path(downloaded[spec["archive"]])
        verify_checksum(archive, spec["md5"], "md5", what=f"CIFAR archive for {name}")
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(out / "_extract", filter="data")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(
                f"dataset {name}: cannot extract {archive} ({e}); delete it and rerun"
            ) from e
        for f in (out / "_extract" / spec["folder"]).iterdir():
            shutil.move(str(f), out / f.name)
        shutil.rmtree(out / "_extract")
        counts = check_cifar_folder(out, name)
        source = f"official:{spec['url']}"
    return {"kind": "cifar", "source": source, "counts": counts, "num_classes": spec["num_classes"]}


def _prepare_imagenet(cfg: dict, out: Path, mirror: Path | None, downloaded: dict) -> dict:
    cfg = imagenet_config(cfg)
    ci_name = IMAGENET["class_index"]
    ci_src = mirror / ci_name if mirror is not None else Path(downloaded[ci_name])
    if not ci_src.is_file():
        raise DataError(f"dataset imagenet: missing class index {ci_src}; {_fix_hint('imagenet')}")
    copy_verified(
        ci_src, out / ci_name, IMAGENET["class_index_sha256"], what="ImageNet class index"
    )
    class_index = _load_class_index(out / ci_name)
    source_kind = cfg["source"]
    if source_kind == "folder":
        folder = Path(cfg["folder"]).expanduser().resolve()
        if not folder.is_dir():
            raise DataError(
                f"dataset imagenet: image folder {folder} does not exist (config key datasets.imagenet.folder)"
            )
        labels_path = Path(cfg["labels"]).expanduser().resolve()
        rows = read_label_file(labels_path, class_index)
        missing = [f for f, _ in rows if not (folder / f).is_file()]
        if missing:
            raise DataError(
                f"dataset imagenet: {len(missing)} image{'s' if len(missing) != 1 else ''} listed in {cfg['labels']} {'are' if len(missing) != 1 else 'is'} not in {folder} "
                f"(first: {missing[0]}); fix datasets.imagenet.folder / labels"
            )
        fix = f"replace it, or remove its line from the label file {labels_path} (config key datasets.imagenet.labels)"
        # every image is decoded now, so a broken one stops preparation, not a compute job later
        index = [(str(folder / f), y, _decode_check(folder / f, fix)) for f, y in rows]
        source = f"folder:{folder}"
        extra = {"labels": str(labels_path), "labels_sha256": file_digest(labels_path)}
    else:
        sums = imagenet_sample_checksums()
        images = out / "images"
        images.mkdir()
        if mirror is not None:
            src = mirror / IMAGENET["sample_folder"]
            if not src.is_dir():
                raise DataError(
                    f"dataset imagenet: mirror folder {src} does not exist; {_fix_hint('imagenet')}"
                )
            files = _list_images(src)
            source = f"mirror:{src}"
        else:
            archive = Path(downloaded[IMAGENET["sample_archive"]])
            try:
                with zipfile.ZipFile(archive) as z:
                    z.extractall(out / "_extract")
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(
                    f"dataset imagenet: cannot extract {archive} ({e}); delete it and rerun"
                ) from e
            files = [p for p in (out / "_extract").rglob("*") if p.suffix == ".JPEG"]
            source = f"official:{IMAGENET['sample_url']}"
        if not files:
            raise DataError(
                f"dataset imagenet: no images found for the sample set; {_fix_hint('imagenet')}"
            )
        index = []
        for f in sorted(files, key=lambda p: p.name):
            if f.name not in sums:
                raise DataError(
                    f"dataset imagenet: {f} is not one of the ImageNet sample images (commit {IMAGENET_SAMPLE_COMMIT[:8]}); "
                    "remove it, or use datasets.imagenet.source: folder for your own images"
                )
            copy_verified(
                f,
                images / f.name,
                sums[f.name],
                what=f"ImageNet sample image {f}",
                fix=_fix_hint("imagenet"),
            )
            wnid = f.name.split("_", 1)[0]
            if wnid not in class_index:
                raise DataError(
                    f"dataset imagenet: {f.name} has wnid {wnid} not in the class index"
                )
            index.append((f"images/{f.name}", class_index[wnid], sums[f.name]))
        shutil.rmtree(out / "_extract", ignore_errors=True)
        extra = {}
    with open(out / "index.tsv", "w") as fh:
        for path, y, sha in index:
            fh.write(f"{path}\t{y}\t{sha}\n")
    return {
        **extra,
        "kind": "imagenet",
        "source": source,
        "counts": {"test": len(index)},
        "num_classes": IMAGENET["num_classes"],
        "resize": int(cfg["resize"]),
        "crop": int(cfg["crop"]),
    }


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Images in [0, 1] (float32, N×3×H×W), labels (int64, N) and stable ids (N strings)."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def read_manifest(data_dir: str | os.PathLike) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{data_dir} is not a prepared dataset (no {MANIFEST}); run the workflow's prepare_dataset rule for it"
        )
    try:
        manifest = json.loads(path.read_text())
        manifest["dataset"], manifest["counts"], manifest["kind"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"cannot read {path} ({type(e).__name__}: {e}); {_prepared_hint(data_dir)}"
        ) from e
    return manifest


def _check_not_stale(data_dir: Path, manifest: dict) -> None:
    """A folder source whose label file (or class index) changed since preparation is stale: say so."""
    for key in ("labels", "class_index"):
        _check_file_not_stale(data_dir, manifest, key)


def _check_file_not_stale(data_dir: Path, manifest: dict, key: str) -> None:
    labels, recorded = manifest.get(key), manifest.get(f"{key}_sha256")
    if not labels or not recorded:
        return
    path = Path(labels)
    now = _cached_digest(str(path), *_stat_key(path)) if path.is_file() else "missing"
    if now != recorded:
        raise DataError(
            f"{data_dir} is stale: the {'label file' if key == 'labels' else 'class index'} {labels} (config key "
            f"datasets.{manifest['dataset']}.{key}) changed or disappeared "
            f"after {data_dir} was prepared; rerun the workflow (it prepares the dataset again when its source changes) "
            f"or delete the folder {data_dir}"
        )


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)


def load_split(
    data_dir: str | os.PathLike, split: str = "test", start: int = 0, stop: int | None = None
) -> Split:
    """Load images ``start:stop`` of a split of a prepared dataset folder, in the official order."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    name = manifest["dataset"]
    counts = manifest["counts"]
    if split not in counts:
        raise DataError(f"dataset {name} has no split {split!r} (splits: {sorted(counts)})")
    _check_not_stale(data_dir, manifest)
    n = counts[split]
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise DataError(
            f"dataset {name} split {split}: images {start}:{stop} requested, but {data_dir} was prepared with {n} "
            f"(its {MANIFEST}); if the dataset's source changed since, {data_dir} is stale: delete the folder {data_dir} "
            "and rerun"
        )
    # the caches below are keyed on the manifest's size and time, so a folder prepared again is re-read
    version = _stat_key(data_dir / MANIFEST)
    if manifest["kind"] == "cifar":
        data, labels = _cifar_arrays(str(data_dir), name, split, *version)
        images = torch.from_numpy(
            data[start:stop].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
        )
        ids = [f"{name}-{split}-{i:05d}" for i in range(start, stop)]
        return Split(images, torch.from_numpy(labels[start:stop].copy()), ids)
    index = _imagenet_index(str(data_dir), *version)[start:stop]
    if manifest["kind"] == "folder":  # a user dataset: its own size, resize and crop optional
        height, width = manifest["size"]
        images = [
            _load_imagenet_image(data_dir, p, manifest["resize"], manifest["crop"], sha, name)
            for p, _, sha, _ in index
        ]
        for (p, _, _, _), im in zip(index, images):
            if tuple(im.shape[1:]) != (height, width):
                raise DataError(
                    f"dataset {name}: image {p} is {im.shape[2]}x{im.shape[1]}, not the {width}x{height} of "
                    f"{data_dir}; {_prepared_hint(data_dir)}"
                )
        images = torch.stack(images) if images else torch.empty(0, 3, height, width)
        ids = [i for _, _, _, i in index]
    else:
        images = (
            torch.stack(
                [
                    _load_imagenet_image(data_dir, p, manifest["resize"], manifest["crop"], sha)
                    for p, _, sha, _ in index
                ]
            )
            if index
            else torch.empty(0, 3, manifest["crop"], manifest["crop"])
        )
        ids = [Path(p).stem for p, _, _, _ in index]
    labels = torch.tensor([y for _, y, _, _ in index], dtype=torch.int64)
    return Split(images, labels, ids)


@functools.lru_cache(maxsize=8)
def _cifar_arrays(data_dir: str, name: str, split: str, *version) -> tuple[np.ndarray, np.ndarray]:
    fix = _prepared_hint(data_dir)
    parts = [
        _check_cifar_batch(Path(data_dir) / f, name, fix) for f in CIFAR[name]["splits"][split]
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@functools.lru_cache(maxsize=8)
def _imagenet_index(data_dir: str, *version) -> list[tuple[str, int, str | None, str | None]]:
    """(image path, label, sha256 recorded at preparation or None for folders prepared before it was, image id
    of a user dataset or None)."""
    path = Path(data_dir) / "index.tsv"
    rows = []
    try:
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            rows.append(
                (
                    parts[0],
                    int(parts[1]),
                    parts[2] if len(parts) > 2 else None,
                    parts[3] if len(parts) > 3 else None,
                )
            )
    except (OSError, ValueError, IndexError) as e:
        raise DataError(
            f"cannot read {path} ({type(e).__name__}: {e}); {_prepared_hint(data_dir)}"
        ) from e
    return rows


def _load_imagenet_image(
    data_dir: Path,
    path: str,
    resize: int | None,
    crop: int | None,
    sha256: str | None = None,
    name: str = "imagenet",
) -> torch.Tensor:
    """Standard ImageNet evaluation preprocessing: shorter side to ``resize``, centre crop ``crop``
    (either None: that step is skipped, as for a user dataset at its native size).

    The file's sha256 is compared with the one recorded at preparation (``sha256``), so an image
    edited or damaged afterwards is an error that names it, not a silently different input.
    """
    # lazy: torchvision takes about 1 s to import; data is imported by the workflow's main process
    from torchvision.transforms import functional as TF

    own = Path(
        path
    ).is_absolute()  # an image of the user's folder (source: folder), else a prepared copy
    full = Path(path) if own else data_dir / path
    fix = (
        f"it changed after {data_dir} was prepared; rerun the workflow (it prepares the dataset again when its "
        f"folder changes) or delete the folder {data_dir}"
        if own
        else _prepared_hint(data_dir)
    )
    try:
        raw = full.read_bytes()
    except OSError as e:
        raise DataError(f"dataset {name}: cannot read image {full} ({e}); {fix}") from e
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(
            f"dataset {name}: image {full} is not the file that was prepared (sha256 differs); {fix}"
        )
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im = _to_rgb(im, full, name, fix)
            if resize is not None:
                im = TF.resize(
                    im, resize, interpolation=TF.InterpolationMode.BILINEAR, antialias=True
                )
            if crop is not None:
                im = TF.center_crop(im, crop)
            return TF.pil_to_tensor(im).float().div_(255.0)
    except (OSError, SyntaxError) as e:
        raise DataError(
            f"dataset {name}: cannot decode image {full} ({_pil_error(e)}); it is corrupt or not an image; {fix}"
        ) from e


def class_names(data_dir: str | os.PathLike) -> list[str]:
    """Human-readable class names in label order."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    if manifest["kind"] == "cifar":
        spec = CIFAR[manifest["dataset"]]
        return list(
            _unpickle(data_dir / spec["meta"], manifest["dataset"], _prepared_hint(data_dir))[
                spec["names_key"]
            ]
        )
    if manifest["kind"] == "folder":
        try:
            return list(json.loads((data_dir / "classes.json").read_text()))
        except (OSError, ValueError) as e:
            raise DataError(
                f"cannot read {data_dir / 'classes.json'} ({e}); {_prepared_hint(data_dir)}"
            ) from e
    raw = json.loads((data_dir / IMAGENET["class_index"]).read_text())
    return [raw[str(i)][1] for i in range(len(raw))]


def chunk_bounds(n_images: int, chunk_size: int) -> list[tuple[int, int]]:
    """Split ``range(n_images)`` into consecutive chunks of at most ``chunk_size`` images."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [(s, min(s + chunk_size, n_images)) for s in range(0, n_images, chunk_size)]


__all__ = [
    "CIFAR",
    "IMAGENET",
    "DATASETS",
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "USER_KEYS",
    "check_user_config",
    "image_size",
    "is_builtin",
    "read_class_index",
    "register_datasets",
    "user_num_classes",
    "Split",
    "available_images",
    "check_cifar_folder",
    "chunk_bounds",
    "class_names",
    "downloads",
    "file_digest",
    "load_split",
    "num_classes",
    "prepare_dataset",
    "read_label_file",
    "read_manifest",
    "resolve_mirror",
    "source_fingerprint",
]
