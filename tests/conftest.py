"""Shared fixtures of tests/unit and tests/workflow (one file: a session fixture is built once per session).
Real data comes from the mirror: $PIXELROBUST_MIRROR, else ../shared/data. Plain helpers: tests/helpers/."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY, TWO_JOBS, mirror_path, snakemake
from helpers.figures import (
    _assert_png_is_the_figure,
    _drawn,
    _panels,
    _points,
    _redraw,
    check_cam_distributions,
    check_region_semantics,
    check_robust_compare,
    check_synthesis_matrix,
    check_vulnerability_grid,
)


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = mirror_path()
    if not (path / "cifar-10-batches-py").is_dir():
        pytest.fail(
            f"the tests need the reference data: {path} is not a data mirror. "
            "Set PIXELROBUST_MIRROR to a folder laid out like ../shared/data (see README)."
        )
    return path


@pytest.fixture(scope="session")
def prepared(mirror, tmp_path_factory) -> Path:
    """resources/ built from the mirror once per session: data/<dataset> and weights/<model>.pt."""
    from pixelrobust import data, models

    root = tmp_path_factory.mktemp("resources")
    for ds in data.DATASETS:
        data.prepare_dataset(
            dataset=ds,
            settings={"source": "sample"},
            out={"data": root / "data" / ds},
            mirror=mirror,
        )
    for name in models.MODELS:
        spec = models.resolve_spec(name, {})
        src = models.weights_source(spec, mirror)
        models.get_weights(
            spec=spec,
            source=src["path"],
            out={"weights": root / "weights" / f"{name}.pt"},
            sha256=src["sha256"],
        )
    return root


@pytest.fixture(scope="session")
def resnet20(prepared):
    """The pretrained CIFAR-10 ResNet-20, frozen (no parameter gradients), in eval mode."""
    from pixelrobust import models

    model = models.build_model(
        models.resolve_spec("resnet20_cifar10", {}), prepared / "weights" / "resnet20_cifar10.pt"
    )
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def mobilenet(prepared):
    """The ImageNet MobileNetV2 of the mirror, frozen, in eval mode."""
    from pixelrobust import models

    model = models.build_model(
        models.resolve_spec("mobilenet_v2_imagenet", {}),
        prepared / "weights" / "mobilenet_v2_imagenet.pt",
    )
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def imagenet(prepared):
    """The first four prepared ImageNet sample images and their labels."""
    from pixelrobust import data

    split = data.load_split(prepared / "data" / "imagenet", "test", 0, 4)
    return split.images, split.labels


@pytest.fixture(scope="module")
def cifar_test(prepared):
    """The first 64 prepared CIFAR-10 test images (one load per test module, as before)."""
    from pixelrobust import data

    return data.load_split(prepared / "data" / "cifar10", "test", 0, 64)


@pytest.fixture(scope="session")
def tiny_run(mirror, tmp_path_factory) -> Path:
    """A local run of config/tiny.yaml on the mirror (shared by the workflow and SLURM tests)."""
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake([*TINY, *TWO_JOBS], workdir, mirror)
    return workdir


@pytest.fixture(scope="session")
def drawn():
    """``drawn(ax)``: counts of what an axes draws from data (see ``_drawn``)."""
    return _drawn


@pytest.fixture
def capture_figures(monkeypatch):
    """The matplotlib Figures the figure functions build, in order, instead of saved files; closed afterwards.

    Every figure function ends in ``style.save(fig, png, pdf)``; this replaces that call."""
    import matplotlib.pyplot as plt

    from pixelrobust.figures import style

    figures = []
    monkeypatch.setattr(style, "save", lambda fig, png, pdf=None: figures.append(fig))
    yield figures
    for fig in figures:
        plt.close(fig)


@pytest.fixture(scope="session")
def figure_checks():
    """The per-figure checks above, for unit tests: ``check_region_semantics``, ``check_vulnerability_grid``,
    ``check_cam_distributions``, ``check_synthesis_matrix``, ``png_is_the_figure``, ``points``, ``panels``."""
    from types import SimpleNamespace

    return SimpleNamespace(
        check_region_semantics=check_region_semantics,
        check_vulnerability_grid=check_vulnerability_grid,
        check_cam_distributions=check_cam_distributions,
        check_synthesis_matrix=check_synthesis_matrix,
        check_robust_compare=check_robust_compare,
        png_is_the_figure=_assert_png_is_the_figure,
        points=_points,
        panels=_panels,
    )


@pytest.fixture(scope="session")
def redraw(mirror):
    """``redraw(run, name, config_files=None)``: draw ``results/figures/<name>.png`` of ``run`` again from the
    inputs its rule reads, check every panel against them and the PNG against the Figure (see ``_redraw``)."""
    return lambda run, name, config_files=None: _redraw(run, name, config_files, mirror)


# --- the mirror's own row counts, read here (not through pixelrobust) ---------------------------


@pytest.fixture(scope="session")
def mirror_counts(mirror) -> dict:
    """Images per dataset and split in the mirror's files, read independently of the code under test:
    CIFAR pickles unpickled here (rows of ``data``, equal to the number of labels), ImageNet sample
    images counted by class (the wnid that begins each file name, one per class of imagenet_class_index.json). ``{"cifar10": {"test": n, "train": n, "train_batches": [n1, ..., n5]},
    "cifar100": {...}, "imagenet": {"test": n}}``; a valid mirror may hold any subset of the official
    rows (the full files: 10000 test and 50000 train rows)."""
    import pickle

    def rows(path, key):
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        assert d["data"].shape[0] == len(d[key]), (
            f"{path}: {d['data'].shape[0]} rows of data, {len(d[key])} labels"
        )
        return int(d["data"].shape[0])

    c10, c100 = mirror / "cifar-10-batches-py", mirror / "cifar-100-python"
    batches = [rows(c10 / f"data_batch_{i}", "labels") for i in range(1, 6)]
    # ImageNet sample: one image per class, named <wnid>_<class name>.<ext>; counted by wnid against the mirror's
    # imagenet_class_index.json (not by the file-suffix rule of data._list_images, which is under test)
    import json
    from collections import Counter

    wnids = {w for w, _ in json.loads((mirror / "imagenet_class_index.json").read_text()).values()}
    per_class = Counter(
        p.name.split("_", 1)[0]
        for p in (mirror / "imagenet-sample-images").iterdir()
        if p.is_file() and p.name.split("_", 1)[0] in wnids
    )
    assert per_class and max(per_class.values()) == 1, (
        f"imagenet-sample-images: more than one image of {per_class.most_common(1)}"
    )
    return {
        "cifar10": {
            "test": rows(c10 / "test_batch", "labels"),
            "train": sum(batches),
            "train_batches": batches,
        },
        "cifar100": {
            "test": rows(c100 / "test", "fine_labels"),
            "train": rows(c100 / "train", "fine_labels"),
        },
        "imagenet": {"test": sum(per_class.values())},
    }


# --- user datasets: registry kept to each test ------------------------------------------------------
@pytest.fixture(autouse=True)
def _dataset_registry(monkeypatch):
    """data.register_datasets (called by config.check) writes PIXELROBUST_DATASET_CLASSES into os.environ and
    fills data._REGISTERED: start every test with neither and undo both after it, so no test sees another's
    user datasets (script jobs a test starts still get what it registered)."""
    from pixelrobust import data

    monkeypatch.setenv(
        data.CLASSES_ENV, "{}"
    )  # recorded, so that teardown restores the variable as it was
    monkeypatch.delenv(data.CLASSES_ENV)
    data._REGISTERED.clear()
    yield
    data._REGISTERED.clear()
