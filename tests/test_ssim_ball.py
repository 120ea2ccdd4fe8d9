"""P2's fast SSIM-ball solver with overlapping windows (stride < window): certified against Clarabel."""

from __future__ import annotations

import itertools

import pytest
import torch

from pixelrobust import data
from pixelrobust.ssim_ball import (SSIMBall, SSIMBallProblem, solve_admm, solve_cvxpy, window_factors, window_groups,
                                   window_index, window_starts)


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
    assert rows == [0, 3, 6, 9, 12, 13] and cols == [0, 3, 6, 9, 10]  # a last window flush with each border
    p = SSIMBallProblem(torch.rand(1, 1, H, W, dtype=torch.float64), torch.rand(1, 1, H, W, dtype=torch.float64),
                        0.01, size, stride)
    # a pixel's window count is (windows covering its row) × (windows covering its column)
    cover = lambda starts, i: sum(s <= i < s + size for s in starts)  # noqa: E731
    expect = torch.tensor([[cover(rows, i) * cover(cols, j) for j in range(W)] for i in range(H)], dtype=torch.float64)
    assert torch.equal(p.count, expect) and not p.disjoint
    idx = window_index(H, W, size, stride)
    groups = window_groups(H, W, size, stride)
    assert sorted(torch.cat(groups).tolist()) == list(range(len(idx)))  # every window in exactly one group
    for grp in groups:  # the windows of a group share no pixel
        pix = idx[grp].flatten()
        assert len(pix.unique()) == len(pix)
    assert len(window_groups(24, 24, 8, 8)) == 1 and len(window_groups(24, 24, 8, 4)) == 4


@pytest.mark.parametrize("side,size,stride,eps", [(32, 8, 4, 1e-3), (24, 8, 2, 1e-5), (16, 8, 1, 1e-3), (15, 3, 2, 1e-3)])
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
    even = p.gather(p.g / p.count)  # Uᵀλ = g exactly: pixel i's share split over its count_i windows
    assert torch.allclose(p.fold(even), p.g)
    for lam in [even, 0.0 * even, even + 0.3 * torch.randn(even.shape, generator=gen, dtype=torch.float64),
                2.0 * even, p.gather(p.g)]:
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
    assert float((p.hi_implied - p.lo_implied).max()) < 0.2  # and is much narrower than the image box


def test_restore_makes_any_point_exactly_feasible(images):
    p = crop_problem(images, 24, 1e-3, 8, 4)
    gen = torch.Generator().manual_seed(2)
    for delta in [0.05 * torch.randn(p.x.shape, generator=gen, dtype=torch.float64), p.hi.clone(), p.lo.clone()]:
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
    assert (p.objective(fixed) >= 0.999 * p.objective(opt)).all() and (p.violations(fixed) == 0).all()
    # and a point off in a few windows only is repaired locally, not by shrinking the whole image
    bump = opt.clone()
    bump[:, :, 4:12, 4:12] *= 1.01
    fixed = p.restore(bump)
    assert (p.violations(fixed) == 0).all()
    assert (p.objective(fixed) >= 0.995 * p.objective(opt)).all()  # measured 0.997, 0.998
    assert (p.objective(p.scale_in(bump)) < 0.99 * p.objective(opt)).all()  # the scaling alone: 0.981, 0.961


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
        self.w = torch.randn((classes,) + shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

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
    best = float(pg @ a + p.r.flatten()[0] * pg.norm() + g.sum() * (p.b.flatten()[0] + p.s.flatten()[0] * torch.sign(g.sum())))
    assert float(sol.objective[0]) == pytest.approx(best, rel=1e-6)
    assert list(itertools.islice(window_starts(8, 8, 8), 2)) == [0]
