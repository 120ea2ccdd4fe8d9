"""A user ImageFolder through the workflow: the DAG of every stage with a model over it, and its preparation."""

from __future__ import annotations

import pytest
import torch
import yaml

from helpers import TINY, snakemake
from helpers.images import cifar_rows, merge, row_of, tiny_with
from pixelrobust import data


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
