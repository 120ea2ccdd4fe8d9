"""P2's fast SSIM-ball solver with overlapping windows (stride < window): certified against Clarabel."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pixelrobust import data
from pixelrobust.errors import ConfigError
from pixelrobust.ssim_ball import (
    SSIMBall,
    SSIMBallProblem,
    check_epsilon,
    solve_admm,
    solve_cvxpy,
    window_factors,
    window_groups,
    window_index,
    window_starts,
)


@pytest.fixture(scope="module")
def images(prepared):
    return data.load_split(prepared / "data" / "imagenet", "test", 0, 4).images


def crop_problem(images, side, eps, size, stride, n=2, seed=0, centre=True):
    """Real ImageNet crops (side×side, float64) with a random linear objective."""
    H = images.shape[-1]
    top = (H - side) // 2 if centre else 0
    x = images[:n, :, top : top + side, top : top + side].double().contiguous()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return SSIMBallProblem(x, g, eps, size, stride)


def test_window_count_and_groups_from_first_principles():
    H, W, size, stride = 20, 17, 7, 3
    rows, cols = window_starts(H, size, stride), window_starts(W, size, stride)
    assert rows == [0, 3, 6, 9, 12, 13] and cols == [
        0,
        3,
        6,
        9,
        10,
    ]  # a last window flush with each border
    p = SSIMBallProblem(
        torch.rand(1, 1, H, W, dtype=torch.float64),
        torch.rand(1, 1, H, W, dtype=torch.float64),
        0.01,
        size,
        stride,
    )
    # a pixel's window count is (windows covering its row) × (windows covering its column)
    cover = lambda starts, i: sum(s <= i < s + size for s in starts)  # noqa: E731
    expect = torch.tensor(
        [[cover(rows, i) * cover(cols, j) for j in range(W)] for i in range(H)], dtype=torch.float64
    )
    assert torch.equal(p.count, expect) and not p.disjoint
    idx = window_index(H, W, size, stride)
    groups = window_groups(H, W, size, stride)
    assert sorted(torch.cat(groups).tolist()) == list(
        range(len(idx))
    )  # every window in exactly one group
    for grp in groups:  # the windows of a group share no pixel
        pix = idx[grp].flatten()
        assert len(pix.unique()) == len(pix)
    assert len(window_groups(24, 24, 8, 8)) == 1 and len(window_groups(24, 24, 8, 4)) == 4


@pytest.mark.parametrize(
    "side,size,stride,eps", [(32, 8, 4, 1e-3), (24, 8, 2, 1e-5), (16, 8, 1, 1e-3), (15, 3, 2, 1e-3)]
)
def test_overlapping_admm_matches_clarabel_and_is_certified(images, side, size, stride, eps):
    p = crop_problem(images, side, eps, size, stride, n=2 if side < 20 else 1)
    assert not p.disjoint
    fast = solve_admm(p, tol=1e-3)
    ref = solve_cvxpy(p, "clarabel")
    assert (fast.violation <= 1e-9).all() and (ref.violation <= 1e-6).all()
    gap = (ref.objective - fast.objective) / ref.objective
    assert (gap.abs() <= 0.01).all(), gap
    # certificate: dual bound ≥ CVXPY's optimum ≥ the returned (feasible) objective, and the bound is tight
    assert (fast.bound >= ref.objective * (1 - 1e-7)).all(), (fast.bound, ref.objective)
    assert (ref.objective >= fast.objective * (1 - 1e-7)).all()
    assert (fast.gap <= 1e-3 + 1e-12).all()
    # SSIM's own luminance and contrast-structure formulas hold on every overlapping window
    lum, struct = window_factors(p.x, p.x + fast.delta, size, stride)
    assert lum.min() >= 1 - eps - 1e-9 and struct.min() >= 1 - eps - 1e-9


def test_the_dual_bound_holds_for_any_multipliers(images):
    """Weak duality: h(λ) ≥ the optimum for every λ, on overlapping windows (each pixel in up to 16)."""
    p = crop_problem(images, 16, 1e-3, 8, 2, n=1)
    opt = solve_cvxpy(p, "clarabel").objective
    gen = torch.Generator().manual_seed(1)
    even = p.gather(
        p.g / p.count
    )  # Uᵀλ = g exactly: pixel i's share split over its count_i windows
    assert torch.allclose(p.fold(even), p.g)
    for lam in [
        even,
        0.0 * even,
        even + 0.3 * torch.randn(even.shape, generator=gen, dtype=torch.float64),
        2.0 * even,
        p.gather(p.g),
    ]:
        assert (p.dual_bound(lam) >= opt * (1 - 1e-9)).all()
        assert (p.certify(lam) >= opt * (1 - 1e-9)).all()
    # the near-optimal multipliers (ADMM's final λ, stored for ‖g‖ = 1) give a bound within 0.1 % of
    # the optimum, so every term of h(λ) matters: dropping one (e.g. s·|Σλ|) takes it below the optimum
    sol = solve_admm(p, tol=1e-4)
    lam = sol.lam * p.g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    for bound in (p.dual_bound(lam), p.certify(lam)):
        assert (bound >= opt * (1 - 1e-9)).all() and (bound <= opt * (1 + 1e-3)).all(), (bound, opt)
    # the implied box holds every feasible point, here the optimum
    ref = solve_cvxpy(p, "clarabel").delta
    assert (ref >= p.lo_implied - 1e-7).all() and (ref <= p.hi_implied + 1e-7).all()
    assert (
        float((p.hi_implied - p.lo_implied).max()) < 0.2
    )  # and is much narrower than the image box


def test_restore_makes_any_point_exactly_feasible(images):
    p = crop_problem(images, 24, 1e-3, 8, 4)
    gen = torch.Generator().manual_seed(2)
    for delta in [
        0.05 * torch.randn(p.x.shape, generator=gen, dtype=torch.float64),
        p.hi.clone(),
        p.lo.clone(),
    ]:
        assert (p.violations(delta) > 1e-3).all()
        fixed = p.restore(delta)
        assert (p.violations(fixed) == 0).all()
        lum, struct = window_factors(p.x, p.x + fixed, 8, 4)
        assert lum.min() >= 1 - 1e-3 - 1e-12 and struct.min() >= 1 - 1e-3 - 1e-12
    # a nearly feasible point loses little: the optimum pushed out by 1 % in every window comes back
    opt = solve_cvxpy(p, "clarabel").delta
    near = opt * 1.01
    assert (p.violations(near) > 0).all()
    fixed = p.restore(near)
    assert (p.objective(fixed) >= 0.999 * p.objective(opt)).all() and (
        p.violations(fixed) == 0
    ).all()
    # and a point off in a few windows only is repaired locally, not by shrinking the whole image
    bump = opt.clone()
    bump[:, :, 4:12, 4:12] *= 1.01
    fixed = p.restore(bump)
    assert (p.violations(fixed) == 0).all()
    assert (p.objective(fixed) >= 0.995 * p.objective(opt)).all()  # measured 0.997, 0.998
    assert (
        p.objective(p.scale_in(bump)) < 0.99 * p.objective(opt)
    ).all()  # the scaling alone: 0.981, 0.961


def test_batch_solves_each_image_to_its_certificate(images):
    """Images of a batch converge at different iterations and leave it; each is certified alone."""
    p = crop_problem(images, 24, 1e-3, 8, 4, n=4)
    sol = solve_admm(p, tol=2e-3)
    assert (sol.violation <= 1e-9).all() and (sol.gap <= 2e-3 + 1e-12).all()
    for i in (0, 3):
        one = solve_admm(SSIMBallProblem(p.x[i : i + 1], p.g[i : i + 1], 1e-3, 8, 4), tol=2e-3)
        # both are within 0.2 % of the same optimum
        assert abs(float(one.objective[0] - sol.objective[i])) <= 2e-3 * float(one.bound[0])


def test_warm_start_from_a_solution_certifies_at_once(images):
    p = crop_problem(images, 24, 1e-3, 8, 4)
    cold = solve_admm(p, tol=1e-3)
    warm = solve_admm(p, tol=1e-3, warm=cold)
    assert warm.iterations <= 50 < cold.iterations
    assert (warm.gap <= 1e-3 + 1e-12).all() and (warm.violation <= 1e-9).all()


def test_float32_overlapping_certificate(images):
    """The attack runs in float32: its certificate still bounds the float64 optimum, and its point
    is feasible. The scaling's safety margin must survive float32 rounding (a fixed 1 − 1e-9 rounds
    to 1.0 in float32 and left windows off by ~1e-10–2e-9): measured in float32 no bound is
    violated, and in float64 none by more than 1e-12 (rounding of the float64 check itself)."""
    p64 = crop_problem(images, 24, 1e-5, 8, 4, n=2)
    p32 = SSIMBallProblem(p64.x.float(), p64.g.float(), 1e-5, 8, 4)
    sol = solve_admm(p32, tol=5e-3)
    opt = solve_cvxpy(p64, "clarabel").objective
    assert (sol.bound.double() >= opt * (1 - 1e-5)).all()
    assert (p64.objective(sol.delta.double()) >= opt * (1 - 5e-3 - 1e-5)).all()
    assert (sol.violation == 0).all() and (p32.violations(sol.delta) == 0).all()
    assert (p64.violations(sol.delta.double()) <= 1e-12).all()
    # and the restoration alone, from an infeasible float32 point
    fixed = p32.restore(p32.hi.clone())
    assert (p32.violations(fixed) == 0).all() and (p64.violations(fixed.double()) <= 1e-12).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(images):
    p = crop_problem(images, 32, 1e-3, 8, 4)
    cpu = solve_admm(p, tol=1e-3)
    q = SSIMBallProblem(p.x.cuda(), p.g.cuda(), 1e-3, 8, 4)
    gpu = solve_admm(q, tol=1e-3)
    assert (gpu.violation <= 1e-9).all() and (gpu.gap <= 1e-3 + 1e-12).all()
    assert torch.allclose(gpu.objective.cpu(), cpu.objective, rtol=2e-3)


class Linear(torch.nn.Module):
    def __init__(self, shape, classes=5):
        super().__init__()
        self.w = torch.randn(
            (classes,) + shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64
        )

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x.double(), self.w)


def test_attack_with_overlapping_windows_stays_in_the_ball(images):
    """Several warm-started steps (a linear classifier that no step fools) on stride-4 windows."""
    x = images[:2, :, :32, :32].double().contiguous()
    model = Linear(tuple(x.shape[1:]))
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 1e-5
    r = SSIMBall(model, eps, size=8, stride=4, steps=3, tol=2e-3).run(x, y)
    assert (r["steps"] == 3).all() and not r["success"].any() and (r["gap"] <= 2e-3).all()
    lum, struct = window_factors(x, r["adv"], 8, 4)
    assert lum.min() >= 1 - eps - 1e-9 and struct.min() >= 1 - eps - 1e-9
    assert float((r["adv"] - x).abs().max()) > 0


def test_tiny_problems_have_the_obvious_optimum():
    """One window, no box activity: the optimum is the window's own maximiser, found at once."""
    gen = torch.Generator().manual_seed(4)
    x = 0.3 + 0.4 * torch.rand(1, 1, 8, 8, generator=gen, dtype=torch.float64)
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    p = SSIMBallProblem(x, g, 1e-4, 8, 8)
    sol = solve_admm(p, tol=1e-6)
    pg = (g - g.mean()).flatten()
    a = p.a.flatten()
    # max ⟨g, δ⟩ over ‖Pδ − a‖ ≤ r, |mean δ − b| ≤ s: ⟨g, a⟩ + r‖Pg‖ + Σg·(b + s·sign Σg)
    best = float(
        pg @ a
        + p.r.flatten()[0] * pg.norm()
        + g.sum() * (p.b.flatten()[0] + p.s.flatten()[0] * torch.sign(g.sum()))
    )
    assert float(sol.objective[0]) == pytest.approx(best, rel=1e-6)
    assert list(itertools.islice(window_starts(8, 8, 8), 2)) == [0]


# ---- added for mutation testing (docs/development.md, "Mutation testing"): synthetic images, no solver -----------


def synthetic_problem(side=16, eps=1e-4, size=8, stride=8, luminance=True, n=2, seed=0):
    """Random images in [0.3, 0.7] (the box stays inactive at this ε) and a random linear objective."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n, 3, side, side, generator=gen, dtype=torch.float64)
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return SSIMBallProblem(x, g, eps, size, stride, luminance=luminance)


def _support(p, gw):
    """max ⟨gw_w, y⟩ over window w's set ‖P y − a_w‖ ≤ r_w, |mean y − b_w| ≤ s_w: ⟨P gw, a⟩ + r‖P gw‖ + Σgw·(b + s·sign Σgw)
    (without the luminance bound the mean is free: only the zero-mean part of gw is bounded)."""
    pg = gw - gw.mean(-1, keepdim=True)
    sup = (pg * p.a).sum(-1, keepdim=True) + p.r * pg.norm(dim=-1, keepdim=True)
    if p.luminance:
        total = gw.sum(-1, keepdim=True)
        sup = sup + total * (p.b + p.s * torch.sign(total))
    return sup


@pytest.mark.parametrize("luminance", [True, False])
def test_synthetic_window_optimum_attains_each_windows_support_on_its_boundary(luminance):
    from pixelrobust.ssim_ball import _window_optimum

    p = synthetic_problem(size=8, stride=4, luminance=luminance)
    gw = torch.randn(p.a.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = _window_optimum(p, gw)
    m = y.mean(-1, keepdim=True)
    assert torch.allclose(
        (y - m - p.a).norm(dim=-1, keepdim=True), p.r, rtol=1e-12
    )  # on the structure sphere
    if luminance:
        assert torch.allclose(
            (m - p.b).abs(), p.s, rtol=1e-9
        )  # and at an end of the luminance interval
    assert torch.allclose((gw * y).sum(-1, keepdim=True), _support(p, gw), rtol=1e-12)
    small = (
        1e-3 * gw
    )  # ‖P gw‖ below 1: the maximiser's direction does not depend on the objective's scale
    torch.testing.assert_close(_window_optimum(p, small), y, rtol=1e-12, atol=1e-15)


def test_synthetic_violations_are_the_largest_excess_of_any_window_or_the_box():
    from pixelrobust.ssim_ball import _window_optimum

    p = synthetic_problem(size=8, stride=4)
    zero = torch.zeros_like(p.x)
    assert (p.violations(zero) == 0).all()  # δ = 0 is feasible
    # the window optimum of a disjoint layout is feasible (on the boundary: within rounding)
    q = synthetic_problem(size=8, stride=8)
    best = q.fold(_window_optimum(q, q.gather(q.g)))
    assert (q.violations(best) <= 1e-12).all() and (q.violations(1.1 * best) > 0).all()
    # one pixel pushed by t: from first principles, the excess of each window holding it
    t = 0.05
    delta = zero.clone()
    delta[0, 1, 5, 6] = t
    dw = p.gather(delta)
    m = dw.mean(-1, keepdim=True)
    ball = (dw - m - p.a).norm(dim=-1, keepdim=True) - p.r
    lum = (m - p.b).abs() - p.s
    expected = torch.maximum(ball, lum)[0].max().clamp_min(0)
    assert float(expected) > 0 and float(p.violations(delta)[0]) == pytest.approx(
        float(expected), rel=1e-12
    )
    assert float(p.violations(delta)[1]) == 0.0  # the other image is untouched
    # the box: a pixel pushed past 1 − x by 0.2 violates the box by exactly 0.2 (more than any window here)
    big = zero.clone()
    big[1, 0, 3, 3] = float(p.hi[1, 0, 3, 3]) + 0.2
    assert float(p.violations(big)[1]) >= 0.2 - 1e-12
    low = zero.clone()
    low[1, 2, 9, 9] = float(p.lo[1, 2, 9, 9]) - 0.3
    assert float(p.violations(low)[1]) == pytest.approx(
        max(
            0.3,
            float(
                torch.maximum(
                    (p.gather(low) - p.gather(low).mean(-1, keepdim=True) - p.a).norm(
                        dim=-1, keepdim=True
                    )
                    - p.r,
                    (p.gather(low).mean(-1, keepdim=True) - p.b).abs() - p.s,
                )[1].max()
            ),
        ),
        rel=1e-12,
    )


@pytest.mark.parametrize("luminance", [True, False])
def test_synthetic_dual_bound_is_exact_for_disjoint_windows_and_never_below_a_feasible_point(
    luminance,
):
    from pixelrobust.ssim_ball import _window_optimum

    # disjoint windows, inactive box: the optimum is each window's own maximiser, and at λ = g (each pixel in one
    # window: Uᵀλ = g) the dual function is exactly Σ_w support_w = that optimum. (Without the luminance bound a
    # window's mean is limited by the image box only, so there the optimum is larger: weak duality only.)
    p = synthetic_problem(size=8, stride=8, luminance=luminance)
    lam = p.gather(p.g)
    opt = p.objective(p.fold(_window_optimum(p, lam)))
    assert torch.allclose(opt, _support(p, lam).flatten(1).sum(1), rtol=1e-12)
    if luminance:
        assert torch.allclose(p.dual_bound(lam), opt, rtol=1e-9) and torch.allclose(
            p.certify(lam), opt, rtol=1e-9
        )
    else:
        assert (p.dual_bound(lam) > opt).all()
    # weak duality for other multipliers, and on overlapping windows against feasible points
    gen = torch.Generator().manual_seed(5)
    for q in (p, synthetic_problem(size=8, stride=4, luminance=luminance)):
        feasible = [
            q.scale_in(0.01 * torch.randn(q.x.shape, generator=gen, dtype=torch.float64))
            for _ in range(3)
        ]
        even = q.gather(q.g / q.count)
        for lam in (
            even,
            0.5 * even,
            even + 0.2 * torch.randn(even.shape, generator=gen, dtype=torch.float64),
            q.gather(q.g),
        ):
            best = torch.stack([q.objective(f) for f in feasible]).amax(0)
            assert (q.dual_bound(lam) >= best).all() and (q.certify(lam) >= best).all()
            assert (q.certify(lam) <= q.dual_bound(lam) + 1e-12).all()  # the better of two bounds


def test_synthetic_certificate_of_the_solver_is_tight_on_overlapping_windows():
    # ADMM's own multipliers certify its point within its tolerance: the bound is above every feasible value and
    # the gap closes, so the terms of h(λ) (box, support, luminance) are all needed
    p = synthetic_problem(side=16, size=8, stride=4, n=1, seed=2)
    sol = solve_admm(p, tol=1e-4)
    lam = sol.lam * p.g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    bound = p.certify(lam)
    assert (p.violations(sol.delta) <= 1e-9).all()
    assert (bound >= p.objective(sol.delta)).all() and (
        (bound - p.objective(sol.delta)) <= 1e-4 * bound.abs()
    ).all()
    assert (p.dual_bound(lam) >= p.objective(sol.delta)).all()


@pytest.mark.parametrize("luminance", [True, False])
def test_synthetic_projection_is_onto_the_ball_times_the_interval(luminance):
    # the set is a ball in the zero-mean subspace (centre a, radius r) times an interval of the mean (b ± s), two
    # orthogonal parts: the projection scales P v − a into the ball and clips the mean; the excess before it is
    # the larger of ‖P v − a‖ − r and |mean v − b| − s (without the luminance bound the mean is free)
    p = synthetic_problem(size=8, stride=4, luminance=luminance)
    gen = torch.Generator().manual_seed(7)
    shape = (*p.a.shape[:-1], 1)
    scale = 0.0015 * (
        0.3 + 2.7 * torch.rand(shape, generator=gen, dtype=torch.float64)
    )  # ‖noise‖ about 0.004 to 0.04
    offset = (
        0.02 * torch.rand(shape, generator=gen, dtype=torch.float64) - 0.01
    )  # the mean moves by up to ±0.01
    v = (
        p.a + scale * torch.randn(p.a.shape, generator=gen, dtype=torch.float64) + offset
    )  # some windows in, some out
    m = v.mean(-1, keepdim=True)
    dev = v - m - p.a
    nd = dev.norm(dim=-1, keepdim=True)
    expected = p.a + dev * torch.clamp(p.r / nd, max=1.0)
    expected_excess = nd - p.r
    if luminance:
        expected = expected + torch.minimum(torch.maximum(m, p.b - p.s), p.b + p.s)
        expected_excess = torch.maximum(expected_excess, (m - p.b).abs() - p.s)
    else:
        expected = expected + m
    assert (expected_excess > 0).any() and (expected_excess < 0).any()
    z, excess = p._project(v, p.a, p.r, p.b, p.s, True)
    torch.testing.assert_close(z, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(excess, expected_excess, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(p.project(v), expected, rtol=1e-12, atol=1e-15)


def test_synthetic_violations_per_image_and_box_alone():
    # ε = 0.9: the windows allow far more than the box, so a pixel pushed past the box violates it by exactly that
    # much, and only in its own image; a window shifted by a constant violates its luminance bound only there
    p = synthetic_problem(size=8, stride=4, eps=0.9)
    for img, sign, over in ((1, -1, 0.3), (0, 1, 0.2)):
        delta = torch.zeros_like(p.x)
        delta[img, 2, 9, 9] = (
            float(p.lo[img, 2, 9, 9]) - over if sign < 0 else float(p.hi[img, 2, 9, 9]) + over
        )
        dw = p.gather(delta)
        mw = dw.mean(-1, keepdim=True)
        window = torch.maximum(
            (dw - mw - p.a).norm(dim=-1, keepdim=True) - p.r, (mw - p.b).abs() - p.s
        )
        assert float(window.max()) < 0  # no window bound is touched
        got = p.violations(delta)
        assert float(got[img]) == pytest.approx(over, rel=1e-12) and float(got[1 - img]) == 0.0
    q = synthetic_problem(size=8, stride=8)
    delta = torch.zeros_like(q.x)
    delta[0, :, 0:8, 0:8] = (
        0.02  # the top-left window's mean moves by 0.02, its structure not at all
    )
    dw = q.gather(delta)
    lum = ((dw.mean(-1, keepdim=True) - q.b).abs() - q.s)[0].max()
    assert float(lum) > 0 and float(q.violations(delta)[0]) == pytest.approx(float(lum), rel=1e-12)
    assert float(q.violations(delta)[1]) == 0.0


def test_synthetic_dual_bound_box_term_and_certificate_on_disjoint_windows():
    from pixelrobust.ssim_ball import _window_optimum

    # disjoint windows, λ = t·g: Uᵀλ = t g leaves (1 − t) g for the implied box, whose support is
    # Σ_i max((1 − t) g_i hi_i, (1 − t) g_i lo_i); the windows give t·optimum. The certificate's second bound moves λ
    # to g itself (the residual spread over each pixel's one window), where the dual function is the optimum.
    p = synthetic_problem(size=8, stride=8)
    opt = p.objective(p.fold(_window_optimum(p, p.gather(p.g))))
    for t in (0.0, 0.5, 2.0):
        c = (1 - t) * p.g
        box = torch.maximum(c * p.hi_implied, c * p.lo_implied).flatten(1).sum(1)
        lam = t * p.gather(p.g)
        torch.testing.assert_close(p.dual_bound(lam), box + t * opt, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(p.certify(lam), opt, rtol=1e-9, atol=1e-12)
    # h is positively homogeneous in (λ, g): scaling both scales the bound, for an objective other than the problem's
    gen = torch.Generator().manual_seed(8)
    lam = p.gather(p.g) + 0.1 * torch.randn(p.a.shape, generator=gen, dtype=torch.float64)
    other = torch.randn(p.g.shape, generator=gen, dtype=torch.float64)
    for q in (p, synthetic_problem(size=8, stride=4)):
        lam = q.gather(q.g / q.count)
        torch.testing.assert_close(
            q.dual_bound(3 * lam, 3 * other), 3 * q.dual_bound(lam, other), rtol=1e-9, atol=1e-12
        )
        torch.testing.assert_close(
            q.certify(3 * lam, 3 * other), 3 * q.certify(lam, other), rtol=1e-9, atol=1e-12
        )
        assert not torch.allclose(
            q.dual_bound(lam, other), q.dual_bound(lam)
        )  # the objective given is the one used
        feasible = q.scale_in(0.01 * torch.randn(q.x.shape, generator=gen, dtype=torch.float64))
        assert ((other * feasible).flatten(1).sum(1) <= q.certify(lam, other)).all()


def test_synthetic_dual_bound_without_luminance_ignores_each_windows_mean_multiplier():
    # without the luminance bound a window's mean is free, so only the zero-mean part of its multipliers can
    # give a finite bound: adding a constant per window to λ leaves h(λ) unchanged
    p = synthetic_problem(size=8, stride=4, luminance=False)
    gen = torch.Generator().manual_seed(9)
    lam = p.gather(p.g / p.count)
    const = torch.randn(*p.a.shape[:-1], 1, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(p.dual_bound(lam + const), p.dual_bound(lam), rtol=1e-12, atol=1e-12)


def test_synthetic_window_factors_are_ssims_luminance_and_structure_per_window():
    # SSIM's two factors on each window of window_index (here 8×8 at stride 4 on 16×16: starts 0, 4, 8), sample
    # covariance, C1 = K1², C2 = K2² for data range 1; and the constants given are the ones used
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(
        1, 2, 16, 12, generator=gen, dtype=torch.float64
    )  # not square: rows and columns differ
    y = (x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    for k1, k2 in ((0.01, 0.03), (0.3, 0.2)):
        lum, struct = (
            window_factors(x, y, 8, 4, k1, k2) if k1 != 0.01 else window_factors(x, y, 8, 4)
        )
        assert lum.shape == struct.shape == (1, 2, 6)
        w = 0
        for r in (0, 4, 8):
            for c in (0, 4):
                for ch in range(2):
                    a, b = (
                        x[0, ch, r : r + 8, c : c + 8].flatten(),
                        y[0, ch, r : r + 8, c : c + 8].flatten(),
                    )
                    ma, mb = a.mean(), b.mean()
                    cov = ((a - ma) * (b - mb)).sum() / 63
                    el = (2 * ma * mb + k1**2) / (ma**2 + mb**2 + k1**2)
                    es = (2 * cov + k2**2) / (a.var() + b.var() + k2**2)
                    assert float(lum[0, ch, w]) == pytest.approx(float(el), rel=1e-12)
                    assert float(struct[0, ch, w]) == pytest.approx(float(es), rel=1e-12)
                w += 1


@pytest.mark.parametrize(
    "n,size,stride", [(9, 8, 1), (16, 8, 4), (17, 8, 4), (13, 7, 3), (8, 8, 8), (12, 8, 2)]
)
def test_synthetic_window_starts_stay_inside_and_end_flush(n, size, stride):
    starts = list(window_starts(n, size, stride))
    regular = list(range(0, n - size + 1, stride))
    assert (
        starts[: len(regular)] == regular
        and starts[-1] == n - size
        and all(0 <= s <= n - size for s in starts)
    )
    assert len(starts) == len(regular) + (regular[-1] != n - size)


def test_synthetic_window_optimum_of_a_zero_objective_is_the_windows_centre():
    """A window whose objective share is zero (all multipliers 0, e.g. at λ = 0) has every point of its set as
    maximiser; the closed form gives the centre a + b (no direction, mean at the interval's centre), finite."""
    from pixelrobust.ssim_ball import _window_optimum

    p = synthetic_problem(size=8, stride=4)
    y = _window_optimum(p, torch.zeros_like(p.a))
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, (p.a + p.b).expand_as(y), rtol=0, atol=1e-15)


def test_synthetic_certificate_at_zero_spreads_the_objective_over_each_pixels_windows():
    """λ = g/count gathered into every window folds back to g exactly (each pixel lies in `count` windows), so
    the box term vanishes and the bound is the sum of the windows' supports of their share g/count; at ε 1e-4
    it is far below the box-only bound at λ = 0, so certify(0) is that sum, on overlapping windows."""
    p = synthetic_problem(size=8, stride=4)
    share = p.gather(p.g / p.count)
    torch.testing.assert_close(p.fold(share), p.g, rtol=1e-12, atol=1e-12)
    spread = _support(p, share).flatten(1).sum(1)
    box_only = p.dual_bound(torch.zeros_like(p.a))
    assert (spread < 0.5 * box_only).all()
    torch.testing.assert_close(p.certify(torch.zeros_like(p.a)), spread, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "height,width,size,stride,regular",
    [
        (24, 24, 8, 4, True),
        (16, 20, 8, 1, True),
        (15, 15, 3, 2, True),
        (30, 30, 8, 4, False),
        (20, 17, 7, 3, False),
        (16, 16, 8, 8, True),
    ],
)
def test_synthetic_gather_lists_each_windows_pixels_row_major_and_fold_is_its_adjoint(
    height, width, size, stride, regular
):
    """gather reads window (row start r, column start c), in window_starts order row by row, as the pixels
    d[r:r+size, c:c+size] row-major; layouts without border windows take the strided-view path, the others the
    index path, and both must give that; fold is its adjoint: ⟨gather(d), w⟩ = ⟨d, fold(w)⟩."""
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(2, 3, height, width, generator=gen, dtype=torch.float64)
    p = SSIMBallProblem(
        x, torch.randn(x.shape, generator=gen, dtype=torch.float64), 1e-3, size, stride
    )
    assert p.regular == regular
    d = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    expected = torch.stack(
        [
            d[:, :, r : r + size, c : c + size].reshape(2, 3, -1)
            for r in window_starts(height, size, stride)
            for c in window_starts(width, size, stride)
        ],
        2,
    )
    assert torch.equal(p.gather(d), expected)
    w = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(
        (p.gather(d) * w).sum(), (d * p.fold(w)).sum(), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("side", [32, 30])
def test_float32_stride4_admm_matches_clarabel_at_the_benchmark_epsilon(images, side):
    """The benchmark's setting (8×8 windows at stride 4, ε 1e-5, float32, certified gap 0.005) on real crops,
    with (30: a border window, the index path) and without (32: strided views) extra border windows: the
    returned point is within 1 % of Clarabel's optimum and violates no bound by more than 1e-4 (measured: 0)."""
    p64 = crop_problem(images, side, 1e-5, 8, 4, n=2, seed=3)
    p32 = SSIMBallProblem(p64.x.float(), p64.g.float(), 1e-5, 8, 4)
    assert p32.regular == (side == 32)
    sol = solve_admm(p32, tol=5e-3)
    ref = solve_cvxpy(p64, "clarabel")
    obj = p64.objective(sol.delta.double())
    assert (((ref.objective - obj) / ref.objective).abs() <= 0.01).all(), (obj, ref.objective)
    assert (p64.violations(sol.delta.double()) <= 1e-4).all() and (sol.violation == 0).all()
    assert (sol.bound.double() >= ref.objective * (1 - 1e-5)).all()


def test_restore_stops_its_sweeps_once_every_window_is_within_the_stop_fraction_of_its_radius(
    images, monkeypatch
):
    """restore(δ, sweeps, stop): the sweeps end as soon as no window exceeds its set by more than ``stop`` times
    its radius (min(r_w, s_w)); the point handed to the final scaling then satisfies that, after fewer sweeps
    than without ``stop``, and the result is exactly feasible either way."""
    p = crop_problem(images, 24, 1e-3, 8, 4)
    near = solve_cvxpy(p, "clarabel").delta * 1.05  # 5 % outside the optimum in every active window
    seen, sweeps = [], {"n": 0}
    scale_in, project = SSIMBallProblem.scale_in, SSIMBallProblem._project
    monkeypatch.setattr(
        SSIMBallProblem, "scale_in", lambda self, d: seen.append(d.clone()) or scale_in(self, d)
    )
    monkeypatch.setattr(
        SSIMBallProblem,
        "_project",
        lambda self, *a, **k: sweeps.__setitem__("n", sweeps["n"] + 1) or project(self, *a, **k),
    )
    calls = {}
    for stop in (
        0.0,
        0.005,
    ):  # 0.005 of the radius is ~1e-4 here: an absolute stop would end after one sweep
        seen.clear()
        sweeps["n"] = 0
        fixed = p.restore(near, sweeps=40, stop=stop)
        calls[stop] = sweeps["n"]
        assert (p.violations(fixed) == 0).all()
        dw = p.gather(
            seen[-1]
        )  # the point after the sweeps (seen[0]: the scaling alone of the clipped input)
        m = dw.mean(-1, keepdim=True)
        excess = torch.maximum(
            (dw - m - p.a).norm(dim=-1, keepdim=True) - p.r, (m - p.b).abs() - p.s
        )
        rel = float((excess / torch.minimum(p.r, p.s)).max())
        if stop:
            assert rel <= stop
    assert calls[0.005] < calls[0.0]


# ----------------------------------------------------------------------------------------------
# The SSIM ball on real ImageNet images: gather and fold, the solver against Clarabel, the SSIM bound on
# every window, bad arguments, the attack on MobileNetV2.
# ----------------------------------------------------------------------------------------------


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
