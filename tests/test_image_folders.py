"""Your own images (issue 27): ImageFolder and labelled-folder datasets through config alone.

Real data: an ImageFolder of ImageNet sample images in wnid folders, and one of CIFAR-10 test rows
written as lossless 32x32 PNGs, both built here from the mirror. Expected pixels and labels come
from the mirror's files themselves (the Keras class index, the CIFAR pickles), not from a run.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, SCHEMA, TINY, snakemake
from pixelrobust import config as prconfig
from pixelrobust import data
from pixelrobust.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """register_datasets writes an environment variable for script jobs: keep it to each test."""
    monkeypatch.setenv(data.CLASSES_ENV, "{}")
    yield
    data._REGISTERED.clear()


def wnid_folder(mirror: Path, root: Path, n: int = 20) -> tuple[Path, list[Path]]:
    """An ImageFolder of the first ``n`` ImageNet sample images: root/<wnid>/<file> (symlinks)."""
    files = sorted((mirror / "imagenet-sample-images").iterdir())[:n]
    for f in files:
        wnid = f.name.split("_", 1)[0]
        (root / wnid).mkdir(parents=True, exist_ok=True)
        (root / wnid / f.name).symlink_to(f)
    return root, files


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
# Same images, same pixels and labels, whatever the layout
# ----------------------------------------------------------------------------------------------


def test_wnid_imagefolder_equals_the_label_file_source(mirror, tmp_path):
    """20 ImageNet images as root/<wnid>/ with class_index imagenet, as a user labels folder, and as
    the built-in label-file source: the same pixels and the ImageNet indices of the Keras file."""
    root, files = wnid_folder(mirror, tmp_path / "wnids")
    keras = json.loads((mirror / "imagenet_class_index.json").read_text())
    index = {v[0]: int(k) for k, v in keras.items()}
    expected = {f.stem: index[f.name.split("_", 1)[0]] for f in files}
    assert (
        len(set(expected.values())) == 20 and max(expected.values()) > 19
    )  # not 0..19: the ImageNet indices

    folder_cfg = {
        "layout": "imagefolder",
        "folder": str(root),
        "class_index": "imagenet",
        "resize": 256,
        "crop": 224,
    }
    manifest = data.prepare_dataset(
        "mydata", folder_cfg, tmp_path / "out" / "mydata", mirror=mirror
    )
    assert (
        manifest["num_classes"] == 1000
        and manifest["counts"] == {"test": 20}
        and manifest["size"] == [224, 224]
    )
    mine = data.load_split(tmp_path / "out" / "mydata")
    assert mine.images.shape == (20, 3, 224, 224)
    assert {Path(i).name: int(y) for i, y in zip(mine.ids, mine.labels)} == expected

    # the built-in labels-file source over the same files (numeric labels written from the Keras file)
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in files:
        (flat / f.name).symlink_to(f)
    labels = tmp_path / "labels.txt"
    labels.write_text(
        "".join(f"{f.name} {index[f.name.split('_', 1)[0]]}\n" for f in reversed(files))
    )
    ref_cfg = {
        "source": "folder",
        "folder": str(flat),
        "labels": str(labels),
        "resize": 256,
        "crop": 224,
    }
    data.prepare_dataset("imagenet", ref_cfg, tmp_path / "out" / "imagenet", mirror=mirror)
    ref = data.load_split(tmp_path / "out" / "imagenet")
    ref_by_id = {i: (x, int(y)) for i, x, y in zip(ref.ids, ref.images, ref.labels)}

    # a user labels-layout folder: wnid labels resolved through the same class index
    lab2 = tmp_path / "labels2.txt"
    lab2.write_text(
        "file,label\n"
        + "".join(f"{f.name.split('_', 1)[0]}/{f.name},{f.name.split('_', 1)[0]}\n" for f in files)
    )
    lab_cfg = {
        "layout": "labels",
        "folder": str(root),
        "labels": str(lab2),
        "class_index": "imagenet",
        "resize": 256,
        "crop": 224,
    }
    data.prepare_dataset("mylabels", lab_cfg, tmp_path / "out" / "mylabels", mirror=mirror)
    lab = data.load_split(tmp_path / "out" / "mylabels")

    for split in (mine, lab):
        assert len(split) == 20
        for i, x, y in zip(split.ids, split.images, split.labels):
            rx, ry = ref_by_id[Path(i).name]
            assert int(y) == ry == expected[Path(i).name]
            assert torch.equal(x, rx), i
    assert data.class_names(tmp_path / "out" / "mydata")[0] == "tench"


def test_cifar_png_folder_at_native_size_is_the_cifar_rows(mirror, tmp_path):
    """40 CIFAR-10 test rows as PNGs: no resize, pixels = the pickle's bytes / 255, labels = CIFAR's
    (the sorted class folder names are CIFAR-10's label order, as torchvision's ImageFolder sorts)."""
    pixels, labels, names = cifar_rows(mirror)
    assert names == sorted(names)  # the premise of the sorted default here
    rows = range(40)
    assert set(labels[:40]) == set(range(10))
    root = png_folder(mirror, tmp_path / "pngs", rows)
    cfg = {"layout": "imagefolder", "folder": str(root)}
    assert data.available_images("mycifar", cfg, None) == 40 and data.image_size(
        "mycifar", cfg
    ) == (32, 32)
    manifest = data.prepare_dataset("mycifar", cfg, tmp_path / "out")
    assert (
        manifest["num_classes"] == 10
        and manifest["size"] == [32, 32]
        and manifest["resize"] is None
    )
    split = data.load_split(tmp_path / "out")
    assert split.images.shape == (40, 3, 32, 32)
    for image_id, x, y in zip(split.ids, split.images, split.labels):
        r = row_of(image_id)
        assert int(y) == labels[r]
        assert torch.equal((x * 255).round().to(torch.uint8).flatten(), torch.from_numpy(pixels[r]))
    assert data.class_names(tmp_path / "out") == names
    part = data.load_split(tmp_path / "out", "test", 10, 15)
    assert part.ids == split.ids[10:15] and torch.equal(part.images, split.images[10:15])


def test_explicit_classes_fix_the_indices_when_folders_are_missing(mirror, tmp_path):
    """Rows of 5 classes only: sorted folder names would number them 0..4 (torchvision's pitfall); a
    classes: list in the model's output order keeps CIFAR's indices, and a reversed list reverses them."""
    pixels, labels, names = cifar_rows(mirror)
    rows = [i for i in range(200) if labels[i] in (1, 3, 5, 7, 9)][:25]
    root = png_folder(mirror, tmp_path / "pngs", rows)
    sorted_cfg = {"layout": "imagefolder", "folder": str(root)}
    assert data.user_num_classes("odd", sorted_cfg) == 5
    data.prepare_dataset("odd", sorted_cfg, tmp_path / "sorted")
    got = data.load_split(tmp_path / "sorted")
    assert [int(y) for y in got.labels] == [
        [1, 3, 5, 7, 9].index(labels[row_of(i)]) for i in got.ids
    ]

    data.prepare_dataset("odd", {**sorted_cfg, "classes": names}, tmp_path / "named")
    named = data.load_split(tmp_path / "named")
    assert [int(y) for y in named.labels] == [labels[row_of(i)] for i in named.ids]
    assert data.read_manifest(tmp_path / "named")["num_classes"] == 10

    data.prepare_dataset("odd", {**sorted_cfg, "classes": names[::-1]}, tmp_path / "reversed")
    rev = data.load_split(tmp_path / "reversed")
    assert [int(y) for y in rev.labels] == [9 - labels[row_of(i)] for i in rev.ids]

    index = tmp_path / "index.json"  # the same order as a {name: index} JSON class index
    index.write_text(json.dumps({n: i for i, n in enumerate(names)}))
    data.prepare_dataset("odd", {**sorted_cfg, "class_index": str(index)}, tmp_path / "json")
    assert data.load_split(tmp_path / "json").labels.tolist() == named.labels.tolist()


def test_resize_and_crop_follow_the_imagenet_preprocessing(mirror, tmp_path):
    """A user dataset's resize / crop is the ImageNet evaluation transform; crop alone crops natively."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    root, files = wnid_folder(mirror, tmp_path / "wnids", n=2)
    data.prepare_dataset(
        "small",
        {"layout": "imagefolder", "folder": str(root), "resize": 40, "crop": 32},
        tmp_path / "a",
    )
    got = data.load_split(tmp_path / "a")
    with Image.open(files[0]) as im:
        im = im.convert("RGB")
        want = TF.pil_to_tensor(TF.center_crop(TF.resize(im, 40, antialias=True), 32)).float() / 255
        native = TF.pil_to_tensor(TF.center_crop(im, 100)).float() / 255
    assert got.images.shape == (2, 3, 32, 32) and torch.equal(got.images[0], want)
    data.prepare_dataset(
        "small", {"layout": "imagefolder", "folder": str(root), "crop": 100}, tmp_path / "b"
    )
    assert torch.equal(data.load_split(tmp_path / "b").images[0], native)


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


def check(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    given = copy.deepcopy(cfg)
    prconfig.validate(cfg, SCHEMA)
    return prconfig.check(cfg, given=given)


def merge(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


def test_a_new_dataset_name_gets_every_missing_key_named_with_values_that_pass(mirror, tmp_path):
    cfg = tiny_with(tmp_path, mirror)
    with pytest.raises(ConfigError) as info:
        check(cfg)
    msg = str(info.value)
    for key in (
        "onepixel.n_images",
        "onepixel.grid_stride",
        "onepixel.segmentation",
        "gradients.split",
        "gradients.n_images",
        "masked_pgd.n_images",
        "prm.train.images",
        "prm.sweep.n_images",
        "defense_eval.n_images",
    ):
        assert f"{key}.mycifar" in msg, (key, msg)
    defended = copy.deepcopy(cfg)  # not under prm.models, but the stochastic PRM defence trains one
    defended["prm"]["models"].remove("resnet20_mine")
    with pytest.raises(ConfigError, match=r"prm.train.images.mycifar"):
        check(defended)
    snippet = yaml.safe_load(msg.split("\n", 1)[1])  # the YAML offered to start from
    specs = check(merge(cfg, snippet))
    assert specs["resnet20_mine"]["num_classes"] == 10
    assert snippet["gradients"]["start"]["mycifar"] >= snippet["masked_pgd"]["n_images"]["mycifar"]


def test_config_errors_name_the_keys(mirror, tmp_path):
    cfg = tiny_with(tmp_path, mirror)
    for section in ("onepixel", "gradients", "masked_pgd", "prm", "defense_eval", "synthesis"):
        cfg[section]["models"] = [m for m in cfg[section]["models"] if m != "resnet20_mine"]
    check(cfg)  # clean accuracy only: no per-dataset key needed

    typo = copy.deepcopy(cfg)
    typo["onepixel"]["n_images"]["mycifr"] = 3
    with pytest.raises(
        ConfigError, match=r"onepixel.n_images.mycifr: no dataset is named 'mycifr'"
    ):
        check(typo)
    train = copy.deepcopy(cfg)
    train["gradients"]["split"]["mycifar"] = "train"
    with pytest.raises(ConfigError, match=r"gradients.split.mycifar"):
        check(train)
    orphan = copy.deepcopy(cfg)
    orphan["models"]["resnet20_mine"]["dataset"] = "nodata"
    with pytest.raises(
        ConfigError, match=r"dataset 'nodata' is neither built in .* add datasets.nodata"
    ):
        check(orphan)
    both = copy.deepcopy(cfg)
    both["datasets"]["mycifar"]["classes"] = ["a", "b"]
    both["datasets"]["mycifar"]["class_index"] = "imagenet"
    with pytest.raises(ConfigError, match=r"give classes or class_index, not both"):
        check(both)
    unknown = copy.deepcopy(cfg)
    unknown["datasets"]["mycifar"]["size"] = 32
    with pytest.raises(ConfigError, match=r"datasets.mycifar.size is not a known key"):
        check(unknown)


def test_class_count_and_input_size_are_checked_against_the_model(mirror, tmp_path):
    root = png_folder(mirror, tmp_path / "pngs", range(40))
    cfg = {"datasets": {"mycifar": {"layout": "imagefolder", "folder": str(root)}}}
    data.register_datasets(cfg["datasets"])
    spec = {"dataset": "mycifar", "num_classes": 1000}
    with pytest.raises(
        ConfigError, match=r"model m outputs 1000 classes, but its dataset mycifar has 10"
    ):
        prconfig._check_datasets({**cfg, **{s: {} for s in ("onepixel",)}}, {"m": spec})
    with pytest.raises(
        ConfigError,
        match=r"model m expects 224x224 images, but dataset mycifar gives 32x32.*resize",
    ):
        prconfig._check_datasets(
            cfg, {"m": {"dataset": "mycifar", "num_classes": 10, "input_size": 224}}
        )
    declared = {"layout": "imagefolder", "folder": str(root), "num_classes": 100}
    with pytest.raises(
        DataError,
        match=r"datasets.mycifar.num_classes is 100, but datasets.mycifar.folder .* has 10",
    ):
        data.user_num_classes("mycifar", declared)


def test_script_jobs_know_the_class_count(mirror, tmp_path):
    """The workflow registers user datasets; a script job (another process) then knows their classes."""
    root = png_folder(mirror, tmp_path / "pngs", range(40))
    assert data.register_datasets(
        {"mycifar": {"layout": "imagefolder", "folder": str(root)}, "cifar10": {}}
    ) == {"mycifar": 10}
    out = subprocess.run(
        [sys.executable, "-c", "from pixelrobust import data; print(data.num_classes('mycifar'))"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=True,
    )
    assert out.stdout.strip() == "10"


@pytest.mark.workflow
def test_workflow_plans_and_prepares_a_user_dataset(mirror, tmp_path):
    """Config alone: the DAG of every stage with a model over a user ImageFolder, and its preparation
    by the prepare_dataset rule (the rows of the CIFAR-10 pickle, pixels and labels)."""
    cfg = tiny_with(tmp_path, mirror)
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        yaml.safe_dump(
            {
                k: cfg[k]
                for k in (
                    "datasets",
                    "models",
                    "onepixel",
                    "gradients",
                    "masked_pgd",
                    "prm",
                    "defense_eval",
                    "synthesis",
                )
            }
        )
    )
    proc = snakemake([*TINY, str(mine), "-n"], tmp_path, mirror, check=False)
    assert proc.returncode != 0 and "onepixel.n_images.mycifar" in proc.stdout + proc.stderr
    offered = (proc.stdout + proc.stderr).split(
        "sized to the images (config/README.md, 'Your own images'):\n", 1
    )[1]
    lines = []
    for line in offered.splitlines():  # the YAML, up to Snakemake's traceback
        if line.startswith(("  File ", "(")) or not line.strip():
            break
        lines.append(line)
    snippet = yaml.safe_load("\n".join(lines))
    mine.write_text(yaml.safe_dump(merge(yaml.safe_load(mine.read_text()), snippet)))
    dry = snakemake([*TINY, str(mine), "-n"], tmp_path, mirror).stdout
    for target in (
        "resources/data/mycifar",
        "results/clean_accuracy/resnet20_mine/chunk-0.csv",
        "results/p1/onepixel/resnet20_mine/chunk-0.npz",
        "results/p3/masked_pgd/resnet20_mine/chunk-0.csv",
        "results/synthesis/resnet20_mine.npz",
    ):
        assert target in dry, target
    snakemake([*TINY, str(mine), "--cores", "1", "resources/data/mycifar"], tmp_path, mirror)
    split = data.load_split(tmp_path / "resources" / "data" / "mycifar")
    pixels, labels, _ = cifar_rows(mirror)
    assert len(split) == 40 and [int(y) for y in split.labels] == [
        labels[row_of(i)] for i in split.ids
    ]
    assert all(
        torch.equal(
            (x * 255).round().to(torch.uint8).flatten(), torch.from_numpy(pixels[row_of(i)])
        )
        for i, x in zip(split.ids, split.images)
    )


# ----------------------------------------------------------------------------------------------
# Following the source; bad input
# ----------------------------------------------------------------------------------------------


def test_prepared_folder_follows_its_source(mirror, tmp_path):
    root = png_folder(mirror, tmp_path / "pngs", range(40))
    cfg = {"layout": "imagefolder", "folder": str(root)}
    dest = tmp_path / "data" / "mycifar"
    stale = dest.parent / ".mycifar.abcd1234.tmp"  # left by a killed preparation
    (stale / "x").mkdir(parents=True)
    data.prepare_dataset("mycifar", cfg, dest)
    assert not stale.exists() and dest.is_dir()
    # a relabelled image (same bytes, name and time, the file order unchanged): a/0002 -> b/0002
    two = tmp_path / "two"
    pngs = sorted(root.rglob("*.png"))[:4]
    for n, (cls, src) in enumerate(zip("aabb", pngs), 1):
        (two / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, two / cls / f"{n:04d}.png")
    two_cfg = {"layout": "imagefolder", "folder": str(two)}
    before = data.source_fingerprint("two", two_cfg, None)
    st = (two / "a" / "0002.png").stat()
    shutil.move(two / "a" / "0002.png", two / "b" / "0002.png")
    os.utime(two / "b" / "0002.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data.source_fingerprint("two", two_cfg, None) != before
    shutil.move(two / "b" / "0002.png", two / "a" / "0002.png")
    os.utime(two / "a" / "0002.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data.source_fingerprint("two", two_cfg, None) == before
    # an image rewritten after preparation: the loader refuses it and names the folder to delete
    moved = next((root / "cat").iterdir())
    other = next((root / "dog").iterdir())
    moved.write_bytes(other.read_bytes())
    with pytest.raises(
        DataError, match=rf"is not the file that was prepared .* delete the folder {dest}"
    ):
        data.load_split(dest)


@pytest.mark.parametrize(
    "fault,phrase",
    [
        ("images-in-root", "holds images directly"),
        ("empty-class", "holds no images"),
        ("unknown-folder", "not a class of datasets.bad.classes"),
        ("mixed-sizes", "images differ in size"),
        ("broken-png", "cannot decode image"),
        ("label-out-of-range", "label 7 outside [0, 2]"),
        ("labels-without-count", "set datasets.bad.num_classes"),
    ],
)
def test_bad_folders_get_errors_that_name_the_fix(mirror, tmp_path, fault, phrase):
    root = png_folder(mirror, tmp_path / "pngs", range(12))
    cfg = {"layout": "imagefolder", "folder": str(root)}
    if fault == "images-in-root":
        shutil.copy(next((root / "cat").iterdir()), root / "stray.png")
    elif fault == "empty-class":
        (root / "zebra").mkdir()
    elif fault == "unknown-folder":
        cfg["classes"] = ["airplane", "automobile"]
    elif fault == "mixed-sizes":
        from PIL import Image

        Image.new("RGB", (33, 32)).save(next((root / "cat").iterdir()))
    elif fault == "broken-png":
        next((root / "cat").iterdir()).write_bytes(b"")
    elif fault in ("label-out-of-range", "labels-without-count"):
        labels = tmp_path / "labels.txt"
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
        labels.write_text(f"{files[0]} 7\n{files[1]} 1\n")
        cfg = {"layout": "labels", "folder": str(root), "labels": str(labels)}
        if fault == "label-out-of-range":
            cfg["num_classes"] = 3
    dest = tmp_path / "out"
    with pytest.raises(DataError) as info:
        data.prepare_dataset("bad", cfg, dest)
    assert phrase in str(info.value), str(info.value)
    assert not dest.exists()


# ----------------------------------------------------------------------------------------------
# Referee findings (issue 27, second review)
# ----------------------------------------------------------------------------------------------


def _digit_folder(mirror, tmp_path, lines: str) -> tuple[Path, Path, list[int]]:
    """Four CIFAR rows as flat PNGs and a label file with ``lines`` (format: one label per image)."""
    from PIL import Image

    pixels, labels, _ = cifar_rows(mirror)
    root = tmp_path / "flat"
    root.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(pixels[i].reshape(3, 32, 32).transpose(1, 2, 0)).save(root / f"im{i}.png")
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"im{i}.png {lab}\n" for i, lab in enumerate(lines.split())))
    return root, path, [int(v) for v in labels[:4]]


def test_numeric_class_names_are_names_not_indices(mirror, tmp_path):
    """Classes named by numbers: a label is the class *name* when classes are given ("7" is class 0 of
    ["7", "3"], not an index out of range); a label that reads differently as a name and as an index
    (["1", "0"]: name "1" is class 0, index 1 is class "0") is refused, not silently mislabelled."""
    root, labels, _ = _digit_folder(mirror, tmp_path, "7 3 3 7")
    cfg = {"layout": "labels", "folder": str(root), "labels": str(labels), "classes": ["7", "3"]}
    data.prepare_dataset("digits", cfg, tmp_path / "named")
    assert data.load_split(tmp_path / "named").labels.tolist() == [0, 1, 1, 0]
    # names that equal their positions read the same both ways: accepted
    root2, labels2, _ = _digit_folder(mirror, tmp_path / "same", "1 0 0 1")
    data.prepare_dataset(
        "digits",
        {**cfg, "folder": str(root2), "labels": str(labels2), "classes": ["0", "1"]},
        tmp_path / "same_out",
    )
    assert data.load_split(tmp_path / "same_out").labels.tolist() == [1, 0, 0, 1]
    with pytest.raises(
        DataError,
        match=r"label '1' is ambiguous: class name '1' has index 0, but read as an index it is "
        r"class 1.*names that are not numbers",
    ):
        data.prepare_dataset(
            "digits",
            {**cfg, "folder": str(root2), "labels": str(labels2), "classes": ["1", "0"]},
            tmp_path / "swapped",
        )
    # without classes, digits are indices as before
    data.prepare_dataset(
        "digits",
        {"layout": "labels", "folder": str(root), "labels": str(labels), "num_classes": 8},
        tmp_path / "indices",
    )
    assert data.load_split(tmp_path / "indices").labels.tolist() == [7, 3, 3, 7]


def test_sixteen_bit_grey_images_keep_their_values_and_deep_tiffs_are_refused(mirror, tmp_path):
    """A 16-bit greyscale PNG (Pillow mode I;16) is scaled to 8 bits (v * 255 / 65535), not clipped to white
    by PIL's convert; its pixels equal those of the same image saved in 8 bits. A 32-bit float TIFF has no
    known range: refused at preparation, naming the file."""
    from PIL import Image

    ramp8 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 4).astype(np.uint8)  # 0..252
    ramp16 = ramp8.astype(np.uint16) * 257  # the same values in 16 bits (255 * 257 = 65535)
    root = tmp_path / "grey"
    for cls, arr in (("a", ramp8), ("b", ramp16)):
        (root / cls).mkdir(parents=True)
        Image.fromarray(arr).save(root / cls / "x.png")
    with Image.open(root / "b" / "x.png") as im:
        assert im.mode.startswith("I")  # really a deep image
    data.prepare_dataset("grey", {"layout": "imagefolder", "folder": str(root)}, tmp_path / "out")
    split = data.load_split(tmp_path / "out")
    expected = torch.from_numpy(ramp8).float().div(255.0).expand(3, 8, 8)
    assert torch.equal(split.images[0], expected) and torch.equal(split.images[1], expected)

    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), "F").save(
        root / "b" / "x.tif"
    )
    with pytest.raises(
        DataError, match=r"x.tif has 32-bit float pixels \(mode F\).*save it as 8- or 16-bit"
    ):
        data.prepare_dataset(
            "grey", {"layout": "imagefolder", "folder": str(root)}, tmp_path / "out2"
        )


def test_registry_gives_models_the_dataset_size_and_imagenet_indices(mirror, tmp_path):
    """What models need of a user dataset, registered from the config and read in another process: classes,
    whether labels are ImageNet indices (class_index: imagenet) and the image size (native, or the crop)."""
    root = png_folder(mirror, tmp_path / "pngs", range(40))  # rows of all 10 classes
    wnids, _ = wnid_folder(mirror, tmp_path / "wnids", 4)
    data.register_datasets(
        {
            "mycifar": {"layout": "imagefolder", "folder": str(root)},
            "myval": {
                "layout": "imagefolder",
                "folder": str(wnids),
                "class_index": "imagenet",
                "resize": 256,
                "crop": 224,
            },
        }
    )
    assert data.dataset_info("mycifar") == {
        "num_classes": 10,
        "imagenet_index": False,
        "size": (32, 32),
    }
    assert data.dataset_info("myval") == {
        "num_classes": 1000,
        "imagenet_index": True,
        "size": (224, 224),
    }
    out = subprocess.run(
        [sys.executable, "-c", "from pixelrobust import data; print(data.dataset_info('myval'))"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=True,
    )
    assert out.stdout.strip() == str(
        {"num_classes": 1000, "imagenet_index": True, "size": (224, 224)}
    )
