"""config/own_models.yaml: three models that are not built in (torchvision by name at ImageNet size, timm on an
ImageFolder of CIFAR-10 PNGs, a Python entry point) planned through every stage of the default target, through
config alone (issue #27's "Done when"). The end-to-end run itself (minutes) is in config/README.md, "Your own
models, end to end"; here the plan (a dry run over untrained checkpoints that tools/demo_checkpoints.py writes)
and one real stage on the ImageFolder model.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import defaultdict

import numpy as np
import pytest
import torch

from helpers import REPO, TINY, snakemake

# one --configfile with both files (a second --configfile flag would replace the first)
CONFIGS = [*TINY, str(REPO / "config" / "own_models.yaml")]
MODELS = ("mnv3s_demo", "resnet10t_demo", "smallcnn_demo")
# the entry-point model's module (examples/demo_nets.py) must be importable by the workflow and its jobs
ENV = {
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO / "examples"), os.environ.get("PYTHONPATH")])
    )
}

_spec = importlib.util.spec_from_file_location(
    "demo_checkpoints", REPO / "tools" / "demo_checkpoints.py"
)
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)

# Every rule of the default target that runs once per model (per model and chunk, attack, ...); P2's (attack_ssim,
# cam) run on ssim.model only, the ImageNet-size one.
PER_MODEL = {
    "get_weights",
    "clean_accuracy_chunk",
    "segment",
    "onepixel_search",
    "onepixel_claim_images",
    "p1_vulnerability_grid",
    "gradient_map",
    "masked_pgd",
    "train_prm",
    "prm_sweep",
    "p3_prm_training",
    "p3_prm_lambda",
    "defense_eval",
    "four_maps",
}
P2 = {"attack_ssim", "cam"}


@pytest.fixture(scope="module")
def run_dir(mirror, tmp_path_factory):
    """A working directory with the CIFAR-10 PNG folder and untrained (seeded random) checkpoints, written by
    the tool where the overlay points."""
    root = tmp_path_factory.mktemp("own")
    assert (
        demo.main(
            ["--directory", str(root), "--mirror", str(mirror), "--random", "--png-images", "128"]
        )
        == 0
    )
    return root


def dry_run_wildcards(stdout: str) -> dict[str, list[dict]]:
    """Rule name -> the wildcards of each job a dry run lists."""
    jobs, rule = defaultdict(list), None
    for line in stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
            jobs[rule].append({})
            continue
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and rule is not None:
            jobs[rule][-1] = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
    return jobs


def test_dry_run_plans_every_stage_for_each_own_model(run_dir, mirror):
    proc = snakemake([*CONFIGS, "--cores", "1", "-n"], run_dir, mirror, env=ENV)
    jobs = dry_run_wildcards(proc.stdout)
    for rule in PER_MODEL:
        models = {j.get("model") for j in jobs[rule]}
        assert models == set(MODELS), (
            f"rule {rule}: jobs for {sorted(map(str, models))}, want {MODELS}"
        )
    for rule in P2:
        assert {j.get("model") for j in jobs[rule]} == {"mnv3s_demo"}, rule
    assert {j["dataset"] for j in jobs["prepare_dataset"]} == {"imagenet", "cifar10", "cifar10png"}
    # every (model, attack) cell of the defence table: clean and tiny's five attacks, one chunk per model
    cells = {(j["model"], j["attack"]) for j in jobs["defense_eval"]}
    assert cells == {
        (m, a) for m in MODELS for a in ("clean", "onepixel", "jsma", "deepfool", "cw", "pgd")
    }
    # the stage-wide rules that read them, and the report
    for rule in (
        "onepixel_tables",
        "masked_pgd_tables",
        "prm_tables",
        "defense_tables",
        "ssim_tables",
        "synthesis_tables",
        "summary",
        "html_report",
    ):
        assert len(jobs[rule]) == 1, rule


def test_untrained_checkpoints_fit_their_config_and_the_folder_holds_the_cifar_rows(
    run_dir, mirror
):
    """The tool's files are what the config asks for: each checkpoint loads strictly into the architecture the
    overlay names (models.build_model), and the PNG folder's images are the CIFAR-10 test rows, by class name."""
    from PIL import Image

    from pixelrobust import config as prconfig
    from pixelrobust import data, models

    cfg = prconfig.load_yaml(REPO / "config" / "own_models.yaml")
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        data.register_datasets(cfg["datasets"])
        for name in MODELS:
            spec = models.resolve_spec(name, cfg["models"][name])
            model = models.build_model(spec, spec["weights"])
            side = 224 if spec["dataset"] == "imagenet" else 32
            assert model(torch.zeros(1, 3, side, side)).shape == (1, spec["num_classes"])
    finally:
        os.chdir(cwd)
    pixels, labels, names = demo.cifar_rows(mirror)
    folder = run_dir / cfg["datasets"]["cifar10png"]["folder"]
    files = sorted(folder.glob("*/*.png"))
    assert len(files) == 128 and sorted(names) == names  # sorted folders = CIFAR-10's label order
    for f in files[::17]:
        row = int(f.stem)
        assert f.parent.name == names[labels[row]]
        np.testing.assert_array_equal(
            np.asarray(Image.open(f)), pixels[row].reshape(3, 32, 32).transpose(1, 2, 0)
        )


def test_timm_model_on_the_image_folder_gets_its_gradient_map_from_the_configured_images(
    run_dir, mirror
):
    """One real stage (seconds): rule gradient_map of the timm model on the ImageFolder, through the overlay.
    The map must be the mean over images and channels of |dCE/dx| (P3's dataset map) of the folder's images
    gradients.start.cifar10png .. + n_images, in ImageFolder order (class folders sorted, files sorted in each),
    labelled by sorted class folder: computed here with autograd on the PNGs read by PIL, not by pixelrobust."""
    import timm
    from PIL import Image

    from pixelrobust import config as prconfig

    snakemake(
        [
            *CONFIGS,
            "--config",
            "estimate=False",  # no timing calibration (seconds per model) for one job
            "--cores",
            "1",
            "results/p3/gradients/resnet10t_demo.npz",
        ],
        run_dir,
        mirror,
        env=ENV,
    )
    got = np.load(run_dir / "results" / "p3" / "gradients" / "resnet10t_demo.npz")
    cfg = prconfig.load_yaml(REPO / "config" / "own_models.yaml")
    start, n = cfg["gradients"]["start"]["cifar10png"], cfg["gradients"]["n_images"]["cifar10png"]
    assert (str(got["split"]), int(got["start"]), int(got["n_images"])) == ("test", start, n)
    folder = run_dir / cfg["datasets"]["cifar10png"]["folder"]
    classes = sorted(p.name for p in folder.iterdir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((folder / name).iterdir())]
    files = files[start : start + n]
    x = torch.stack(
        [
            torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255).permute(2, 0, 1)
            for f, _ in files
        ]
    ).requires_grad_(True)
    y = torch.tensor([c for _, c in files])
    spec_cfg = cfg["models"]["resnet10t_demo"]
    net = timm.create_model(spec_cfg["arch"].split(":", 1)[1], num_classes=len(classes))
    net.load_state_dict(torch.load(run_dir / spec_cfg["weights"], weights_only=True))
    net.eval()
    mean, std = (torch.tensor(spec_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    torch.nn.functional.cross_entropy(net((x - mean) / std), y, reduction="sum").backward()
    want = x.grad.abs().mean(dim=1).mean(dim=0).double().numpy()
    assert want.max() > 0
    np.testing.assert_allclose(got["dataset_map"], want, rtol=1e-4, atol=1e-9)
    assert got["architecture_map"].shape == (32, 32) and np.isfinite(got["architecture_map"]).all()
