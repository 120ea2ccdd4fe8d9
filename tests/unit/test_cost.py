"""The run's cost estimate (src/pixelrobust/cost.py): counts from first principles, the calibration
cache, the Snakefile hook, progress lines (printed at the start of a real run:
tests/workflow/test_cost_estimate.py)."""

import json
import logging
import math
from types import SimpleNamespace

import pytest

from pixelrobust import cost

CIFAR, IMNET = (32, 32), (224, 224)
CTX = cost.Context(
    {"r20": "cifar10", "mnv2": "imagenet"},
    {"r20": CIFAR, "mnv2": IMNET},
    lambda ds, split: {
        ("cifar10", "test"): 10000,
        ("cifar10", "train"): 50000,
        ("imagenet", "test"): 1000,
    }[ds, split],
)


def small_config() -> dict:
    return {
        "batch_size": 64,
        "chunk_size": 30,
        "threads": 2,
        "device": "cpu",
        "clean_accuracy": {"n_images": 70},
        "onepixel": {
            "n_images": {"cifar10": 25, "imagenet": 3},
            "chunk_size": 10,
            "palette": "corners",
            "segmentation": {"cifar10": {"n_segments": 16}, "imagenet": {"n_segments": 50}},
            "grid_stride": {"cifar10": 1, "imagenet": 8},
            "de": {"popsize": 40, "maxiter": 9},
            "de_regions": 2,
            "sensitivity_segments": [8, 32],
        },
        "gradients": {"split": {"cifar10": "train"}, "n_images": {"cifar10": 100}, "start": {}},
        "masked_pgd": {
            "n_images": {"cifar10": 12},
            "chunk_size": 5,
            "k_percent": [0, 5, 25, 100],
            "masks": ["top", "bottom", "random"],
            "linf": {"steps": 7},
            "l2": None,
        },
        "prm": {
            "lattice": "s2",
            "depth": 2,
            "start_filters": 8,
            "residual": True,
            "first_conv": "ours",
            "train": {
                "images": {"cifar10": {"split": "train", "start": 0, "stop": 100}},
                "epochs": 3,
                "max_steps": None,
                "batch_size": 32,
            },
            "sweep": {"lambdas": [0, 0.5, 1], "n_images": {"cifar10": 20}},
        },
        "defense_eval": {
            "n_images": {"cifar10": 4},
            "chunk_size": 4,
            "defenses": [],
            "protocols": ["graybox"],
            "draws": 3,
            "eot_samples": 5,
            "adaptive_pgd": {"steps": 6, "restarts": 2, "checkpoints": [3, 6]},
            "attack_settings": {"pgd": {"steps": 10}, "onepixel": {"popsize": 10, "maxiter": 4}},
            "defense_settings": {
                "region_based": {"samples": 50},
                "stochastic_prm": {"stacks": [1, 2]},
            },
        },
        "ssim": {
            "n_images": {"imagenet": 3},
            "chunk_size": 2,
            "epsilons": [1e-4, 1e-3],
            "steps": 4,
            "pgd": {"linf": {"eps": [0.01, 0.02, 0.03], "steps": 5}, "l2": None},
        },
        "synthesis": {"n_images": {"cifar10": 7}},
    }


def units(rule, wc, config=None):
    return cost.job_units(rule, wc, config or small_config(), CTX).units


def test_onepixel_counts_from_first_principles():
    # chunk 2 of 25 images in chunks of 10: images 20..24 = 5 images
    u = units("onepixel_search", {"model": "r20", "chunk": "2"})["r20"]
    exhaustive = 32 * 32 * 8  # every pixel x the 8 corners of the RGB cube
    de = 40 * (9 + 1)  # population and 9 generations of it, at the whole budget
    runs = 1 + 2 * 2  # whole image + (top region, equal random subset) x de_regions
    # onepixel.incremental: auto (the default): the map's full batches of 64 on the incremental
    # path (8192 = 128 x 64, all of them), one full batch of fp32 checks (64 random candidates),
    # the clean prediction
    assert u == {
        "fwd": 5 * (1 + runs * de),
        "fwd_incremental": 5 * exhaustive,
        "incremental_check": 5 * 64,
    }
    off = small_config()
    off["onepixel"]["incremental"] = "off"
    u = units("onepixel_search", {"model": "r20", "chunk": "2"}, off)["r20"]
    assert u == {"fwd": 5 * (exhaustive + runs * de + 1)}
    # ImageNet at stride 8: a 28 x 28 grid, 6272 candidates = 98 full batches of 64
    u = units("onepixel_search", {"model": "mnv2", "chunk": "0"})["mnv2"]
    assert u["fwd"] == 3 * (runs * de + 1) and u["fwd_incremental"] == 3 * 28 * 28 * 8
    # at batch 256: 24 full batches (6144) incremental; the check batch and the last 128 in fp32
    big = small_config()
    big["batch_size"] = 256
    u = units("onepixel_search", {"model": "mnv2", "chunk": "0"}, big)["mnv2"]
    assert u["fwd_incremental"] == 3 * 24 * 256 and u["incremental_check"] == 3 * 256
    assert u["fwd"] == 3 * (128 + 1 + runs * de)
    # batch 32: the 64 random checks take two full batches
    assert cost.incremental_candidates(8192, 32) == (8192, 64)
    # one full batch only: the check covers it, no incremental pass runs, everything in fp32
    assert cost.incremental_candidates(8192, 8192) == (0, 0)
    assert cost.incremental_candidates(8192 + 100, 8192) == (0, 0)
    assert cost.incremental_candidates(100, 256) == (0, 0)
    from pixelrobust.onepixel import INCREMENTAL_CHECK

    assert cost.INCREMENTAL_CHECK == INCREMENTAL_CHECK  # cost keeps a copy: it imports fast
    u = units("onepixel_search", {"model": "mnv2", "chunk": "0"}, off)["mnv2"]
    assert u["fwd"] == 3 * (28 * 28 * 8 + runs * de + 1)
    # segment: occlusion of each of 16 regions + the clean prediction, one Grad-CAM++ gradient per image
    assert units("segment", {"model": "r20", "chunk": "0"})["r20"] == {"fwd": 10 * 17, "grad": 10}
    # claim images: occlusion at 16, 8 and 32 segments + the prediction; a CAM per segmentation
    assert units("onepixel_claim_images", {"model": "r20", "chunk": "1"})["r20"] == {
        "fwd": 10 * (1 + 16 + 8 + 32),
        "grad": 10 * 3,
    }
    assert (
        units("onepixel_search", {"model": "r20", "chunk": "3"}) == {}
    )  # past the last chunk: nothing


def test_bf16_de_counts_its_fitness_in_bf16_and_its_checks_in_fp32():
    """onepixel.de.precision: bf16 puts the DE's candidates on the bf16 unit; fp32 keeps the exhaustive
    map, the prediction and 32 random checks per generation of each DE run."""
    cfg = small_config()
    cfg["onepixel"]["de"]["precision"] = "bf16"
    u = units("onepixel_search", {"model": "r20", "chunk": "2"}, cfg)["r20"]
    runs, generations = 1 + 2 * 2, 9 + 1
    assert u == {
        "fwd": 5 * (1 + runs * generations * 32),
        "fwd_incremental": 5 * 32 * 32 * 8,
        "incremental_check": 5 * 64,
        "fwd_bf16": 5 * runs * 40 * generations,
    }
    # and the estimate prices them at the bf16 unit's cost
    costs = {
        "job": 0.0,
        "models": {
            "r20": {"fwd": 0.0, "fwd_bf16": 1.0, "fwd_incremental": 0.0, "incremental_check": 0.0}
        },
    }
    est = cost.estimate([("onepixel_search", {"model": "r20", "chunk": "2"})], cfg, CTX, costs)
    assert est["cpu_seconds"] == 5 * runs * 40 * generations
    from pixelrobust.onepixel import DE_CHECK

    # the search's own number of fp32 checks (cost keeps a copy: it imports fast)
    assert cost.DE_CHECK == DE_CHECK


def test_other_stage_counts_from_first_principles():
    # clean accuracy: 70 images in chunks of 30 -> 30, 30, 10
    assert [
        units("clean_accuracy_chunk", {"model": "r20", "chunk": str(c)})["r20"]["fwd"]
        for c in range(3)
    ] == [30, 30, 10]
    # gradients: one gradient per image and one for the architecture map
    assert units("gradient_map", {"model": "r20"})["r20"] == {"grad": 101}
    # masked PGD, chunk 2 = images 10..11: k=0 attacks nothing, k=5 and 25 each of 3 masks, k=100 one mask
    assert units("masked_pgd", {"model": "r20", "chunk": "2"})["r20"] == {
        "grad": 2 * 7 * 7,
        "fwd": 2 * 7,
    }
    # PRM training: 100 images, batch 32 -> 4 steps per epoch (32, 32, 32, 4 images) x 3 epochs
    assert units("train_prm", {"model": "r20", "variant": "s2-r0"})["r20"] == {
        "prm_grad": 300,
        "grad": 300,
    }
    cfg = small_config()
    cfg["prm"]["train"]["max_steps"] = 5  # one epoch and one batch of the next
    assert units("train_prm", {"model": "r20", "variant": "s2-r0"}, cfg)["r20"] == {
        "prm_grad": 132,
        "grad": 132,
    }
    # PRM sweep: 20 images x 3 lambdas x 3 PRMs (trained, untrained, fill-only)
    assert units("prm_sweep", {"model": "r20"})["r20"] == {"grad": 180, "prm_grad": 180}
    # SSIM: chunk 1 = image 2: 2 epsilons x 4 steps; PGD 3 budgets x 5 steps + a check each; the clean check
    assert units("attack_ssim", {"model": "mnv2", "chunk": "1"})["mnv2"] == {
        "ssim_step": 8,
        "grad": 15,
        "fwd": 3 + 1,
    }
    # synthesis: P1's 25 CIFAR images capped at 7: one SSIM-ball attack of `steps` steps, CAM and gradient each
    assert units("four_maps", {"model": "r20"})["r20"] == {"ssim_step": 7 * 4, "grad": 14}
    assert units("onepixel_tables", {}) == {}  # tables count one job start only


def test_defence_counts_from_first_principles():
    cfg = small_config()
    # undefended only, gray-box PGD: 10 gradient steps per image, one evaluation
    assert units("defense_eval", {"model": "r20", "attack": "pgd", "chunk": "0"}, cfg)["r20"] == {
        "grad": 40,
        "fwd": 4,
    }
    # + region-based (50 samples a query, 3 draws), adaptive too: adaptive PGD (6 steps x 2 restarts) through its
    # differentiable surrogate (5 noise draws a query, not 50 samples x 5), a probe at 2 checkpoints per restart
    cfg["defense_eval"].update(defenses=["region_based"], protocols=["graybox", "adaptive"])
    u = units("defense_eval", {"model": "r20", "attack": "pgd", "chunk": "0"}, cfg)["r20"]
    graybox_grad, graybox_fwd = 4 * 10, 4 * (1 + 3 * 50)
    adaptive_grad = 4 * 12 * 1 + 4 * 12 * 5  # none: plain; region-based: the surrogate's 5 draws
    adaptive_fwd = (4 * 1 + 4 * 4 * 1) + (
        4 * 3 * 50 + 4 * 4 * 50
    )  # final evaluation + checkpoint probes (draw 0)
    assert u == {"grad": graybox_grad + adaptive_grad, "fwd": graybox_fwd + adaptive_fwd}
    # clean: each defence evaluated `draws` times; the stochastic PRM adds its shift-only control and PRM passes
    cfg["defense_eval"].update(defenses=["stochastic_prm"])
    u = units("defense_eval", {"model": "r20", "attack": "clean", "chunk": "0"}, cfg)["r20"]
    assert u == {
        "fwd": 4 * (1 + 3 + 3),
        "prm_fwd": 4 * 3 * 1.5,
    }  # stacks [1, 2]: 1.5 PRM passes a query
    # one pixel: the DE's whole budget per query
    cfg["defense_eval"].update(defenses=[], protocols=["graybox"])
    assert units("defense_eval", {"model": "r20", "attack": "onepixel", "chunk": "0"}, cfg)[
        "r20"
    ] == {"fwd": 4 * 50 + 4}


def test_estimate_multiplies_and_sums_per_stage():
    costs = {"job": 2.0, "models": {"r20": {"fwd": 0.001, "grad": 0.003}}}
    jobs = [
        ("clean_accuracy_chunk", {"model": "r20", "chunk": "0"}),
        ("segment", {"model": "r20", "chunk": "0"}),
        ("onepixel_tables", {}),
    ]
    est = cost.estimate(jobs, small_config(), CTX, costs, parallel=2)
    assert est["stages"]["clean accuracy"] == {"jobs": 1, "seconds": pytest.approx(2 + 30 * 0.001)}
    assert est["stages"]["P1 onepixel"] == {
        "jobs": 2,
        "seconds": pytest.approx(2 + 170 * 0.001 + 10 * 0.003 + 2),
    }
    assert est["cpu_seconds"] == pytest.approx(2 + 0.03 + 4 + 0.17 + 0.03)
    assert est["wall_seconds"] == pytest.approx(est["cpu_seconds"] / 2)
    text = cost.format_estimate(est, "here")
    assert "0:00:03" in text and "P1 onepixel" in text and "P2 ssim" not in text


def test_calibration_cached_per_machine_and_model(tmp_path):
    calls = []

    def measure(spec, config, device, want):
        calls.append((spec["name"], sorted(want)))
        return {u: 0.5 for u in want}

    specs = {"r20": {"name": "r20", "arch": "resnet_cifar", "depth": 20, "num_classes": 10}}
    cache = tmp_path / "cal.json"
    cfg = small_config()
    first = cost.calibrate(specs, cfg, cache, measure=measure, measure_start=lambda: 3.0)
    assert calls == [("r20", ["fwd", "grad"])] and first["job"] == 3.0
    assert first["models"]["r20"] == {
        "fwd": 0.5,
        "grad": 0.5,
    }  # one thread's CPU time, taken as it is
    again = cost.calibrate(specs, cfg, cache, measure=measure, measure_start=lambda: 1 / 0)
    assert len(calls) == 1 and again["models"] == first["models"]  # cached: measured once
    cost.calibrate(
        specs, cfg, cache, {"r20": {"prm_fwd"}}, measure=measure, measure_start=lambda: 1 / 0
    )
    assert calls[-1] == (
        "r20",
        ["fwd", "grad", "prm_fwd", "prm_grad"],
    )  # PRM units asked for: measured
    cost.calibrate(
        specs, cfg, cache, {"r20": {"fwd_bf16"}}, measure=measure, measure_start=lambda: 1 / 0
    )
    assert calls[-1] == ("r20", ["fwd", "fwd_bf16", "grad"])  # bf16 asked for: its own entry
    cost.calibrate(specs, {**cfg, "threads": 1}, cache, measure=measure, measure_start=lambda: 3.0)
    assert len(calls) == 4  # another thread count is another machine entry
    assert len(json.loads(cache.read_text())) == 2


def test_incremental_unit_priced_and_timed_on_the_incremental_path(monkeypatch):
    """The estimate prices the incremental candidates at fwd_incremental, and measure_model times
    that unit by running Incremental itself (a CIFAR ResNet on the CPU), not the full pass."""
    cfg = small_config()
    costs = {
        "job": 0.0,
        "models": {"r20": {"fwd": 0.0, "fwd_incremental": 1.0, "incremental_check": 10.0}},
    }
    est = cost.estimate([("onepixel_search", {"model": "r20", "chunk": "2"})], cfg, CTX, costs)
    assert est["cpu_seconds"] == 5 * (32 * 32 * 8 + 10 * 64)
    import torch

    from pixelrobust import incremental
    from pixelrobust.models import resolve_spec

    calls = []
    real = incremental.Incremental.__call__

    def counted(self, rows, cols, colours):
        calls.append(len(rows))
        return real(self, rows, cols, colours)

    monkeypatch.setattr(incremental.Incremental, "__call__", counted)
    torch.set_num_threads(1)
    spec = resolve_spec("resnet20_cifar10", {})
    got = cost.measure_model(spec, cfg, torch.device("cpu"), {"fwd", "grad", "fwd_incremental"})
    assert set(got) == {"fwd", "grad", "fwd_incremental", "incremental_check"}
    assert math.isfinite(got["fwd_incremental"]) and got["fwd_incremental"] > 0
    assert got["incremental_check"] == got["fwd"]  # the path runs: its checks are full passes
    # a warm-up (the plan) and the best of 3, each a calibration batch of 32 candidates
    assert calls == [32] * 4
    # a model the path does not run, or CUDA: the candidates at the full pass's cost, no extra
    # check (measure_model then prices incremental_check at 0)
    from pixelrobust.models import Classifier, build_model

    calls.clear()
    other = Classifier(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10)),
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
    ).eval()
    x = torch.rand(4, 3, 32, 32)
    assert cost._incremental_cost(other, x, 4, torch.device("cpu"), 0.25) == (False, 0.25)
    r20 = build_model(spec, None, torch.device("cpu"))
    assert cost._incremental_cost(r20, x, 4, torch.device("cuda"), 0.25) == (False, 0.25)
    assert calls == []
    # the key tells an entry with the unit from one without it
    keys = {cost.model_key(spec, cfg, 64, u) for u in ({"fwd"}, {"fwd", "fwd_incremental"})}
    assert len(keys) == 2


def test_measure_model_times_a_real_model(tmp_path):
    from pixelrobust.models import resolve_spec

    spec = resolve_spec("resnet20_cifar10", {})
    cfg = small_config()
    import torch

    torch.set_num_threads(1)
    got = cost.measure_model(spec, cfg, torch.device("cpu"), {"fwd", "grad", "fwd_bf16"})
    assert set(got) == {"fwd", "grad", "fwd_bf16"}
    assert all(math.isfinite(v) and v > 0 for v in got.values())


class FakeJob(SimpleNamespace):
    pass


def test_snakemake_hook_uses_the_jobs_to_run(tmp_path, capsys):
    jobs = [
        FakeJob(
            rule=SimpleNamespace(name="clean_accuracy_chunk"),
            wildcards_dict={"model": "r20", "chunk": "2"},
        )
    ]
    wf = SimpleNamespace(
        dag=SimpleNamespace(needrun_jobs=lambda: jobs),
        resource_settings=SimpleNamespace(cores=4),
        global_resources={"gpu": 1},
    )
    specs = {
        "r20": {
            "name": "r20",
            "arch": "resnet_cifar",
            "depth": 20,
            "num_classes": 10,
            "dataset": "cifar10",
        }
    }
    cache = tmp_path / "cal.json"
    # seed the cache so that nothing is measured: fwd 0.05 s
    import torch

    mkey = cost.machine_key(torch.device("cpu"), 2)
    key = cost.model_key(
        specs["r20"],
        small_config(),
        64,
        set(cost.UNITS)
        - {"prm_fwd", "prm_grad", "ssim_step", "fwd_bf16", "fwd_incremental", "incremental_check"},
    )
    cache.write_text(json.dumps({mkey: {key: {"fwd": 0.05, "grad": 0.1}, "job": 1.0}}))
    out = tmp_path / "estimate.txt"
    est = cost.snakemake_estimate(
        wf, small_config(), specs, CTX.available, out_path=out, cache_path=cache
    )
    assert est["parallel"] == 1  # 4 cores / 2 threads, but one gpu slot
    assert est["stages"]["clean accuracy"]["seconds"] == pytest.approx(
        1.0 + 10 * 0.05
    )  # chunk 2 = 10 images
    assert "clean accuracy" in out.read_text() and "Estimated wall time" in capsys.readouterr().err
    wf.dag.needrun_jobs = lambda: []
    assert (
        cost.snakemake_estimate(
            wf, small_config(), specs, CTX.available, out_path=tmp_path / "x", cache_path=cache
        )
        is None
    )


def test_progress_lines(caplog):
    now = [0.0]
    p = cost.Progress("images", 4, every_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="pixelrobust"):
        now[0] = 30
        p.step()  # under 60 s since the start: no line
        now[0] = 90
        p.step()  # 2 of 4 in 90 s: ETA 90 s
        now[0] = 100
        p.step()
        now[0] = 200
        p.step()  # the last: always a line
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "progress images: 2/4 (50 %), elapsed 0:01:30, ETA 0:01:30",
        "progress images: 4/4 (100 %), elapsed 0:03:20, ETA 0:00:00",
    ]


def test_estimate_only_stops_with_the_estimates_outcome(capsys):
    # an estimate, or nothing left to run: exit 0; a failed estimate: exit 1 (never a failure read as a cost)
    for est, code in (({"total": 1.0}, 0), (None, 0), (False, 1)):
        with pytest.raises(SystemExit) as stop:
            cost.stop_after_estimate(est)
        assert stop.value.code == code
    assert "nothing was run" in capsys.readouterr().err
