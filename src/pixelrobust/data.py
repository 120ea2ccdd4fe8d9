"""Datasets: where they come from, how they are checked, and how they are loaded.

Three datasets are built in (``cifar10``, ``cifar100``, ``imagenet``). Each can come from

* the official download (CIFAR tarballs with the md5 published on the CIFAR page; the ImageNet
  sample images from a pinned commit of github EliSchwartz/imagenet-sample-images, every file
  checked against ``checksums/imagenet_sample_images.sha256``; the Keras class-index file), or
* a local mirror folder laid out like the official files (config ``data_mirror`` or the environment
  variable ``PIXELROBUST_MIRROR``), checked for layout, shapes and counts instead of the tarball
  checksum, because a mirror may hold a subset of the rows, or
* for ImageNet, a user's own folder of images (e.g. ILSVRC2012 validation) plus a label file.

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
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .io import atomic_path, copy_verified, file_digest, verify_checksum

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


def num_classes(name: str) -> int:
    return CIFAR[name]["num_classes"] if name in CIFAR else IMAGENET["num_classes"]


@functools.lru_cache(maxsize=1)
def imagenet_sample_checksums() -> dict[str, str]:
    """sha256 of every file of the pinned ImageNet sample commit, by file name."""
    text = (importlib_resources.files("pixelrobust") / "checksums" / "imagenet_sample_images.sha256").read_text()
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
    files = {
        IMAGENET["class_index"]: {
            "url": IMAGENET["class_index_url"],
            "checksum": IMAGENET["class_index_sha256"],
            "algorithm": "sha256",
        }
    }
    if cfg.get("source", "sample") == "sample":
        # GitHub builds the zip on the fly, so its bytes are not stable: every image inside is
        # checked against the per-file sha256 list instead.
        files[IMAGENET["sample_archive"]] = {"url": IMAGENET["sample_url"], "checksum": None, "algorithm": "sha256"}
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
        raise DataError(f"dataset {name}: cannot read {path} ({type(e).__name__}: {e}); it is corrupt or truncated; {fix}") from e
    if not isinstance(d, dict):
        raise DataError(f"dataset {name}: {path} holds a {type(d).__name__}, expected a dict; {fix}")
    return d


def _check_cifar_batch(path: Path, name: str, fix: str | None = None) -> tuple[np.ndarray, np.ndarray]:
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
        raise DataError(f"dataset {name}: {path} has {len(data)} images but {len(labels)} labels; {fix}")
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
        raise DataError(f"dataset {name}: {folder / spec['meta']} lacks {spec['num_classes']} '{spec['names_key']}'; {_fix_hint(name)}")
    counts = {}
    for split, files in spec["splits"].items():
        n = 0
        for fname in files:
            data, _ = _check_cifar_batch(folder / fname, name)
            n += len(data)
        if n > spec["official_counts"][split]:
            raise DataError(f"dataset {name}: split {split} has {n} images, more than the official {spec['official_counts'][split]}")
        counts[split] = n
    return counts


def _load_class_index(path: Path) -> dict[str, int]:
    """wnid -> class index from the Keras ``imagenet_class_index.json``."""
    try:
        raw = json.loads(Path(path).read_text())
        index = {v[0]: int(k) for k, v in raw.items()}
    except Exception as e:
        raise DataError(f"dataset imagenet: cannot read class index {path} ({e}); expected the Keras imagenet_class_index.json") from e
    if len(index) != IMAGENET["num_classes"]:
        raise DataError(f"dataset imagenet: class index {path} has {len(index)} classes, expected 1000")
    return index


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGENET["image_suffixes"])


def _label_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, file name, label text) of a label file, without comments and header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset imagenet: label file {path} does not exist (config key datasets.imagenet.labels)")
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first file name
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"dataset imagenet: label file {path} is not UTF-8 text ({e}); save it as UTF-8 "
            "(config key datasets.imagenet.labels)"
        ) from e
    rows = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) < 2:
            raise DataError(f"dataset imagenet: {path}:{lineno}: expected '<file> <label>', got {line!r}")
        if not rows and not parts[0].lower().endswith(IMAGENET["image_suffixes"]) and not parts[1].isdigit():
            continue  # header
        if parts[0] in seen:
            raise DataError(
                f"dataset imagenet: {path}:{lineno}: {parts[0]} is listed twice (first on line {seen[parts[0]]}); "
                "list each image once (config key datasets.imagenet.labels)"
            )
        seen[parts[0]] = lineno
        rows.append((lineno, parts[0], parts[1]))
    if not rows:
        raise DataError(f"dataset imagenet: label file {path} lists no images")
    return rows


def read_label_file(path: Path, class_index: dict[str, int]) -> list[tuple[str, int]]:
    """Read a label file for an image folder: one ``<file name> <label>`` per line.

    The separator may be whitespace or a comma; the label is a class index (0..999, torchvision
    order) or a WordNet id (``n01440764``). A first line that is not an image name is a header.
    """
    rows = []
    for lineno, fname, label in _label_lines(path):
        if label.isdigit():
            y = int(label)
        elif label in class_index:
            y = class_index[label]
        else:
            raise DataError(f"dataset imagenet: {path}:{lineno}: label {label!r} is neither a class index nor a known wnid")
        if not 0 <= y < IMAGENET["num_classes"]:
            raise DataError(f"dataset imagenet: {path}:{lineno}: label {y} outside [0, 999]")
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


def available_images(name: str, cfg: dict, mirror: Path | None, split: str = "test") -> int:
    """How many images a split will have once prepared (known before anything is downloaded)."""
    if name in CIFAR:
        spec = CIFAR[name]
        if mirror is None:
            return spec["official_counts"][split]
        folder = mirror / spec["folder"]
        return sum(len(_cifar_labels(folder / f, name)) for f in spec["splits"][split])
    if split != "test":
        raise DataError(f"dataset imagenet has only a 'test' split here (the sample or your validation folder), not {split!r}")
    if cfg.get("source", "sample") == "folder":
        return len(_label_lines(Path(cfg["labels"])))
    if mirror is None:
        return len(imagenet_sample_checksums())
    folder = mirror / IMAGENET["sample_folder"]
    if not folder.is_dir():
        raise DataError(f"dataset imagenet: mirror folder {folder} does not exist; {_fix_hint(name)}")
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
    if name in CIFAR:
        if mirror is not None:
            spec = CIFAR[name]
            folder = mirror / spec["folder"]
            entries = [_stat_entry(folder / f) for f in [spec["meta"], *sum(spec["splits"].values(), [])]]
    else:
        if mirror is not None:
            entries.append(_stat_entry(mirror / IMAGENET["class_index"]))
        if cfg.get("source", "sample") == "folder":
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
            entries += [_stat_entry(p) for p in _list_images(folder)] if folder.is_dir() else ["missing"]
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def _pil_error(e: Exception) -> str:
    """PIL's error without the in-memory buffer's repr (``<_io.BytesIO object at 0x...>``)."""
    import re

    return f"{type(e).__name__}: " + re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))


def _decode_check(path: Path, fix: str) -> str:
    """Decode an image fully (a 0-byte or truncated file fails here); return its sha256."""
    from PIL import Image

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"dataset imagenet: cannot decode image {path} ({_pil_error(e)}); it is empty, corrupt or not an image; {fix}") from e
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# Preparing resources/data/<name>
# ----------------------------------------------------------------------------------------------


def prepare_dataset(name: str, cfg: dict, dest: str | os.PathLike, mirror: Path | None = None, downloaded: dict | None = None) -> dict:
    """Build ``dest`` (``resources/data/<name>``) from a mirror or from downloaded files.

    ``downloaded`` maps the file names of :func:`downloads` to their local paths. The folder is
    assembled under a temporary name and renamed when complete; ``manifest.json`` records the
    source and the count per split.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    downloaded = downloaded or {}
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        if name in CIFAR:
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
            raise DataError(f"dataset {name}: cannot extract {archive} ({e}); delete it and rerun") from e
        for f in (out / "_extract" / spec["folder"]).iterdir():
            shutil.move(str(f), out / f.name)
        shutil.rmtree(out / "_extract")
        counts = check_cifar_folder(out, name)
        source = f"official:{spec['url']}"
    return {"kind": "cifar", "source": source, "counts": counts, "num_classes": spec["num_classes"]}


def _prepare_imagenet(cfg: dict, out: Path, mirror: Path | None, downloaded: dict) -> dict:
    ci_name = IMAGENET["class_index"]
    ci_src = mirror / ci_name if mirror is not None else Path(downloaded[ci_name])
    if not ci_src.is_file():
        raise DataError(f"dataset imagenet: missing class index {ci_src}; {_fix_hint('imagenet')}")
    copy_verified(ci_src, out / ci_name, IMAGENET["class_index_sha256"], what="ImageNet class index")
    class_index = _load_class_index(out / ci_name)
    source_kind = cfg.get("source", "sample")
    if source_kind == "folder":
        folder = Path(cfg["folder"]).expanduser().resolve()
        if not folder.is_dir():
            raise DataError(f"dataset imagenet: image folder {folder} does not exist (config key datasets.imagenet.folder)")
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
                raise DataError(f"dataset imagenet: mirror folder {src} does not exist; {_fix_hint('imagenet')}")
            files = _list_images(src)
            source = f"mirror:{src}"
        else:
            archive = Path(downloaded[IMAGENET["sample_archive"]])
            try:
                with zipfile.ZipFile(archive) as z:
                    z.extractall(out / "_extract")
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(f"dataset imagenet: cannot extract {archive} ({e}); delete it and rerun") from e
            files = [p for p in (out / "_extract").rglob("*") if p.suffix == ".JPEG"]
            source = f"official:{IMAGENET['sample_url']}"
        if not files:
            raise DataError(f"dataset imagenet: no images found for the sample set; {_fix_hint('imagenet')}")
        index = []
        for f in sorted(files, key=lambda p: p.name):
            if f.name not in sums:
                raise DataError(
                    f"dataset imagenet: {f} is not one of the ImageNet sample images (commit {IMAGENET_SAMPLE_COMMIT[:8]}); "
                    "remove it, or use datasets.imagenet.source: folder for your own images"
                )
            copy_verified(f, images / f.name, sums[f.name], what=f"ImageNet sample image {f}", fix=_fix_hint("imagenet"))
            wnid = f.name.split("_", 1)[0]
            if wnid not in class_index:
                raise DataError(f"dataset imagenet: {f.name} has wnid {wnid} not in the class index")
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
        "resize": int(cfg.get("resize", 256)),
        "crop": int(cfg.get("crop", 224)),
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
        raise DataError(f"{data_dir} is not a prepared dataset (no {MANIFEST}); run the workflow's prepare_dataset rule for it")
    try:
        manifest = json.loads(path.read_text())
        manifest["dataset"], manifest["counts"], manifest["kind"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"cannot read {path} ({type(e).__name__}: {e}); {_prepared_hint(data_dir)}") from e
    return manifest


def _check_not_stale(data_dir: Path, manifest: dict) -> None:
    """A folder-source ImageNet whose label file changed since preparation is stale: say so."""
    labels, recorded = manifest.get("labels"), manifest.get("labels_sha256")
    if not labels or not recorded:
        return
    path = Path(labels)
    now = _cached_digest(str(path), *_stat_key(path)) if path.is_file() else "missing"
    if now != recorded:
        raise DataError(
            f"{data_dir} is stale: the label file {labels} (config key datasets.imagenet.labels) changed or disappeared "
            f"after {data_dir} was prepared; rerun the workflow (it prepares the dataset again when its source changes) "
            f"or delete the folder {data_dir}"
        )


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)


def load_split(data_dir: str | os.PathLike, split: str = "test", start: int = 0, stop: int | None = None) -> Split:
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
        images = torch.from_numpy(data[start:stop].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
        ids = [f"{name}-{split}-{i:05d}" for i in range(start, stop)]
        return Split(images, torch.from_numpy(labels[start:stop].copy()), ids)
    index = _imagenet_index(str(data_dir), *version)[start:stop]
    images = torch.stack([_load_imagenet_image(data_dir, p, manifest["resize"], manifest["crop"], sha) for p, _, sha in index]) if index else torch.empty(0, 3, manifest["crop"], manifest["crop"])
    labels = torch.tensor([y for _, y, _ in index], dtype=torch.int64)
    ids = [Path(p).stem for p, _, _ in index]
    return Split(images, labels, ids)


@functools.lru_cache(maxsize=8)
def _cifar_arrays(data_dir: str, name: str, split: str, *version) -> tuple[np.ndarray, np.ndarray]:
    fix = _prepared_hint(data_dir)
    parts = [_check_cifar_batch(Path(data_dir) / f, name, fix) for f in CIFAR[name]["splits"][split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@functools.lru_cache(maxsize=8)
def _imagenet_index(data_dir: str, *version) -> list[tuple[str, int, str | None]]:
    """(image path, label, sha256 recorded at preparation or None for folders prepared before it was)."""
    path = Path(data_dir) / "index.tsv"
    rows = []
    try:
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            rows.append((parts[0], int(parts[1]), parts[2] if len(parts) > 2 else None))
    except (OSError, ValueError, IndexError) as e:
        raise DataError(f"cannot read {path} ({type(e).__name__}: {e}); {_prepared_hint(data_dir)}") from e
    return rows


def _load_imagenet_image(data_dir: Path, path: str, resize: int, crop: int, sha256: str | None = None) -> torch.Tensor:
    """Standard ImageNet evaluation preprocessing: shorter side to ``resize``, centre crop ``crop``.

    The file's sha256 is compared with the one recorded at preparation (``sha256``), so an image
    edited or damaged afterwards is an error that names it, not a silently different input.
    """
    from PIL import Image
    from torchvision.transforms import functional as TF

    own = Path(path).is_absolute()  # an image of the user's folder (source: folder), else a prepared copy
    full = Path(path) if own else data_dir / path
    fix = (
        f"it changed after {data_dir} was prepared; rerun the workflow (it prepares the dataset again when its "
        f"folder changes) or delete the folder {data_dir}" if own else _prepared_hint(data_dir)
    )
    try:
        raw = full.read_bytes()
    except OSError as e:
        raise DataError(f"dataset imagenet: cannot read image {full} ({e}); {fix}") from e
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(f"dataset imagenet: image {full} is not the file that was prepared (sha256 differs); {fix}")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert("RGB")
            im = TF.resize(im, resize, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            im = TF.center_crop(im, crop)
            return TF.pil_to_tensor(im).float().div_(255.0)
    except (OSError, SyntaxError) as e:
        raise DataError(f"dataset imagenet: cannot decode image {full} ({_pil_error(e)}); it is corrupt or not an image; {fix}") from e


def class_names(data_dir: str | os.PathLike) -> list[str]:
    """Human-readable class names in label order."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    if manifest["kind"] == "cifar":
        spec = CIFAR[manifest["dataset"]]
        return list(_unpickle(data_dir / spec["meta"], manifest["dataset"], _prepared_hint(data_dir))[spec["names_key"]])
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
