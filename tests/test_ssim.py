"""P2: the SSIM ball, its fast solver against CVXPY, the attack and the map comparison."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pixelrobust.errors import ConfigError
from pixelrobust.ssim_ball import (
    SSIMBall,
    SSIMBallProblem,
    check_epsilon,
    solve_admm,
    solve_cvxpy,
    window_factors,
    window_index,
)
from pixelrobust.ssim_study import match_pgd
from pixelrobust.ssim_study import summarise as summarise_attacks


def small_problem(images, side, eps, size, stride, luminance=True, seed=0):
    """Real ImageNet images shrunk to side×side with a random linear objective."""
    x = F.interpolate(images[:2], size=(side, side), mode="area").double()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return SSIMBallProblem(x, g, eps, size, stride, luminance)


def test_gather_and_fold_are_adjoint(imagenet):
    p = small_problem(imagenet[0], 20, 0.01, 7, 3)  # overlapping windows plus border windows
    d = torch.randn_like(p.x)
    w = torch.randn_like(p.gather(p.x))
    assert float((p.gather(d) * w).sum()) == pytest.approx(float((d * p.fold(w)).sum()), rel=1e-10)
    idx = window_index(20, 20, 7, 3)
    assert torch.bincount(idx.flatten(), minlength=400).min() >= 1  # every pixel is in a window


@pytest.mark.parametrize("size,stride,luminance", [(8, 8, True), (7, 4, True), (8, 8, False)])
def test_admm_agrees_with_clarabel_and_its_certificate_holds(imagenet, size, stride, luminance):
    p = small_problem(imagenet[0], 32, 0.01, size, stride, luminance)
    fast = solve_admm(p, tol=1e-3)
    ref = solve_cvxpy(p, "clarabel")
    assert (fast.violation <= 1e-4).all() and (ref.violation <= 1e-6).all()
    gap = (ref.objective - fast.objective) / ref.objective
    assert (gap.abs() <= 0.01).all(), gap
    # the dual bound is a true upper bound on the optimum, and within tol of the returned objective
    assert (fast.bound >= ref.objective * (1 - 1e-6)).all()
    assert ((fast.bound - fast.objective) <= 1e-3 * fast.bound + 1e-9).all()


def test_the_ssim_bound_holds_on_every_window(imagenet):
    """Checked by SSIM's own luminance and contrast-structure formulas, not by the ball derivation."""
    eps = 0.02
    for size, stride in [(8, 8), (6, 3)]:
        p = small_problem(imagenet[0], 48, eps, size, stride)
        sol = solve_admm(p)
        lum, struct = window_factors(p.x, p.x + sol.delta, size, stride)
        assert lum.min() >= 1 - eps - 1e-6 and struct.min() >= 1 - eps - 1e-6
        assert ((p.x + sol.delta) >= -1e-12).all() and ((p.x + sol.delta) <= 1 + 1e-12).all()
        # and the solver used the room: some window sits on its bound
        assert min(float(lum.min()), float(struct.min())) < 1 - eps + 1e-3


def test_epsilon_zero_returns_the_clean_image(imagenet, mobilenet):
    p = small_problem(imagenet[0], 32, 0.0, 8, 8)
    assert float(solve_admm(p).delta.abs().max()) == 0.0
    x, y = imagenet
    r = SSIMBall(mobilenet, 0.0, steps=2).run(x[:2], y[:2])
    assert torch.equal(r["adv"], x[:2])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan, "0.1x", None])
def test_bad_epsilon_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match=r"\[0, 1\)|not a number"):
        check_epsilon(bad)
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigError):
        SSIMBallProblem(x, x, bad, 8, 8)


def test_bad_windows_are_clear_errors():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigError, match="stride"):
        SSIMBallProblem(x, x, 0.01, 4, 5)
    with pytest.raises(ConfigError, match="larger than"):
        SSIMBallProblem(x, x, 0.01, 32, 8)
    with pytest.raises(ValueError, match="B×C×H×W"):
        SSIMBallProblem(x, x[0], 0.01, 8, 8)


def test_attack_fools_mobilenet_inside_the_ball(imagenet, mobilenet):
    x, y = imagenet
    with torch.no_grad():
        ok = mobilenet(x).argmax(1) == y
    x, y = x[ok][:2], y[ok][:2]
    eps = 0.001
    r = SSIMBall(mobilenet, eps, steps=3).run(x, y)
    assert r[
        "success"
    ].all()  # ImageNet MobileNetV2 falls at ε = 0.001 (SSIM factors >= 0.999 per window)
    assert (r["steps"] >= 1).all() and (r["gap"] <= 0.005).all()
    lum, struct = window_factors(x, r["adv"], 8, 8)
    assert lum.min() >= 1 - eps - 1e-4 and struct.min() >= 1 - eps - 1e-4
    with torch.no_grad():
        assert (mobilenet(r["adv"]).argmax(1) != y).all()


def test_pgd_budget_matched_to_the_ssim_success():
    per_image = pd.DataFrame(
        [
            {
                "attack": "ssim_ball",
                "epsilon": 0.001,
                "success": s,
                "ssim": 0.9,
                "l2": 1.0,
                "linf": 0.1,
            }
            for s in (1, 1, 0, 0)
        ]
        + [
            {"attack": "pgd_linf", "epsilon": e, "success": s, "ssim": 0.99, "l2": 1.0, "linf": e}
            for e, succ in ((0.001, (0, 0, 0, 1)), (0.002, (1, 1, 0, 0)), (0.004, (1, 1, 1, 1)))
            for s in succ
        ]
        + [
            {"attack": "pgd_l2", "epsilon": e, "success": s, "ssim": 0.99, "l2": e, "linf": 0.1}
            for e, succ in ((0.5, (1, 1, 1, 0)), (1.0, (1, 1, 1, 1)))
            for s in succ
        ]
    )
    table = summarise_attacks(per_image)
    assert table.attack.tolist()[:1] == ["ssim_ball"] and set(table.n_images) == {4}
    m = match_pgd(table, 0.001).set_index("attack")
    assert m.loc["pgd_linf", "epsilon"] == 0.002 and m.loc["pgd_l2", "epsilon"] == 0.5
    with pytest.raises(ValueError, match="compare.epsilon"):
        match_pgd(table, 0.01)
