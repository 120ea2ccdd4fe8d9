"""Config validation: the schema names bad keys; cross-field checks name how to fix them."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from helpers import REPO, SCHEMA
from helpers.images import merge, png_folder, tiny_with
from pixelrobust import config as prconfig
from pixelrobust import data
from pixelrobust.errors import ConfigError, DataError


def load(name="config.yaml"):
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "tiny.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load(name)
    validate(cfg, str(SCHEMA))
    specs = prconfig.check(cfg)
    pair = (
        {"resnet20_ehanw_standard", "resnet20_ehanw_pgd"} if name == "tiny.yaml" else set()
    )  # robust_compare's pair
    assert (
        set(specs)
        == {"resnet20_cifar10", "resnet56_cifar10", "resnet56_cifar100", "mobilenet_v2_imagenet"}
        | pair
    )


def test_defaults_fill_an_empty_config():
    cfg = {}
    validate(cfg, str(SCHEMA))
    assert cfg["seed"] == 0 and cfg["device"] == "auto" and cfg["data_mirror"] is None
    assert cfg["datasets"]["imagenet"] == {
        "source": "sample",
        "folder": None,
        "labels": None,
        "resize": 256,
        "crop": 224,
    }
    assert list(cfg["models"]) == [
        "resnet20_cifar10",
        "resnet56_cifar10",
        "resnet56_cifar100",
        "mobilenet_v2_imagenet",
    ]
    assert cfg["clean_accuracy"] == {"models": None, "n_images": None}


@pytest.mark.parametrize(
    "patch,message",
    [
        ({"bogus_key": 1}, "'bogus_key' was unexpected"),
        ({"batch_size": "large"}, "'large' is not of type 'integer'"),
        ({"chunk_size": 0}, "0 is less than the minimum of 1"),
        ({"device": "gpu"}, "'gpu' does not match"),
        ({"seed": -1}, "-1 is less than the minimum of 0"),
        ({"datasets": {"imagenet": {"source": "web"}}}, "'web' is not one of"),
        (
            {"datasets": {"mnist": {}}},
            "'layout' is a required property",
        ),  # a user dataset (your own images)
        ({"datasets": {"mnist": {"layout": "lmdb", "folder": "x"}}}, "'lmdb' is not one of"),
        (
            {"datasets": {"my-data": {"layout": "imagefolder", "folder": "x"}}},
            "'my-data' does not match",
        ),
        ({"models": {"resnet20_cifar10": {"dataset": 10}}}, "10 is not of type 'string'"),
        ({"models": {"resnet20_cifar10": {"sha256": "xyz"}}}, "'xyz' does not match"),
        (
            {"models": {"resnet20_cifar10": {"std": [0.2, 0.0, 0.2]}}},
            "0.0 is less than or equal to the minimum of 0",
        ),
        ({"models": {"resnet20_cifar10": {"weigths": "x.pt"}}}, "'weigths' was unexpected"),
        ({"clean_accuracy": {"n_images": 0}}, "0 is less than the minimum of 1"),
        ({"models": {}}, "should be non-empty"),
        ({"masked_pgd": {"k_percent": [5, 150]}}, "150 is greater than the maximum of 100"),
        ({"masked_pgd": {"masks": ["top", "middle"]}}, "'middle' is not one of"),
        (
            {"masked_pgd": {"linf": {"eps": -0.1, "alpha": 0.01, "steps": 10}}},
            "-0.1 is less than the minimum of 0",
        ),
        ({"prm": {"lattice": "s3"}}, "'s3' is not one of"),
        ({"prm": {"train": {"recon_ratio": 2}}}, "2 is greater than the maximum of 1"),
        ({"gradients": {"split": {"imagenet": "train"}}}, "'train' is not one of"),
        ({"defense_eval": {"attacks": ["fgsm"]}}, "'fgsm' is not one of"),
        ({"defense_eval": {"protocols": []}}, "should be non-empty"),
        ({"defense_eval": {"attacks": []}}, "should be non-empty"),
        (
            {"defense_eval": {"attack_settings": {"pgd": {"eps": 0}}}},
            "0 is less than or equal to the minimum of 0",
        ),
        (
            {"defense_eval": {"defense_settings": {"region_based": {"samples": 0}}}},
            "0 is less than the minimum of 1",
        ),
        (
            {
                "defense_eval": {
                    "defense_settings": {"stochastic_prm": {"pool": {"lattices": ["s3"]}}}
                }
            },
            "'s3' is not one of",
        ),
        (
            {
                "defense_eval": {
                    "defense_settings": {"stochastic_prm": {"pool": {"lattices": ["s2", "s2"]}}}
                }
            },
            "has non-unique elements",
        ),
        (
            {"defense_eval": {"defense_settings": {"stochastic_prm": {"pool": {"replicates": 0}}}}},
            "0 is less than the minimum of 1",
        ),
        (
            {"defense_eval": {"defense_settings": {"stochastic_prm": {"shifts": "random"}}}},
            "'random' is not one of",
        ),
        ({"ssim": {"epsilons": [0.001, 1.0]}}, "1.0 is greater than or equal to the maximum of 1"),
        ({"ssim": {"epsilons": [-0.01]}}, "-0.01 is less than the minimum of 0"),
        ({"ssim": {"epsilons": []}}, "should be non-empty"),
        ({"ssim": {"solver": "ecos"}}, "'ecos' is not one of"),
        ({"ssim": {"tol": 0.05}}, "0.05 is greater than the maximum of 0.01"),
        ({"synthesis": {"epsilon": 0}}, "0 is less than or equal to the minimum of 0"),
        ({"synthesis": {"topk_percent": 120}}, "120 is greater than the maximum of 100"),
        (
            {"synthesis": {"models": ["resnet20_cifar10", "resnet20_cifar10"]}},
            "has non-unique elements",
        ),
    ],
)
def test_schema_errors_name_the_key(patch, message):
    cfg = load()
    cfg.update(copy.deepcopy(patch))
    with pytest.raises(WorkflowError, match=message):
        validate(cfg, str(SCHEMA))


def test_cross_field_errors():
    cfg = load()
    validate(cfg, str(SCHEMA))
    bad = copy.deepcopy(cfg)
    bad["clean_accuracy"]["models"] = ["resnet20_cifar10", "vgg16"]
    with pytest.raises(ConfigError, match=r"clean_accuracy.models lists 'vgg16'"):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["datasets"]["imagenet"]["source"] = "folder"
    with pytest.raises(ConfigError, match=r"datasets.imagenet.folder must be set"):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["datasets"]["imagenet"]["crop"] = 300
    with pytest.raises(ConfigError, match="must not exceed"):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["models"]["my_net"] = {"dataset": "cifar10"}
    with pytest.raises(ConfigError, match="models.my_net.arch"):
        prconfig.check(bad)


def test_p3_cross_field_errors():
    cfg = load("gpu.yaml")  # every stage's models (the CPU-sized default leaves some out)
    validate(cfg, str(SCHEMA))
    bad = copy.deepcopy(cfg)
    bad["gradients"]["models"] = ["resnet20_cifar10"]
    with pytest.raises(
        ConfigError, match="masked_pgd.models lists 'resnet56_cifar10', which needs a gradient map"
    ):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["prm"]["models"] = ["mobilenet_v2_imagenet"]
    bad["prm"]["train"]["images"]["imagenet"] = {"split": "test", "start": 10}
    with pytest.raises(
        ConfigError,
        match=r"prm.train.images.imagenet trains on test images from 10.*start >= prm.sweep.n_images.imagenet",
    ):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    del bad["masked_pgd"]["n_images"]["cifar100"]
    with pytest.raises(
        ConfigError, match="masked_pgd.n_images has no entry for dataset 'cifar100'"
    ):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["prm"]["models"] = ["vgg16"]
    with pytest.raises(ConfigError, match="prm.models lists 'vgg16'"):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["defense_eval"]["models"] = ["resnet20_cifar10", "vgg16"]
    with pytest.raises(ConfigError, match="defense_eval.models lists 'vgg16'"):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    del bad["prm"]["train"]["images"]["cifar100"]
    with pytest.raises(
        ConfigError,
        match="stochastic_prm, which needs a PRM trained for resnet56_cifar100: add prm.train.images.cifar100",
    ):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["defense_eval"]["defense_settings"]["stochastic_prm"]["shift_sizes"] = [
        1,
        2,
    ]  # shifts is still lattice
    with pytest.raises(
        ConfigError,
        match=r"shift_sizes \(\[1, 2\]\) goes with shifts: sizes, and only with it \(shifts is 'lattice'\)",
    ):
        prconfig.check(bad)
    bad["defense_eval"]["defense_settings"]["stochastic_prm"].update(
        shifts="sizes", shift_sizes=None
    )
    with pytest.raises(ConfigError, match=r"shift_sizes \(None\) goes with shifts: sizes"):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["prm"]["train"]["images"]["imagenet"] = {"split": "test", "start": 5}
    bad["prm"]["sweep"]["n_images"]["imagenet"] = 5
    with pytest.raises(
        ConfigError,
        match=r"defense_eval evaluates test images 0..19; set prm.train.images.imagenet.start >= defense_eval.n_images",
    ):
        prconfig.check(bad)


def test_p2_cross_field_errors():
    cfg = load()
    validate(cfg, str(SCHEMA))
    bad = copy.deepcopy(cfg)
    bad["ssim"]["compare"]["epsilon"] = 0.05
    with pytest.raises(
        ConfigError, match=r"ssim.compare.epsilon \(0.05\) must be one of ssim.epsilons"
    ):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["ssim"]["stride"] = 9
    with pytest.raises(ConfigError, match=r"ssim.stride \(9\) exceeds ssim.window \(8\)"):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["ssim"]["model"] = "resnet20_cifar10"
    with pytest.raises(ConfigError, match="ssim.n_images has no entry for dataset 'cifar10'"):
        prconfig.check(bad)
    bad["ssim"]["n_images"]["cifar10"] = 10
    bad["ssim"]["window"] = 40
    with pytest.raises(ConfigError, match="larger than resnet20_cifar10's 32x32 images"):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["ssim"]["model"] = "vgg16"
    with pytest.raises(ConfigError, match="ssim.model is 'vgg16'"):
        prconfig.check(bad)
    ok = copy.deepcopy(cfg)
    ok["ssim"]["model"] = None  # P2 switched off
    prconfig.check(ok)


def test_synthesis_cross_field_errors():
    cfg = load()
    validate(cfg, str(SCHEMA))
    bad = copy.deepcopy(cfg)
    bad["synthesis"]["models"] = ["resnet56_cifar100"]  # a known model that P1 does not search
    with pytest.raises(
        ConfigError,
        match="synthesis.models lists 'resnet56_cifar100', which is not under onepixel.models",
    ):
        prconfig.check(bad)
    bad["synthesis"]["models"] = ["vgg16"]
    with pytest.raises(
        ConfigError, match="synthesis.models lists 'vgg16', which is not under models"
    ):
        prconfig.check(bad)
    bad = copy.deepcopy(cfg)
    bad["ssim"]["model"] = None  # P2 off: its window settings are still checked for the synthesis
    bad["ssim"]["window"] = 40
    with pytest.raises(
        ConfigError,
        match=r"ssim.window \(40\) is larger than resnet20_cifar10's 32x32 images \(synthesis.models\)",
    ):
        prconfig.check(bad)
    ok = copy.deepcopy(cfg)
    ok["synthesis"]["models"] = []  # synthesis switched off
    prconfig.check(ok)


# ----------------------------------------------------------------------------------------------
# User datasets in the config: every missing key named, bad keys, the class count and input size
# checked against the model.
# ----------------------------------------------------------------------------------------------


def check(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    given = copy.deepcopy(cfg)
    prconfig.validate(cfg, SCHEMA)
    return prconfig.check(cfg, given=given)


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


# ----------------------------------------------------------------------------------------------
# P3's cross-field checks: an untestable ordering, a gradient map fitted on the attacked images.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patch,message",
    [
        (
            {"k_percent": [100]},
            r"masked_pgd.k_percent \[100\] has no size strictly between 0 and 100",
        ),
        ({"k_percent": [0, 100]}, "has no size strictly between 0 and 100"),
        ({"k_percent": [50, 100]}, r"has no size in \(0, masked_pgd.verdict_max_k = 25\]"),
        ({"masks": ["top", "random"]}, "needs both 'top' and 'bottom'"),
    ],
)
def test_config_refuses_an_untestable_ordering(patch, message):
    import copy

    import yaml
    from snakemake.utils import validate

    from helpers import REPO, SCHEMA
    from pixelrobust import config as prconfig

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(cfg, str(SCHEMA))
    assert cfg["prm"]["first_conv"] == "ours" and cfg["prm"]["sweep"]["accuracy_margin"] == 0.05
    prconfig.check(cfg)
    bad = copy.deepcopy(cfg)
    bad["masked_pgd"].update(patch)
    with pytest.raises(ConfigError, match=message):
        prconfig.check(bad)
    bad["masked_pgd"]["models"] = []  # no masked PGD, no ordering claim: nothing to refuse
    prconfig.check(bad)


def test_config_refuses_a_gradient_map_fitted_on_the_attacked_images():
    """The ImageNet map comes from the test split: it must start after the images masked PGD attacks."""
    import copy

    import yaml
    from snakemake.utils import validate

    from helpers import REPO, SCHEMA
    from pixelrobust import config as prconfig

    for name in ("config.yaml", "tiny.yaml", "paper.yaml"):  # every shipped config keeps them apart
        cfg = yaml.safe_load((REPO / "config" / name).read_text())
        validate(cfg, str(SCHEMA))
        prconfig.check(cfg)
        assert cfg["gradients"]["start"]["imagenet"] >= cfg["masked_pgd"]["n_images"]["imagenet"], (
            name
        )
    bad = copy.deepcopy(cfg)
    bad["gradients"]["start"] = {"imagenet": bad["masked_pgd"]["n_images"]["imagenet"] - 1}
    with pytest.raises(
        ConfigError,
        match=r"gradients.start.imagenet is \d+: .* set gradients.start.imagenet >= "
        r"masked_pgd.n_images.imagenet",
    ):
        prconfig.check(bad)
    del bad["gradients"]["start"]  # no start: the map would begin at test image 0
    with pytest.raises(ConfigError, match="gradients.start.imagenet is 0"):
        prconfig.check(bad)
    bad["gradients"]["split"]["cifar10"] = (
        "test"  # a CIFAR map from the test split is refused the same way
    )
    bad["gradients"]["start"] = {"imagenet": 10**6}
    with pytest.raises(ConfigError, match="gradients.start.cifar10 is 0"):
        prconfig.check(bad)


# ----------------------------------------------------------------------------------------------
# The shipped configs through the command-line check.
# ----------------------------------------------------------------------------------------------


def test_shipped_configs_pass_the_cli_check():
    for name in ("config.yaml", "tiny.yaml", "paper.yaml"):
        assert prconfig.main([str(REPO / "config" / name)]) == 0


# ----------------------------------------------------------------------------------------------
# config/gpu.yaml, the GPU sizing in its own file.
# ----------------------------------------------------------------------------------------------


def test_gpu_config_is_a_valid_config():
    """config/gpu.yaml (the GPU sizing in its own file) passes the schema and the config check."""
    from helpers import REPO
    from pixelrobust import config as prconfig

    assert prconfig.main([str(REPO / "config" / "gpu.yaml")]) == 0
    text = (REPO / "config" / "gpu.yaml").read_text()
    assert (
        "--configfile config/gpu.yaml" in text.split("\nseed:")[0]
    )  # the header says how to run it


# ---- robust_compare's settings (robust-vs-standard pairs, untrained copies) ----------------------------------


def _config(pairs, **lists):
    from helpers import REPO, SCHEMA
    from pixelrobust import config as prconfig

    cfg = prconfig.load_yaml(REPO / "config" / "config.yaml")
    prconfig._merge(cfg, prconfig.load_yaml(REPO / "config" / "robust_pair.yaml"))
    for k, v in lists.items():
        cfg[k]["models"] = v
    cfg["robust_compare"] = {"pairs": pairs}
    prconfig.validate(cfg, SCHEMA)
    return cfg


PAIR = {"standard": "resnet20_ehanw_standard", "robust": "resnet20_ehanw_pgd"}


def test_config_accepts_the_pair_and_refuses_bad_pairs():
    from pixelrobust import config as prconfig

    prconfig.check(_config([PAIR]))
    with pytest.raises(
        ConfigError, match=r"robust_compare.pairs\[0\].*resnet20_ehanw_pgd.*synthesis.models"
    ):
        prconfig.check(_config([PAIR], synthesis=["resnet20_ehanw_standard"]))
    cfg = _config([{"standard": "resnet20_ehanw_standard", "robust": "mobilenet_v2_imagenet"}])
    cfg["models"]["mobilenet_v2_imagenet"] = {}
    with pytest.raises(ConfigError, match=r"robust_compare.pairs\[0\].*cifar10.*imagenet"):
        prconfig.check(cfg)
    with pytest.raises(ConfigError, match=r"robust_compare.pairs\[0\].*not under models"):
        prconfig.check(
            _config([{"standard": "resnet20_ehanw_standard", "robust": "no_such_model"}])
        )
    with pytest.raises(ConfigError, match=r"robust_compare.pairs\[0\].*the same model"):
        prconfig.check(
            _config([{"standard": "resnet20_ehanw_pgd", "robust": "resnet20_ehanw_pgd"}])
        )


def test_config_warns_on_a_pair_of_two_architectures():
    import warnings

    from pixelrobust import config as prconfig

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prconfig.check(_config([PAIR]))  # one architecture: no warning
    cfg = _config(
        [{"standard": "resnet20_cifar10", "robust": "resnet20_ehanw_pgd"}],
        onepixel=["resnet20_cifar10", "resnet20_ehanw_pgd"],
        gradients=["resnet20_cifar10", "resnet20_ehanw_pgd"],
        masked_pgd=["resnet20_cifar10", "resnet20_ehanw_pgd"],
        synthesis=["resnet20_cifar10", "resnet20_ehanw_pgd"],
    )
    with pytest.warns(UserWarning, match=r"robust_compare.pairs\[0\].*one architecture"):
        prconfig.check(cfg)


def test_config_refuses_a_non_positive_number_of_untrained_copies():
    from helpers import REPO, SCHEMA
    from pixelrobust import config as prconfig

    cfg = prconfig.load_yaml(REPO / "config" / "config.yaml")
    prconfig.validate(cfg, SCHEMA)
    assert cfg["robust_compare"]["untrained_copies"] == 30
    for bad in (0, -1):
        cfg = prconfig.load_yaml(REPO / "config" / "config.yaml")
        cfg["robust_compare"]["untrained_copies"] = bad
        with pytest.raises(ConfigError, match=r"robust_compare\.untrained_copies"):
            prconfig.validate(cfg, SCHEMA)
