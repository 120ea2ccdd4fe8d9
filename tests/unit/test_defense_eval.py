"""P3's defence table: per-image rows on real images, chunk invariance, adaptive PGD, the pooled table, the verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from pixelrobust import data
from pixelrobust.defense_eval import (
    CHUNK_COLUMNS,
    CONTROLS,
    DEFENSES,
    SATURATION_COLUMNS,
    TABLE_COLUMNS,
    adaptive_pgd,
    defense_chunk,
    defense_rate,
    defense_table,
    pivot,
    saturation_table,
)
from pixelrobust.defenses import build_defense
from pixelrobust.models import freeze
from pixelrobust.pgd import PGD
from pixelrobust.prm import PRM
from pixelrobust.stats import clopper_pearson, wilson_ci
from pixelrobust.summary import p3_defense

SETTINGS = {
    "stochastic_prm": {"lambdas": [0, 0.5, 1], "shifts": "lattice"},
    "region_based": {"radius": 0.02, "samples": 8, "batch_size": 8},
    "randomization": {"scale": [0.9, 1.0]},
    "pixel_deflection": {"deflections": 10, "window": 3, "sigma": 0.04},
}
APGD = {"steps": 4, "alpha": 0.01, "restarts": 2, "checkpoints": [2]}


@pytest.fixture(scope="module")
def images(prepared):
    return data.load_split(prepared / "data" / "cifar10", "test", 0, 25)


@pytest.fixture(scope="module")
def prm():
    torch.manual_seed(0)
    return freeze(PRM("s2", 2, 8, residual=True))


def chunk(
    resnet20,
    split,
    prm,
    attack,
    settings=None,
    protocols=("graybox", "adaptive"),
    seed=0,
    draws=2,
    start=0,
    stop=6,
    batch_size=64,
    defenses=None,
):
    return defense_chunk(
        resnet20,
        split.images[start:stop],
        split.labels[start:stop],
        split.ids[start:stop],
        attack=attack,
        attack_settings=settings or {},
        defenses=SETTINGS if defenses is None else defenses,
        protocols=list(protocols),
        eot_samples=2,
        seed=seed,
        batch_size=batch_size,
        draws=draws,
        adaptive_pgd_settings=APGD,
        prms=[prm],
    )


def test_pgd_cells_on_real_images(resnet20, images, prm):
    df = chunk(resnet20, images, prm, "pgd", {"steps": 5, "alpha": 0.01, "eps": 0.031})
    assert list(df.columns) == CHUNK_COLUMNS
    final = df[df.trace_restart < 0]
    gray = final[final.protocol == "graybox"]
    assert set(gray.defense) == set(DEFENSES) | set(CONTROLS)
    assert set(final[final.protocol == "adaptive"].defense) == set(DEFENSES) | {
        "prm_shift_only"
    }  # randomness alone, attacked too
    # one row per image and draw: randomised defences 2 draws, deterministic ones 1
    sizes = final.groupby(["defense", "protocol"]).size()
    assert (
        sizes["stochastic_prm", "graybox"] == sizes["prm_shift_only", "graybox"] == 12
        and sizes["none", "graybox"] == 6
    )
    assert sizes["transfer_none", "graybox"] == 6 and sizes["region_based", "adaptive"] == 12
    top = final.groupby(["defense", "protocol"]).correct.mean()
    assert (
        top["none", "graybox"] <= 1 / 6 and top["none", "adaptive"] <= 1 / 6
    )  # white-box PGD at 8/255 breaks it
    # adaptive PGD (4 steps x 2 restarts) records each restart at its checkpoints (2 and the final 4) on draw 0
    trace = df[(df.trace_restart >= 0) & (df.defense == "randomization")]
    assert sorted(set(zip(trace.trace_restart, trace.trace_step))) == [
        (0, 2),
        (0, 4),
        (1, 2),
        (1, 4),
    ]
    assert (trace.draw == 0).all() and len(trace) == 4 * 6
    assert (final.seconds >= 0).all() and final.seconds.sum() > 0
    again = chunk(
        resnet20,
        images,
        prm,
        "pgd",
        {"steps": 5, "alpha": 0.01, "eps": 0.031},
        protocols=("graybox",),
    )
    assert again.drop(columns="seconds").equals(
        gray.drop(columns="seconds").reset_index(drop=True)
    ), "seeded runs reproduce"


def test_per_image_draws_do_not_depend_on_the_chunking(resnet20, images, prm):
    """The issue's test: every randomised defence evaluated in chunks of 1 and of 25 (and another batch size)
    gives the same per-image results, draw by draw (the adversarial images themselves come from the attacks,
    whose batched float arithmetic is not bit-stable across batch sizes; the defences' draws are)."""
    whole = chunk(resnet20, images, prm, "clean", draws=2, stop=25)
    ones = pd.concat(
        [
            chunk(resnet20, images, prm, "clean", draws=2, start=i, stop=i + 1, batch_size=1)
            for i in range(25)
        ]
    )
    key = ["defense", "image_id", "draw"]
    a = whole.sort_values(key).reset_index(drop=True)[key + ["correct"]]
    b = ones.sort_values(key).reset_index(drop=True)[key + ["correct"]]
    assert len(a) == 25 * (1 + 5 * 2) and a.equals(b)
    # not vacuous: the untrained PRM's draws (λ 0, 0.5, 1) disagree on some image
    prm_rows = a[a.defense == "stochastic_prm"].groupby("image_id").correct
    assert (prm_rows.min() != prm_rows.max()).any()
    other = chunk(
        resnet20, images, prm, "clean", draws=2, stop=25, batch_size=7
    )  # another batch size
    assert other.sort_values(key).reset_index(drop=True)[key + ["correct"]].equals(a)


def test_adaptive_pgd_restarts_keep_the_worst_image_and_match_plain_pgd(resnet20, images):
    x, y, ids = images.images[:6], images.labels[:6], images.ids[:6]
    # one restart from the image on the undefended model is the authors' PGD (no random start)
    adv, _, trace = adaptive_pgd(
        resnet20,
        x,
        y,
        ids,
        eps=0.01,
        alpha=0.003,
        steps=3,
        restarts=1,
        checkpoints=[3],
        seed=0,
        batch_size=4,
        probe=lambda a, which: np.ones(len(which), bool),
    )
    ref = PGD(resnet20, eps=0.01, alpha=0.003, steps=3, random_start=False)(x, y)
    assert torch.allclose(adv, ref, atol=1e-6) and [(r, t) for r, t, _, _ in trace] == [
        (0, 3),
        (0, 3),
    ]
    # with restarts, each image keeps the restart of lowest true-class log-probability: adding a restart never
    # raises it, and at 10 steps a random start beats the start at the image on some image (restart 0 wins at 3)
    logp = []
    for restarts in (1, 2, 3):
        adv2, _, _ = adaptive_pgd(
            resnet20,
            x,
            y,
            ids,
            eps=0.01,
            alpha=0.003,
            steps=10,
            restarts=restarts,
            checkpoints=[],
            seed=0,
            batch_size=6,
        )
        with torch.no_grad():
            logp.append(resnet20(adv2).log_softmax(1).gather(1, y[:, None]).squeeze(1))
    assert (
        (logp[1] <= logp[0] + 1e-4).all()
        and (logp[2] <= logp[1] + 1e-4).all()
        and (logp[2] < logp[0] - 0.01).any()
    )
    assert (adv2 - x).abs().max() <= 0.01 + 1e-6


def test_adaptive_pgd_with_eot_does_not_depend_on_the_batch(resnet20, images, prm):
    """EOT draws fresh randomness per call, keyed to the image ids: batches of 1 and of 4 give the same images."""
    x, y, ids = images.images[:4], images.labels[:4], images.ids[:4]

    def run(batch):
        model = build_defense(
            "randomization", resnet20, {"scale": [0.8, 1.0]}, seed=5, eot_samples=2
        )
        return adaptive_pgd(
            model,
            x,
            y,
            ids,
            eps=0.02,
            alpha=0.005,
            steps=3,
            restarts=2,
            checkpoints=[],
            seed=1,
            batch_size=batch,
        )[0]

    assert torch.allclose(run(1), run(4), atol=1e-5)


def test_bad_cells_are_refused(resnet20, images, prm):
    with pytest.raises(ValueError, match="unknown attack"):
        chunk(resnet20, images, prm, "fgsm")
    with pytest.raises(ValueError, match="protocols"):
        chunk(resnet20, images, prm, "pgd", protocols=("whitebox",))
    with pytest.raises(ValueError, match="draws must be >= 1"):
        chunk(resnet20, images, prm, "clean", draws=0)
    with pytest.raises(ValueError, match="set defense_eval.attack_settings.pgd.norm: linf"):
        chunk(resnet20, images, prm, "pgd", {"norm": "l2"})
    with pytest.raises(ValueError, match=r"checkpoints \[9\] lie outside 1..steps \(4\)"):
        defense_chunk(
            resnet20,
            images.images[:2],
            images.labels[:2],
            images.ids[:2],
            attack="pgd",
            attack_settings={},
            defenses={},
            protocols=["adaptive"],
            eot_samples=1,
            seed=0,
            batch_size=2,
            adaptive_pgd_settings={"steps": 4, "checkpoints": [9]},
        )


def test_at_least_one_defence_beats_none_under_graybox_pgd(resnet20, images, tmp_path):
    """Real ResNet-20, 24 real CIFAR-10 images, gray-box PGD at 2/255: some input transformation recovers images
    (paired interval of defended minus undefended top-1 above 0, and at least 6 images more). Not at the config's
    PGD (eps 0.031, alpha 0.1 in normalised units, 10 steps): there randomisation, pixel deflection and the
    region-based classifier (config settings) keep 0 of these 24 images, as does none (measured 2026-11-29), so
    that budget cannot show a defence working; the stochastic PRM needs trained PRMs, too slow for a unit test.
    Checked to fail when every transformation defence is replaced by the bare classifier."""
    defenses = {
        "randomization": SETTINGS["randomization"],
        "pixel_deflection": SETTINGS["pixel_deflection"],
    }
    df = defense_chunk(
        resnet20,
        images.images[:24],
        images.labels[:24],
        images.ids[:24],
        attack="pgd",
        attack_settings={"eps": 2 / 255, "alpha": 0.5 / 255, "steps": 10},
        defenses=defenses,
        protocols=["graybox"],
        eot_samples=1,
        seed=0,
        batch_size=64,
        draws=2,
    )
    df.to_csv(tmp_path / "chunk.csv", index=False)
    t = defense_table(
        {"m": [str(tmp_path / "chunk.csv")]}, {"m": "cifar10"}, n_boot=1000, seed=0
    ).set_index("defense")
    assert t.loc["none", "top1"] <= 0.25  # the attack works on the undefended model
    best = t.drop(index="none").sort_values("effect_low").iloc[-1]
    assert best.effect_low > 0 and (best.top1 - t.loc["none", "top1"]) * 24 >= 6, t[
        ["top1", "effect", "effect_low"]
    ]


def test_defense_rate():
    assert defense_rate(0.9, 0.1, 0.9) == 1 and defense_rate(0.9, 0.1, 0.1) == 0
    assert defense_rate(0.9, 0.1, 0.5) == pytest.approx(0.5)
    assert math.isnan(defense_rate(0.9, 0.9, 0.5))  # the attack took nothing


def _rows(defense, attack, protocol, correct, draws=1):
    """Per-image rows: ``correct[i]`` is the number of correct draws of image i."""
    return [
        {
            "image_id": f"img-{i}",
            "label": 0,
            "defense": defense,
            "attack": attack,
            "protocol": protocol,
            "draw": d,
            "correct": int(d < c),
            "seconds": 0.5,
            "trace_restart": -1,
            "trace_step": -1,
        }
        for i, c in enumerate(correct)
        for d in range(draws)
    ]


def _constructed(tmp_path, n=20):
    """20 images split in two chunks. Clean: none all right, the PRM 18 (cost 0.1). Gray-box PGD: none 0, the
    PRM-crafted images transfer_none 8, stochastic PRM on them right in both draws on 14 images (6 more)."""
    rows = (
        _rows("none", "clean", "clean", [1] * n)
        + _rows("stochastic_prm", "clean", "clean", [2] * 18 + [0] * 2, 2)
        + _rows("none", "pgd", "graybox", [0] * n)
        + _rows("transfer_none", "pgd", "graybox", [1] * 8 + [0] * 12)
        + _rows("stochastic_prm", "pgd", "graybox", [2] * 14 + [0] * 6, 2)
        + _rows("none", "pgd", "adaptive", [0] * n)
        + _rows("stochastic_prm", "pgd", "adaptive", [1] * 3 + [0] * 17, 2)
    )
    df = pd.DataFrame(rows, columns=CHUNK_COLUMNS)
    first = df.image_id.isin([f"img-{i}" for i in range(0, n, 2)])
    paths = [str(tmp_path / "c0.csv"), str(tmp_path / "c1.csv")]
    df[first].to_csv(paths[0], index=False)
    df[~first].to_csv(paths[1], index=False)
    return paths


def test_table_pools_images_and_draws_with_intervals(tmp_path):
    t = defense_table({"m": _constructed(tmp_path)}, {"m": "cifar10"}, n_boot=2000, seed=0)
    assert list(t.columns) == TABLE_COLUMNS
    cell = t.set_index(["defense", "attack", "protocol"])
    g = cell.loc["stochastic_prm", "pgd", "graybox"]
    assert (g.n_images, g.draws, g.n, g.k) == (20, 2, 40, 28) and g.top1 == pytest.approx(0.7)
    assert (g.ci_low, g.ci_high) == pytest.approx(wilson_ci(14, 20))  # images as units
    # against the transfer control on the same PRM-crafted images: 14 - 8 = 6 images of 20
    assert (
        g.reference == "transfer_none"
        and g.reference_top1 == pytest.approx(0.4)
        and g.effect == pytest.approx(0.3)
    )
    # every image is 0 or 1 in both rows: the exact paired interval (stats.paired_binary_ci); 6 of 20 pairs
    # discordant, all for the PRM: the share q of discordant pairs in CP(6 of 20) and their share pi for the PRM in
    # CP(6 of 6) = [0.0125 ** (1/6), 1], both at 97.5 %; the difference q(2 pi - 1) at the box's corners
    q_hi = clopper_pearson(6, 20, 0.975)[1]
    assert (g.effect_low, g.effect_high) == pytest.approx(
        (q_hi * (2 * 0.0125 ** (1 / 6) - 1), q_hi)
    )
    assert g.clean_top1 == pytest.approx(0.9) and g.defense_rate == pytest.approx(0.7)
    assert g.effect_discordant == 6  # what SUMMARY's exact detectable effect needs
    # the adaptive PRM's scores are shares of 2 draws (3 images at 1/2): a bootstrap interval, no discordant count
    assert np.isnan(cell.loc["stochastic_prm", "pgd", "adaptive"].effect_discordant)
    tr = cell.loc["transfer_none", "pgd", "graybox"]
    assert (
        tr.reference == "none"
        and tr.effect == pytest.approx(0.4)
        and tr.clean_top1 == pytest.approx(1.0)
    )
    a = cell.loc["stochastic_prm", "pgd", "adaptive"]
    assert a.reference == "none" and a.effect == pytest.approx(3 / 40) and a.effect_low >= 0
    c = cell.loc["stochastic_prm", "clean", "adaptive"]  # the clean column is in both protocols
    # 2 images of 20 lost, both discordant pairs against the PRM: q in CP(2 of 20), pi in CP(0 of 2) =
    # [0, 1 - 0.0125 ** (1/2)] (97.5 % each): the interval crosses 0 (two images are no evidence)
    q_hi = clopper_pearson(2, 20, 0.975)[1]
    assert (c.effect, c.effect_low, c.effect_high) == pytest.approx(
        (-0.1, -q_hi, q_hi * (1 - 2 * 0.0125**0.5))
    )
    assert cell.loc["none", "clean", "graybox"].top1 == 1
    assert np.isnan(cell.loc["none", "pgd", "graybox"].effect)
    assert cell.loc["none", "pgd", "graybox"].seconds == pytest.approx(10.0)
    grid = pivot(t)["graybox", "cifar10", "m"]
    assert list(grid.index) == ["none", "stochastic_prm", "transfer_none"] and list(
        grid.columns
    ) == ["clean", "pgd"]


def test_saturation_table_reads_the_trace(tmp_path):
    rows = []
    for r, t, right in [
        (0, 10, [1, 1, 1, 0]),
        (0, 100, [1, 0, 0, 0]),
        (1, 10, [1, 1, 0, 0]),
        (1, 100, [0, 0, 0, 1]),
    ]:
        rows += [
            {**x, "trace_restart": r, "trace_step": t}
            for x in _rows("randomization", "pgd", "adaptive", right)
        ]
    rows += _rows("randomization", "pgd", "adaptive", [0, 0, 0, 0], 2)
    path = tmp_path / "c.csv"
    pd.DataFrame(rows, columns=CHUNK_COLUMNS).to_csv(path, index=False)
    s = saturation_table({"m": [str(path)]}, {"m": "cifar10"})
    assert list(s.columns) == SATURATION_COLUMNS
    assert list(zip(s.restart, s.step, s.top1)) == [
        ("0", 10, 0.75),
        ("0", 100, 0.25),
        ("1", 10, 0.5),
        ("1", 100, 0.25),
        ("best", 100, 0.0),
    ]


def test_shift_only_prm_is_not_held_in_the_adaptive_protocol(tmp_path):
    """The referee's case: a "stochastic PRM" with lambdas [0] is the shift-only randomisation itself. Under an
    adaptive minimal-perturbation attack it recovers half the images against none (0.00), so the test against
    none holds, but against prm_shift_only (the same draws: identical rows) the effect is 0, with an interval
    that 20 images cannot shrink below the 0.05 margin: never held (inconclusive)."""
    n = 20
    half = [2] * 10 + [0] * 10
    rows = (
        _rows("none", "clean", "clean", [1] * n)
        + _rows("stochastic_prm", "clean", "clean", [2] * n, 2)
        + _rows("prm_shift_only", "clean", "clean", [2] * n, 2)
        + _rows("none", "deepfool", "adaptive", [0] * n)
        + _rows("stochastic_prm", "deepfool", "adaptive", half, 2)
        + _rows("prm_shift_only", "deepfool", "adaptive", half, 2)
        + _rows("randomization", "deepfool", "adaptive", half, 2)
    )
    path = tmp_path / "c.csv"
    pd.DataFrame(rows, columns=CHUNK_COLUMNS).to_csv(path, index=False)
    t = defense_table({"m": [str(path)]}, {"m": "cifar10"}, n_boot=500, seed=0)
    cell = t.set_index(["defense", "attack", "protocol"])
    prm_row = cell.loc["stochastic_prm", "deepfool", "adaptive"]
    assert (
        prm_row.effect == pytest.approx(0.5) and prm_row.effect_low > 0.05
    )  # against none alone: "held"
    tied = (
        0,
        pytest.approx(-(1 - 0.0125 ** (1 / 20))),
        pytest.approx(1 - 0.0125 ** (1 / 20)),
    )  # no pair differs
    assert (prm_row.shift_effect, prm_row.shift_effect_low, prm_row.shift_effect_high) == tied
    base = cell.loc[
        "randomization", "deepfool", "adaptive"
    ]  # baselines too are compared with the randomisation alone
    assert (base.shift_effect, base.shift_effect_low, base.shift_effect_high) == tied
    assert np.isnan(cell.loc["prm_shift_only", "deepfool", "adaptive"].shift_effect)
    (r,) = p3_defense(t, min_effect=0.05)
    assert r["verdict"] == "inconclusive" and r["control"] == "prm_shift_only"


def test_table_refuses_rows_on_different_images(tmp_path):
    paths = _constructed(tmp_path)
    df = pd.read_csv(paths[1])
    df[df.defense != "transfer_none"].to_csv(
        paths[1], index=False
    )  # one chunk's transfer control lost
    with pytest.raises(ValueError, match="cover different images.*img-1.*chunk"):
        defense_table({"m": paths}, {"m": "cifar10"}, n_boot=200, seed=0)


def test_controls_share_the_stochastic_prms_draws(resnet20, images, prm, monkeypatch):
    """prm_shift_only and prm_on_classifier are built with the stochastic PRM's seed (per role), and with one
    seed the lambda-0 defence draws the same passes, PRMs and shifts per image and draw as the PRM itself."""
    import pixelrobust.defense_eval as de
    from pixelrobust.defenses import build_defense

    seen = []

    def spy(name, classifier, settings=None, **kw):
        if name == "stochastic_prm" and not kw.get("deterministic"):
            seen.append((tuple((settings or {}).get("lambdas")), kw["seed"]))
        return build_defense(name, classifier, settings, **kw)

    monkeypatch.setattr(de, "build_defense", spy)
    chunk(
        resnet20,
        images,
        prm,
        "pgd",
        {"steps": 1, "alpha": 0.01, "eps": 0.031},
        stop=2,
        draws=1,
        defenses={"stochastic_prm": SETTINGS["stochastic_prm"]},
        protocols=("graybox",),
    )
    # the PRM, prm_on_classifier (its lambdas) and prm_shift_only (lambda 0) evaluators: one seed
    assert (
        {lam for lam, _ in seen} == {(0, 0.5, 1), (0.0,)}
        and len(seen) == 3
        and len({s for _, s in seen}) == 1
    ), seen
    prm_model = build_defense(
        "stochastic_prm", resnet20, SETTINGS["stochastic_prm"], prms=[prm], seed=11
    )
    shift_model = build_defense(
        "stochastic_prm",
        resnet20,
        {**SETTINGS["stochastic_prm"], "lambdas": [0.0]},
        prms=[prm],
        seed=11,
    )
    for draw in (0, 3):
        with prm_model.images(images.ids[:6], draw):
            a = [prm_model.plan(g) for g in prm_model.generators(6)]
        with shift_model.images(images.ids[:6], draw):
            b = [shift_model.plan(g) for g in shift_model.generators(6)]
        assert [[(i, s) for i, _, s in p] for p in a] == [[(i, s) for i, _, s in p] for p in b]
        assert all(lam == 0 for p in b for _, lam, _ in p) and any(
            lam > 0 for p in a for _, lam, _ in p
        )


def test_shift_only_prm_is_not_held_on_real_adaptive_deepfool(resnet20, images, prm, tmp_path):
    """End to end on 10 real images: a "stochastic PRM" with lambdas [0] under adaptive DeepFool (EOT 2) beats
    the undefended classifier (a fresh draw recovers images left just past the averaged boundary), but it is
    the shift-only control itself — the same seed, hence the same EOT draws, images and evaluation draws — so
    the second test is exactly 0 and the claim is not held."""
    shift_only = {"stochastic_prm": {**SETTINGS["stochastic_prm"], "lambdas": [0.0]}}
    df = chunk(
        resnet20,
        images,
        prm,
        "deepfool",
        {"steps": 20, "overshoot": 0.02, "candidates": 3},
        protocols=("adaptive",),
        stop=10,
        draws=2,
        defenses=shift_only,
    )
    assert set(df.defense) == {"none", "stochastic_prm", "prm_shift_only"}
    df.to_csv(tmp_path / "c.csv", index=False)
    t = defense_table({"m": [str(tmp_path / "c.csv")]}, {"m": "cifar10"}, n_boot=500, seed=0)
    r = t.set_index(["defense", "attack", "protocol"]).loc["stochastic_prm", "deepfool", "adaptive"]
    assert r.effect > 0 and r.shift_effect == 0 and r.shift_effect_low < 0.05 < r.shift_effect_high
    (claim,) = p3_defense(t, min_effect=0.05)
    assert claim["verdict"] == "inconclusive" and claim["control"] == "prm_shift_only"  # never held
