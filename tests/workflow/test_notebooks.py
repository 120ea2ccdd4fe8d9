"""The notebooks run top to bottom against the tiny config's results."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import REPO

pytestmark = pytest.mark.workflow
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_one_notebook_per_paper_and_the_synthesis():
    assert [n.stem for n in NOTEBOOKS] == [
        "p1_onepixel",
        "p2_ssim_ball",
        "p3_gradients_prm",
        "synthesis",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_tiny_results(path, tiny_run, monkeypatch):
    monkeypatch.setenv("PIXELROBUST_RESULTS", str(tiny_run / "results"))
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{path.name} is committed with outputs"
    )
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [
        o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]
    assert images, f"{path.name} showed no figure"
