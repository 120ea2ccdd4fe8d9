"""Bad inputs and faults: each gets a clear, named error (or a correct result), never exit 0 with a wrong number.

Every row of the catalogue ``docs/errors.md`` is a case here (same id): the case provokes the
fault for real and returns what the user sees; the test checks that each `key phrase` of the
row's "what you see" column is in it. So the catalogue stays true: a changed message fails here.
Cases marked ``snakemake`` run Snakemake (dry runs, or one preparation job of three images).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import REPO, SCHEMA, TINY, snakemake
from pixelrobust import config as prconfig
from pixelrobust import data, evaluate, models, runtime
from pixelrobust.errors import ChecksumError, ConfigError, DataError, ModelError, PixelrobustError

CATALOGUE = REPO / "docs" / "errors.md"


def tiny():
    return yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())


def raised(exc_type, fn, *args, **kwargs) -> str:
    """Call ``fn``; it must raise ``exc_type`` (a PixelrobustError); return the message."""
    assert issubclass(exc_type, PixelrobustError)
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    return str(info.value)


def checked(cfg: dict) -> str:
    """Validate and cross-check a config as common.smk does; return the ConfigError's message."""
    given = copy.deepcopy(cfg)

    def run():
        prconfig.validate(cfg, SCHEMA)
        prconfig.check(cfg, given=given)

    return raised(ConfigError, run)


def image_folder(mirror: Path, root: Path, n: int = 3) -> tuple[Path, Path, dict]:
    """A folder source of ``n`` real sample images and its label file."""
    folder = root / "val"
    folder.mkdir()
    for i, f in enumerate(sorted((mirror / "imagenet-sample-images").iterdir())[:n]):
        shutil.copy(f, folder / f"img{i}.JPEG")
    labels = root / "labels.txt"
    labels.write_text("".join(f"img{i}.JPEG {i}\n" for i in range(n)))
    return (
        folder,
        labels,
        {
            "source": "folder",
            "folder": str(folder),
            "labels": str(labels),
            "resize": 256,
            "crop": 224,
        },
    )


def smk_output(args, workdir, mirror, **kw) -> tuple[int, str]:
    proc = snakemake(args, workdir, mirror, check=False, timeout=300, **kw)
    return proc.returncode, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------
# The cases: (request, tmp_path) -> what the user sees
# ----------------------------------------------------------------------------------------------

CASES = {}
SNAKEMAKE_CASES = set()


def case(name, runs_snakemake=False):
    def register(fn):
        CASES[name] = fn
        if runs_snakemake:
            SNAKEMAKE_CASES.add(name)
        return fn

    return register


@case("yaml-syntax-default", runs_snakemake=True)
def _(request, tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("seed: 0\nbatch_size: 64\n  chunk_size: 8\n")
    rc, out = smk_output(["-n"], tmp_path, request.getfixturevalue("mirror"))
    assert rc != 0 and "config/config.yaml, line 3" in out
    return out


@case("yaml-syntax-configfile", runs_snakemake=True)
def _(request, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("seed: 0\nbatch_size: 64\n  chunk_size: 8\n")
    mirror = request.getfixturevalue("mirror")
    rc, out = smk_output(["--configfile", str(bad), "-n"], tmp_path, mirror)
    # Snakemake reads --configfile before the workflow: its own message, which names neither file nor line
    assert rc != 0 and "mine.yaml" not in out and "line 3" not in out, out
    rc, verbose = smk_output(
        ["--configfile", str(bad), "-n", "--verbose"], tmp_path, mirror
    )  # its traceback does
    assert rc != 0
    check = subprocess.run(
        [sys.executable, "-m", "pixelrobust.config", str(bad)], capture_output=True, text=True
    )
    assert check.returncode == 1 and "mine.yaml, line 3" in check.stderr
    tab = tmp_path / "tab.yaml"  # a tab in the indentation: the same three messages
    tab.write_text("seed: 0\nonepixel:\n\tmodels: [resnet20_cifar10]\n")
    tabbed = subprocess.run(
        [sys.executable, "-m", "pixelrobust.config", str(tab)], capture_output=True, text=True
    )
    assert (
        tabbed.returncode == 1
        and "tab.yaml, line 3, column 1: YAML syntax error: found character '\\t'" in tabbed.stderr
    )
    return out + verbose + check.stderr


@case("unknown-key", runs_snakemake=True)
def _(request, tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text((REPO / "config" / "tiny.yaml").read_text() + "bogus: 1\n")
    rc, out = smk_output(
        ["--configfile", str(cfg), "-n"], tmp_path, request.getfixturevalue("mirror")
    )
    assert rc != 0 and len(out.splitlines()) < 15, out  # was a 2,175-line dump of schema and config
    return out


@case("misspelt-key")
def _(request, tmp_path):
    cfg = tiny()
    cfg["onepixel"]["chunksize"] = cfg["onepixel"].pop("chunk_size")
    return checked(cfg)


@case("mean-0-255")
def _(request, tmp_path):
    cfg = tiny()
    cfg["models"]["resnet20_cifar10"] = {
        "mean": [125.3, 123.0, 113.9],
        "std": [0.247, 0.243, 0.261],
    }
    msg = checked(cfg)
    assert "[0.4914, 0.4824, 0.4467]" in msg  # the values divided by 255
    return msg


@case("std-0-255")
def _(request, tmp_path):
    return raised(ConfigError, models.resolve_spec, "resnet20_cifar10", {"std": [63.0, 62.1, 66.7]})


@case("near-chance")
def _(request, tmp_path):
    """The 0-255 constants reach the clean-accuracy job anyway (e.g. a spec built in code): it fails there."""
    prepared = request.getfixturevalue("prepared")
    spec = models.resolve_spec("resnet20_cifar10", {})
    wrong = {**spec, "mean": [v * 255 for v in spec["mean"]], "std": [v * 255 for v in spec["std"]]}
    args = {
        "data": prepared / "data" / "cifar10",
        "weights": prepared / "weights" / "resnet20_cifar10.pt",
        "bounds": (0, 64),
        "batch_size": 256,
        "device": "cpu",
    }
    msg = raised(
        ModelError,
        evaluate.clean_accuracy_chunk,
        out={"csv": tmp_path / "bad.csv"},
        spec=wrong,
        **args,
    )
    assert not (tmp_path / "bad.csv").exists()
    good = evaluate.clean_accuracy_chunk(
        out={"csv": tmp_path / "good.csv"}, spec=spec, **args
    )  # the right constants pass
    assert good.top1.mean() > 0.8
    return msg


@case("dataset-relabelled")
def _(request, tmp_path):
    cfg = tiny()
    cfg["models"]["resnet20_cifar10"] = {"dataset": "cifar100"}
    msg = checked(cfg)
    assert "onepixel.n_images" not in msg  # it used to suggest adding onepixel.n_images.cifar100
    return msg


@case("default-key")
def _(request, tmp_path):
    return checked({"models": {"resnet20_cifar10": {}}})


@case("device-cuda-absent", runs_snakemake=True)
def _(request, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc, out = smk_output(
        [*TINY, "--config", "device=cuda", "--cores", "1", "resources/data/cifar10"],
        tmp_path,
        request.getfixturevalue("mirror"),
    )
    assert rc != 0 and not (tmp_path / "resources").exists()  # stopped before the first job
    return out


@case("device-cuda-index")
def _(request, tmp_path):
    mp = request.getfixturevalue("monkeypatch")
    mp.setattr(torch.cuda, "is_available", lambda: True)
    mp.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.resolve_device("cuda:0") == torch.device("cuda:0")
    return raised(ConfigError, runtime.resolve_device, "cuda:3")


@case("folder-source-edited", runs_snakemake=True)
def _(request, tmp_path):
    """Labels edited, a line added, an image replaced after preparation: the workflow prepares again."""
    mirror = request.getfixturevalue("mirror")
    folder, labels, _ = image_folder(mirror, tmp_path)
    labels.write_text("img0.JPEG 0\nimg1.JPEG 1\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        yaml.safe_dump(
            {
                "datasets": {
                    "imagenet": {"source": "folder", "folder": str(folder), "labels": str(labels)}
                }
            }
        )
    )
    args = [*TINY, str(mine), "--cores", "1", "resources/data/imagenet"]
    work = tmp_path / "work"
    work.mkdir()
    rc, out = smk_output(args, work, mirror)
    assert rc == 0, out
    assert data.load_split(work / "resources/data/imagenet").labels.tolist() == [0, 1]
    manifest = work / "resources/data/imagenet/manifest.json"

    def backdate(
        *paths,
    ):  # older than the prepared folder: modification times alone would not rerun
        old = manifest.stat().st_mtime_ns - 10**9
        for p in paths:
            os.utime(p, ns=(old, old))

    originals = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (labels, folder / "img1.JPEG")}
    seen = []
    for edit in (
        lambda: labels.write_text("img0.JPEG 0\nimg1.JPEG 1\nimg2.JPEG 2\n"),  # a line added
        lambda: shutil.copy(folder / "img2.JPEG", folder / "img1.JPEG"),
    ):  # an image replaced
        edit()
        backdate(labels, folder / "img1.JPEG")
        rc, out = smk_output([*args, "-n"], work, mirror)
        assert rc == 0 and "prepare_dataset" in out and "Nothing to be done" not in out, out
        seen.append(out)
        for p, (raw, ns) in originals.items():  # undo: the same files again, nothing to do
            p.write_bytes(raw)
            os.utime(p, ns=(ns, ns))
    rc, out = smk_output([*args, "-n"], work, mirror)
    assert "Nothing to be done" in out, out
    # a label changed, a line added and an image replaced: the real run prepares again
    labels.write_text("img0.JPEG 5\nimg1.JPEG 1\nimg2.JPEG 2\n")
    shutil.copy(folder / "img2.JPEG", folder / "img1.JPEG")
    backdate(labels, folder / "img1.JPEG")
    rc, out = smk_output(args, work, mirror)
    assert rc == 0 and "prepare_dataset" in out, out
    split = data.load_split(work / "resources/data/imagenet")
    assert split.labels.tolist() == [5, 1, 2]
    assert torch.equal(split.images[1], split.images[2])  # the replaced image is the new one
    return "\n".join(seen)


@case("labels-stale")
def _(request, tmp_path):
    """Used without the workflow, a prepared folder whose label file changed says that it is stale."""
    folder, labels, cfg = image_folder(request.getfixturevalue("mirror"), tmp_path)
    labels.write_text("img0.JPEG 0\nimg1.JPEG 1\n")
    data.prepare_dataset(
        dataset="imagenet",
        settings=cfg,
        out={"data": tmp_path / "out"},
        mirror=request.getfixturevalue("mirror"),
    )
    before = data.source_fingerprint("imagenet", cfg, None)
    labels.write_text("img0.JPEG 0\nimg1.JPEG 1\nimg2.JPEG 2\n")  # a line added
    assert data.source_fingerprint("imagenet", cfg, None) != before
    assert data.available_images("imagenet", cfg, None) == 3  # the workflow now asks for 3 images
    return raised(DataError, data.load_split, tmp_path / "out")


@case("image-edited")
def _(request, tmp_path):
    mirror = request.getfixturevalue("mirror")
    folder, labels, cfg = image_folder(mirror, tmp_path)
    data.prepare_dataset(
        dataset="imagenet", settings=cfg, out={"data": tmp_path / "out"}, mirror=mirror
    )
    before = data.source_fingerprint("imagenet", cfg, None)
    shutil.copy(folder / "img0.JPEG", folder / "img2.JPEG")
    assert data.source_fingerprint("imagenet", cfg, None) != before
    assert len(data.load_split(tmp_path / "out", "test", 0, 2)) == 2  # untouched images still load
    return raised(DataError, data.load_split, tmp_path / "out", "test", 2, 3)


@case("zero-byte-jpeg")
def _(request, tmp_path):
    folder, labels, cfg = image_folder(request.getfixturevalue("mirror"), tmp_path)
    (folder / "img1.JPEG").write_bytes(b"")
    msg = raised(
        DataError,
        data.prepare_dataset,
        dataset="imagenet",
        settings=cfg,
        out={"data": tmp_path / "out"},
        mirror=request.getfixturevalue("mirror"),
    )
    assert (
        "img1.JPEG" in msg and not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    )
    return msg


@case("listed-image-missing")
def _(request, tmp_path):
    folder, labels, cfg = image_folder(request.getfixturevalue("mirror"), tmp_path)
    (folder / "img2.JPEG").unlink()
    # the prepare_dataset job's param: found when Snakemake builds the DAG, before any job
    return raised(DataError, data.source_fingerprint, "imagenet", cfg, None)


@case("labels-bom")
def _(request, tmp_path):
    mirror = request.getfixturevalue("mirror")
    folder, labels, cfg = image_folder(mirror, tmp_path)
    labels.write_bytes(
        "img0.JPEG 3\r\nimg1.JPEG 1\r\nimg2.JPEG 2\r\n".encode("utf-8-sig")
    )  # Notepad's UTF-8
    data.prepare_dataset(
        dataset="imagenet", settings=cfg, out={"data": tmp_path / "out"}, mirror=mirror
    )
    split = data.load_split(tmp_path / "out")
    assert split.labels.tolist() == [3, 1, 2] and split.ids[0] == "img0"
    return f"prepared: {len(split)} images, labels {split.labels.tolist()}"


@case("labels-duplicate")
def _(request, tmp_path):
    folder, labels, cfg = image_folder(request.getfixturevalue("mirror"), tmp_path)
    labels.write_text("img0.JPEG 0\nimg1.JPEG 1\nimg0.JPEG 2\n")
    return raised(DataError, data.read_label_file, labels, {})


@case("labels-not-utf8")
def _(request, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_bytes("caf\xe9.JPEG 1\n".encode("latin-1"))
    return raised(DataError, data.read_label_file, labels, {})


@case("killed-preparation")
def _(request, tmp_path):
    """SIGKILL while resources/data/imagenet is assembled; the next preparation removes the leftover."""
    mirror = request.getfixturevalue("mirror")
    dest = tmp_path / "data" / "imagenet"
    code = (
        "import sys; from pathlib import Path; from pixelrobust import data; "
        "data.prepare_dataset(dataset='imagenet', settings={'source': 'sample'}, out={'data': sys.argv[1]}, "
        "mirror=Path(sys.argv[2]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(dest), str(mirror)])
    try:
        deadline = time.monotonic() + 120
        while (
            not list(dest.parent.glob(".imagenet.*.tmp/images/*"))
            and time.monotonic() < deadline
            and proc.poll() is None
        ):
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = list(dest.parent.glob(".imagenet.*.tmp"))
    assert len(left) == 1 and not dest.exists(), "the kill should leave the half-built folder"
    data.prepare_dataset(
        dataset="imagenet", settings={"source": "sample"}, out={"data": dest}, mirror=mirror
    )
    after = sorted(p.name for p in dest.parent.iterdir())
    assert after == ["imagenet"], after
    return f"left by the kill: {left[0].name}; after the rerun: {after}; stale temporary removed"


@case("prepared-cifar-damaged")
def _(request, tmp_path):
    src = request.getfixturevalue("prepared") / "data" / "cifar10"
    dest = tmp_path / "resources" / "data" / "cifar10"
    shutil.copytree(src, dest)
    raw = (dest / "test_batch").read_bytes()
    (dest / "test_batch").write_bytes(raw[: len(raw) // 2])
    msg = raised(DataError, data.load_split, dest, "test", 0, 10)
    assert f"delete the folder {dest}" in msg and "data_mirror" not in msg
    return msg


@case("prepared-manifest-damaged")
def _(request, tmp_path):
    dest = tmp_path / "cifar10"
    shutil.copytree(request.getfixturevalue("prepared") / "data" / "cifar10", dest)
    (dest / "manifest.json").write_text('{"dataset": "cifar10", "cou')
    return raised(DataError, data.load_split, dest)


@case("prepared-image-damaged")
def _(request, tmp_path):
    dest = tmp_path / "imagenet"
    shutil.copytree(request.getfixturevalue("prepared") / "data" / "imagenet", dest)
    first = sorted((dest / "images").iterdir())[0]
    first.write_bytes(first.read_bytes()[:1000])
    return raised(DataError, data.load_split, dest, "test", 0, 2)


@case("mirror-pickle-truncated")
def _(request, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(
        request.getfixturevalue("mirror") / "cifar-10-batches-py", mirror / "cifar-10-batches-py"
    )
    batch = mirror / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:5000])
    return raised(
        DataError,
        data.prepare_dataset,
        dataset="cifar10",
        settings={},
        out={"data": tmp_path / "out"},
        mirror=mirror,
    )


@case("mirror-image-altered")
def _(request, tmp_path):
    src = request.getfixturevalue("mirror")
    mirror = tmp_path / "mirror"
    (mirror / "imagenet-sample-images").mkdir(parents=True)
    shutil.copy(src / "imagenet_class_index.json", mirror)
    first = sorted((src / "imagenet-sample-images").iterdir())[0]
    (mirror / "imagenet-sample-images" / first.name).write_bytes(first.read_bytes()[:-10])
    return raised(
        ChecksumError,
        data.prepare_dataset,
        dataset="imagenet",
        settings={"source": "sample"},
        out={"data": tmp_path / "out"},
        mirror=mirror,
    )


@case("weights-wrong-architecture")
def _(request, tmp_path):
    prepared = request.getfixturevalue("prepared")
    spec = models.resolve_spec("resnet56_cifar10", {})
    return raised(
        ModelError, models.build_model, spec, prepared / "weights" / "resnet20_cifar10.pt"
    )


@case("weights-truncated")
def _(request, tmp_path):
    prepared = request.getfixturevalue("prepared")
    bad = tmp_path / "w.pt"
    bad.write_bytes((prepared / "weights" / "resnet20_cifar10.pt").read_bytes()[:4000])
    return raised(ModelError, models.build_model, models.resolve_spec("resnet20_cifar10", {}), bad)


def wnid_folder(mirror: Path, root: Path, n: int = 2) -> dict:
    """A user ImageFolder of ``n`` real sample images (root/<wnid>/<file>; their sizes differ)."""
    for f in sorted((mirror / "imagenet-sample-images").iterdir())[:n]:
        (root / f.name.split("_", 1)[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f.name.split("_", 1)[0] / f.name)
    return {"layout": "imagefolder", "folder": str(root)}


@case("user-dataset-mixed-sizes")
def _(request, tmp_path):
    cfg = wnid_folder(request.getfixturevalue("mirror"), tmp_path / "mine")
    return raised(
        DataError,
        data.prepare_dataset,
        dataset="mydata",
        settings=cfg,
        out={"data": tmp_path / "out"},
    )


@case("user-dataset-broken-image")
def _(request, tmp_path):
    cfg = {
        **wnid_folder(request.getfixturevalue("mirror"), tmp_path / "mine"),
        "resize": 256,
        "crop": 224,
    }
    next((tmp_path / "mine").rglob("*.JPEG")).write_bytes(b"")
    return raised(
        DataError,
        data.prepare_dataset,
        dataset="mydata",
        settings=cfg,
        out={"data": tmp_path / "out"},
    )


@case("user-dataset-keys-missing")
def _(request, tmp_path):
    cfg = tiny()
    cfg["datasets"]["mydata"] = {
        **wnid_folder(request.getfixturevalue("mirror"), tmp_path / "mine"),
        "class_index": "imagenet",
        "resize": 256,
        "crop": 224,
    }
    cfg["models"]["mine"] = {
        "arch": "mobilenet_v2",
        "dataset": "mydata",
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "weights": "x.pt",
    }
    cfg["onepixel"]["models"] = [*cfg["onepixel"]["models"], "mine"]
    return checked(cfg)


@case("user-dataset-undescribed")
def _(request, tmp_path):
    cfg = tiny()
    cfg["models"]["mine"] = {
        "arch": "mobilenet_v2",
        "dataset": "mydata",
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "weights": "x.pt",
    }
    return checked(cfg)


# ----------------------------------------------------------------------------------------------
# The catalogue
# ----------------------------------------------------------------------------------------------


def catalogue() -> dict[str, list[str]]:
    """{case id: the `key phrases` of its "what you see" column} from docs/errors.md."""
    rows = {}
    for line in CATALOGUE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`([a-z0-9-]+)`", cells[0]) if len(cells) >= 4 else None
        if m:
            rows[m.group(1)] = re.findall(r"`([^`]+)`", cells[2])
    return rows


def test_catalogue_lists_every_case_once():
    rows = catalogue()
    assert set(rows) == set(CASES), (
        f"docs/errors.md rows without a case: {set(rows) - set(CASES)}; cases without a row: {set(CASES) - set(rows)}"
    )
    assert all(rows.values()), [k for k, v in rows.items() if not v]


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.workflow) if n in SNAKEMAKE_CASES else n for n in CASES],
)
def test_case_shows_what_the_catalogue_says(name, request, tmp_path):
    seen = CASES[name](request, tmp_path)
    for phrase in catalogue()[name]:
        assert phrase in seen, f"{name}: docs/errors.md promises {phrase!r}; the user sees:\n{seen}"
