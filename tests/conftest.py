"""Shared fixtures. Real data comes from the mirror: $PIXELROBUST_MIRROR, else ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def mirror_path() -> Path:
    value = os.environ.get("PIXELROBUST_MIRROR") or str(REPO.parent / "shared" / "data")
    return Path(value).resolve()


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
        data.prepare_dataset(ds, {"source": "sample"}, root / "data" / ds, mirror=mirror)
    for name in models.MODELS:
        spec = models.resolve_spec(name, {})
        src = models.weights_source(spec, mirror)
        models.prepare_weights(spec, src["path"], root / "weights" / f"{name}.pt", src["sha256"])
    return root
