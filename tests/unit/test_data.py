"""Datasets: the real mirror files, the official-archive route, and bad input."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.images import cifar_rows, png_folder, row_of
from pixelrobust import data
from pixelrobust.errors import ChecksumError, DataError
from pixelrobust.io import file_digest


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet"])
def test_available_images_counts_the_mirror(mirror, mirror_counts, name):
    """The count equals the rows of the mirror's own files, read here (conftest.mirror_counts)."""
    assert data.available_images(name, {}, mirror) == mirror_counts[name]["test"]
    if name != "imagenet":
        assert data.available_images(name, {}, mirror, "train") == mirror_counts[name]["train"]


def test_available_images_without_mirror_is_the_official_count():
    assert data.available_images("cifar10", {}, None) == 10000
    assert data.available_images("cifar100", {}, None, "train") == 50000
    assert data.available_images("imagenet", {}, None) == 1000


def test_cifar10_loader_real_pixels(prepared, mirror):
    # the mirror's test batch, unpickled here: the loader must give back its rows, labels and bytes
    raw = _unpickle(mirror / "cifar-10-batches-py" / "test_batch")
    n = len(raw["labels"])
    split = data.load_split(prepared / "data" / "cifar10", "test")
    assert split.images.shape == (n, 3, 32, 32) and split.images.dtype == torch.float32
    assert 0.0 <= split.images.min() and split.images.max() <= 1.0
    assert split.labels.dtype == torch.int64 and split.labels.tolist() == list(raw["labels"])
    assert split.ids[0] == "cifar10-test-00000" and len(set(split.ids)) == n
    # Row 0 of the official test batch is a cat (label 3); pixels equal the raw bytes / 255 (CHW, row-major).
    assert split.labels[0].item() == 3
    for i in (0, 5, n - 1):
        assert torch.equal(
            (split.images[i] * 255).round().to(torch.uint8).flatten(),
            torch.from_numpy(raw["data"][i]),
        )


def test_slices_are_consistent_and_train_split_loads(prepared, mirror, mirror_counts):
    counts = mirror_counts["cifar10"]
    root = prepared / "data" / "cifar10"
    full = data.load_split(root, "test")
    part = data.load_split(root, "test", 100, 150)
    assert torch.equal(part.images, full.images[100:150]) and part.ids == full.ids[100:150]
    first = counts["train_batches"][
        0
    ]  # a slice across data_batch_1 -> data_batch_2: their rows in order
    train = data.load_split(root, "train", first - 10, first + 10)
    assert len(train) == 20 and train.ids[0] == f"cifar10-train-{first - 10:05d}"
    raw = [_unpickle(mirror / "cifar-10-batches-py" / f"data_batch_{i}") for i in (1, 2)]
    want = np.concatenate([raw[0]["data"][-10:], raw[1]["data"][:10]])
    assert torch.equal(
        (train.images * 255).round().to(torch.uint8).flatten(1), torch.from_numpy(want)
    )
    assert train.labels.tolist() == raw[0]["labels"][-10:] + raw[1]["labels"][:10]
    assert data.read_manifest(root)["counts"] == {"train": counts["train"], "test": counts["test"]}
    n = counts["test"]
    with pytest.raises(DataError, match=f"was prepared with {n} .* delete the folder"):
        data.load_split(root, "test", n - 17, n + 83)


def test_cifar100_and_class_names(prepared):
    split = data.load_split(prepared / "data" / "cifar100", "test", 0, 10)
    assert split.images.shape == (10, 3, 32, 32) and split.labels.max() < 100
    names = data.class_names(prepared / "data" / "cifar100")
    assert len(names) == 100 and names[0] == "apple"
    assert data.class_names(prepared / "data" / "cifar10")[3] == "cat"


def test_imagenet_sample_loader(prepared):
    split = data.load_split(prepared / "data" / "imagenet", "test", 0, 4)
    assert split.images.shape == (4, 3, 224, 224)
    assert split.ids[0] == "n01440764_tench" and split.labels[0].item() == 0
    assert 0.0 <= split.images.min() and split.images.max() <= 1.0
    assert data.class_names(prepared / "data" / "imagenet")[0] == "tench"


def test_chunk_bounds_cover_everything_once():
    bounds = data.chunk_bounds(1017, 256)
    assert bounds[0] == (0, 256) and bounds[-1] == (768, 1017) and len(bounds) == 4
    covered = [i for s, e in bounds for i in range(s, e)]
    assert covered == list(range(1017))
    with pytest.raises(ValueError):
        data.chunk_bounds(10, 0)


# --- bad input -------------------------------------------------------------------------------


def _copy_cifar_mirror(mirror: Path, tmp: Path) -> Path:
    dst = tmp / "mirror"
    shutil.copytree(mirror / "cifar-10-batches-py", dst / "cifar-10-batches-py")
    return dst


def test_missing_mirror_folder_names_the_setting(tmp_path):
    with pytest.raises(DataError, match="PIXELROBUST_MIRROR"):
        data.resolve_mirror({"data_mirror": str(tmp_path / "nope")})


def test_truncated_pickle_is_named_and_nothing_is_left(mirror, tmp_path):
    m = _copy_cifar_mirror(mirror, tmp_path)
    batch = m / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:50000])
    dest = tmp_path / "out" / "cifar10"
    with pytest.raises(DataError, match=r"test_batch.*corrupt or truncated"):
        data.prepare_dataset(dataset="cifar10", settings={}, out={"data": dest}, mirror=m)
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []


def test_wrong_shape_batch_is_rejected(mirror, tmp_path):
    m = _copy_cifar_mirror(mirror, tmp_path)
    path = m / "cifar-10-batches-py" / "data_batch_3"
    d = pickle.load(open(path, "rb"), encoding="latin1")
    d["data"] = d["data"][:, :1024]  # one channel only
    pickle.dump(d, open(path, "wb"))
    with pytest.raises(DataError, match=r"data_batch_3.*\(N, 3072\) uint8"):
        data.check_cifar_folder(m / "cifar-10-batches-py", "cifar10")


def test_label_out_of_range_is_rejected(mirror, tmp_path):
    m = _copy_cifar_mirror(mirror, tmp_path)
    path = m / "cifar-10-batches-py" / "test_batch"
    d = pickle.load(open(path, "rb"), encoding="latin1")
    d["labels"][7] = 10
    pickle.dump(d, open(path, "wb"))
    with pytest.raises(DataError, match=r"labels outside \[0, 9\]"):
        data.check_cifar_folder(m / "cifar-10-batches-py", "cifar10")


def test_altered_imagenet_image_fails_its_checksum(mirror, tmp_path):
    m = tmp_path / "mirror"
    (m / "imagenet-sample-images").mkdir(parents=True)
    shutil.copy(mirror / "imagenet_class_index.json", m)
    for f in sorted((mirror / "imagenet-sample-images").iterdir())[:3]:
        shutil.copy(f, m / "imagenet-sample-images" / f.name)
    victim = sorted((m / "imagenet-sample-images").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(ChecksumError, match=victim.name):
        data.prepare_dataset(
            dataset="imagenet",
            settings={"source": "sample"},
            out={"data": tmp_path / "out"},
            mirror=m,
        )
    assert not (tmp_path / "out").exists()


def test_cifar_tarball_route(mirror, mirror_counts, tmp_path, monkeypatch):
    """A tarball in the official layout extracts to the same data as the mirror route."""
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(mirror / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    # Our tarball is not the official one: its md5 is rejected, with the expected md5 named.
    with pytest.raises(ChecksumError, match=data.CIFAR["cifar10"]["md5"]):
        data.prepare_dataset(
            dataset="cifar10",
            settings={},
            out={"data": tmp_path / "a"},
            inputs={"cifar-10-python.tar.gz": archive},
        )
    monkeypatch.setitem(data.CIFAR["cifar10"], "md5", file_digest(archive, "md5"))
    manifest = data.prepare_dataset(
        dataset="cifar10",
        settings={},
        out={"data": tmp_path / "b"},
        inputs={"cifar-10-python.tar.gz": archive},
    )
    counts = mirror_counts["cifar10"]
    assert manifest["counts"] == {"train": counts["train"], "test": counts["test"]} and manifest[
        "source"
    ].startswith("official:")
    ref = data.prepare_dataset(
        dataset="cifar10", settings={}, out={"data": tmp_path / "c"}, mirror=mirror
    )
    assert ref["counts"] == manifest["counts"]
    assert torch.equal(
        data.load_split(tmp_path / "b").images, data.load_split(tmp_path / "c").images
    )


def test_imagenet_zip_route(mirror, tmp_path):
    archive = tmp_path / "sample.zip"
    files = sorted((mirror / "imagenet-sample-images").iterdir())[:5]
    with zipfile.ZipFile(archive, "w") as z:
        for f in files:
            z.write(f, f"imagenet-sample-images-{data.IMAGENET_SAMPLE_COMMIT}/{f.name}")
    downloaded = {
        data.IMAGENET["sample_archive"]: archive,
        data.IMAGENET["class_index"]: mirror / "imagenet_class_index.json",
    }
    manifest = data.prepare_dataset(
        dataset="imagenet",
        settings={"source": "sample"},
        out={"data": tmp_path / "out"},
        inputs=downloaded,
    )
    assert manifest["counts"] == {"test": 5}
    split = data.load_split(tmp_path / "out")
    assert split.ids == [f.stem for f in files]


def test_imagenet_folder_source_with_wnid_and_index_labels(mirror, tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    picks = sorted((mirror / "imagenet-sample-images").iterdir())[:3]
    for i, f in enumerate(picks):
        shutil.copy(f, folder / f"ILSVRC2012_val_{i:08d}.JPEG")
    labels = tmp_path / "labels.txt"
    labels.write_text(
        "ILSVRC2012_val_00000000.JPEG n01440764\nILSVRC2012_val_00000001.JPEG 2\nILSVRC2012_val_00000002.JPEG,4\n"
    )
    cfg = {"source": "folder", "folder": str(folder), "labels": str(labels)}
    assert data.available_images("imagenet", cfg, None) == 3
    data.prepare_dataset(
        dataset="imagenet", settings=cfg, out={"data": tmp_path / "out"}, mirror=mirror
    )
    split = data.load_split(tmp_path / "out")
    assert split.labels.tolist() == [0, 2, 4] and split.ids[1] == "ILSVRC2012_val_00000001"
    labels.write_text("ILSVRC2012_val_00000000.JPEG n99999999\n")
    with pytest.raises(DataError, match="n99999999"):
        data.prepare_dataset(
            dataset="imagenet", settings=cfg, out={"data": tmp_path / "out2"}, mirror=mirror
        )


def test_corrupt_jpeg_in_folder_source_is_named(mirror, tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    (folder / "broken.JPEG").write_bytes(b"\xff\xd8 this is not a jpeg")
    labels = tmp_path / "labels.txt"
    labels.write_text("broken.JPEG 1\n")
    cfg = {"source": "folder", "folder": str(folder), "labels": str(labels)}
    # decoded at preparation: the error comes before any compute job, and no dataset is written
    with pytest.raises(
        DataError, match="cannot decode image .*broken.JPEG.*remove its line from the label file"
    ):
        data.prepare_dataset(
            dataset="imagenet", settings=cfg, out={"data": tmp_path / "out"}, mirror=mirror
        )
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


# ----------------------------------------------------------------------------------------------
# Your own images (issue 27): ImageFolder and labelled-folder datasets through config alone.
#
# Real data: an ImageFolder of ImageNet sample images in wnid folders, and one of CIFAR-10 test rows
# written as lossless 32x32 PNGs, both built here from the mirror. Expected pixels and labels come
# from the mirror's files themselves (the Keras class index, the CIFAR pickles), not from a run.
# ----------------------------------------------------------------------------------------------


def wnid_folder(mirror: Path, root: Path, n: int = 20) -> tuple[Path, list[Path]]:
    """An ImageFolder of the first ``n`` ImageNet sample images: root/<wnid>/<file> (symlinks)."""
    files = sorted((mirror / "imagenet-sample-images").iterdir())[:n]
    for f in files:
        wnid = f.name.split("_", 1)[0]
        (root / wnid).mkdir(parents=True, exist_ok=True)
        (root / wnid / f.name).symlink_to(f)
    return root, files


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
        dataset="mydata",
        settings=folder_cfg,
        out={"data": tmp_path / "out" / "mydata"},
        mirror=mirror,
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
    data.prepare_dataset(
        dataset="imagenet",
        settings=ref_cfg,
        out={"data": tmp_path / "out" / "imagenet"},
        mirror=mirror,
    )
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
    data.prepare_dataset(
        dataset="mylabels",
        settings=lab_cfg,
        out={"data": tmp_path / "out" / "mylabels"},
        mirror=mirror,
    )
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
    manifest = data.prepare_dataset(dataset="mycifar", settings=cfg, out={"data": tmp_path / "out"})
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
    data.prepare_dataset(dataset="odd", settings=sorted_cfg, out={"data": tmp_path / "sorted"})
    got = data.load_split(tmp_path / "sorted")
    assert [int(y) for y in got.labels] == [
        [1, 3, 5, 7, 9].index(labels[row_of(i)]) for i in got.ids
    ]

    data.prepare_dataset(
        dataset="odd", settings={**sorted_cfg, "classes": names}, out={"data": tmp_path / "named"}
    )
    named = data.load_split(tmp_path / "named")
    assert [int(y) for y in named.labels] == [labels[row_of(i)] for i in named.ids]
    assert data.read_manifest(tmp_path / "named")["num_classes"] == 10

    data.prepare_dataset(
        dataset="odd",
        settings={**sorted_cfg, "classes": names[::-1]},
        out={"data": tmp_path / "reversed"},
    )
    rev = data.load_split(tmp_path / "reversed")
    assert [int(y) for y in rev.labels] == [9 - labels[row_of(i)] for i in rev.ids]

    index = tmp_path / "index.json"  # the same order as a {name: index} JSON class index
    index.write_text(json.dumps({n: i for i, n in enumerate(names)}))
    data.prepare_dataset(
        dataset="odd",
        settings={**sorted_cfg, "class_index": str(index)},
        out={"data": tmp_path / "json"},
    )
    assert data.load_split(tmp_path / "json").labels.tolist() == named.labels.tolist()


def test_resize_and_crop_follow_the_imagenet_preprocessing(mirror, tmp_path):
    """A user dataset's resize / crop is the ImageNet evaluation transform; crop alone crops natively."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    root, files = wnid_folder(mirror, tmp_path / "wnids", n=2)
    data.prepare_dataset(
        dataset="small",
        settings={"layout": "imagefolder", "folder": str(root), "resize": 40, "crop": 32},
        out={"data": tmp_path / "a"},
    )
    got = data.load_split(tmp_path / "a")
    with Image.open(files[0]) as im:
        im = im.convert("RGB")
        want = TF.pil_to_tensor(TF.center_crop(TF.resize(im, 40, antialias=True), 32)).float() / 255
        native = TF.pil_to_tensor(TF.center_crop(im, 100)).float() / 255
    assert got.images.shape == (2, 3, 32, 32) and torch.equal(got.images[0], want)
    data.prepare_dataset(
        dataset="small",
        settings={"layout": "imagefolder", "folder": str(root), "crop": 100},
        out={"data": tmp_path / "b"},
    )
    assert torch.equal(data.load_split(tmp_path / "b").images[0], native)


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


# ----------------------------------------------------------------------------------------------
# Following the source; bad input
# ----------------------------------------------------------------------------------------------


def test_prepared_folder_follows_its_source(mirror, tmp_path):
    root = png_folder(mirror, tmp_path / "pngs", range(40))
    cfg = {"layout": "imagefolder", "folder": str(root)}
    dest = tmp_path / "data" / "mycifar"
    stale = dest.parent / ".mycifar.abcd1234.tmp"  # left by a killed preparation
    (stale / "x").mkdir(parents=True)
    data.prepare_dataset(dataset="mycifar", settings=cfg, out={"data": dest})
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
        data.prepare_dataset(dataset="bad", settings=cfg, out={"data": dest})
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
    data.prepare_dataset(dataset="digits", settings=cfg, out={"data": tmp_path / "named"})
    assert data.load_split(tmp_path / "named").labels.tolist() == [0, 1, 1, 0]
    # names that equal their positions read the same both ways: accepted
    root2, labels2, _ = _digit_folder(mirror, tmp_path / "same", "1 0 0 1")
    data.prepare_dataset(
        dataset="digits",
        settings={**cfg, "folder": str(root2), "labels": str(labels2), "classes": ["0", "1"]},
        out={"data": tmp_path / "same_out"},
    )
    assert data.load_split(tmp_path / "same_out").labels.tolist() == [1, 0, 0, 1]
    with pytest.raises(
        DataError,
        match=r"label '1' is ambiguous: class name '1' has index 0, but read as an index it is "
        r"class 1.*names that are not numbers",
    ):
        data.prepare_dataset(
            dataset="digits",
            settings={**cfg, "folder": str(root2), "labels": str(labels2), "classes": ["1", "0"]},
            out={"data": tmp_path / "swapped"},
        )
    # without classes, digits are indices as before
    data.prepare_dataset(
        dataset="digits",
        settings={"layout": "labels", "folder": str(root), "labels": str(labels), "num_classes": 8},
        out={"data": tmp_path / "indices"},
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
    data.prepare_dataset(
        dataset="grey",
        settings={"layout": "imagefolder", "folder": str(root)},
        out={"data": tmp_path / "out"},
    )
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
            dataset="grey",
            settings={"layout": "imagefolder", "folder": str(root)},
            out={"data": tmp_path / "out2"},
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


# ----------------------------------------------------------------------------------------------
# What one test registers (a user dataset) is gone in the next.
# ----------------------------------------------------------------------------------------------


def test_registering_a_dataset_here_does_not_leak_1(tmp_path):
    """With the next test: what one test registers (os.environ, data._REGISTERED) is gone in the next."""
    (tmp_path / "leak" / "a").mkdir(parents=True)
    (tmp_path / "leak" / "b").mkdir()
    data.register_datasets(
        {"leaky": {"layout": "imagefolder", "folder": str(tmp_path / "leak"), "crop": 32}}
    )
    assert data.num_classes("leaky") == 2


def test_registering_a_dataset_here_does_not_leak_2():
    import os

    assert data.CLASSES_ENV not in os.environ and not data._REGISTERED
    with pytest.raises(data.DataError, match=r"dataset 'leaky' is neither built in"):
        data.num_classes("leaky")
