"""Datasets: the real mirror files, the official-archive route, and bad input."""

from __future__ import annotations

import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelrobust import data
from pixelrobust.errors import ChecksumError, DataError
from pixelrobust.io import download, file_digest


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
        data.prepare_dataset("cifar10", {}, dest, mirror=m)
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
        data.prepare_dataset("imagenet", {"source": "sample"}, tmp_path / "out", mirror=m)
    assert not (tmp_path / "out").exists()


# --- the official-download route ----------------------------------------------------------------


def test_download_verifies_checksum(tmp_path):
    src = tmp_path / "file.bin"
    src.write_bytes(b"pixelrobust" * 100)
    good = file_digest(src)
    source = {"url": src.as_uri(), "checksum": good, "algorithm": "sha256"}
    out = download(out={"file": tmp_path / "dl" / "ok.bin"}, source=source)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(ChecksumError, match="expected 0000"):
        download(out={"file": tmp_path / "dl" / "bad.bin"}, source={**source, "checksum": "0" * 64})
    assert not (tmp_path / "dl" / "bad.bin").exists()
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["ok.bin"]


def test_cifar_tarball_route(mirror, mirror_counts, tmp_path, monkeypatch):
    """A tarball in the official layout extracts to the same data as the mirror route."""
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(mirror / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    # Our tarball is not the official one: its md5 is rejected, with the expected md5 named.
    with pytest.raises(ChecksumError, match=data.CIFAR["cifar10"]["md5"]):
        data.prepare_dataset(
            "cifar10", {}, tmp_path / "a", downloaded={"cifar-10-python.tar.gz": archive}
        )
    monkeypatch.setitem(data.CIFAR["cifar10"], "md5", file_digest(archive, "md5"))
    manifest = data.prepare_dataset(
        "cifar10", {}, tmp_path / "b", downloaded={"cifar-10-python.tar.gz": archive}
    )
    counts = mirror_counts["cifar10"]
    assert manifest["counts"] == {"train": counts["train"], "test": counts["test"]} and manifest[
        "source"
    ].startswith("official:")
    ref = data.prepare_dataset("cifar10", {}, tmp_path / "c", mirror=mirror)
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
        "imagenet", {"source": "sample"}, tmp_path / "out", downloaded=downloaded
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
    data.prepare_dataset("imagenet", cfg, tmp_path / "out", mirror=mirror)
    split = data.load_split(tmp_path / "out")
    assert split.labels.tolist() == [0, 2, 4] and split.ids[1] == "ILSVRC2012_val_00000001"
    labels.write_text("ILSVRC2012_val_00000000.JPEG n99999999\n")
    with pytest.raises(DataError, match="n99999999"):
        data.prepare_dataset("imagenet", cfg, tmp_path / "out2", mirror=mirror)


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
        data.prepare_dataset("imagenet", cfg, tmp_path / "out", mirror=mirror)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
