"""The SSIM ball of P2 (Pochimireddy et al. 2021) and a fast solver for its linearised attack step.

Geometry (derivation in docs/p2.md). For one channel and one window ``w`` of ``n`` pixels, write a
patch as its mean μ plus its zero-mean part x̃. SSIM's two factors with stabilisers
(skimage's sample covariance, ``C1 = (K1·L)²``, ``C2 = (K2·L)²``, L = 1) are

* luminance  l = (2 μx μy + C1) / (μx² + μy² + C1),
* structure  s = (2 x̃·ỹ + (n−1)C2) / (‖x̃‖² + ‖ỹ‖² + (n−1)C2)  (contrast × structure),

and Brunet, Vrscay & Wang (2012) show √(1 − l) and √(1 − s) are normalised metrics. Bounding
``1 − s ≤ ε`` for fixed x is, in ỹ = x̃ + Pδ (P removes the mean), the Euclidean ball

    ‖Pδ_w − a_w‖ ≤ r_w,   a_w = ε/(1−ε)·x̃_w,   r_w² = ‖x̃_w‖²(2ε−ε²)/(1−ε)² + ε(n−1)C2/(1−ε),

a second-order cone; ``1 − l ≤ ε`` (``luminance=True``) bounds the window mean of δ to the interval
|mean(δ_w) − b_w| ≤ s_w with b_w = ε/(1−ε)·μ_w, s_w² = μ_w²(2ε−ε²)/(1−ε)² + εC1/(1−ε).
Windows are per channel, ``size``×``size`` at ``stride``; a last window flush with the border is
added when the stride does not reach it, so every pixel is constrained (ours).

The attack step maximises ⟨g, δ⟩ over the intersection of every window's set and the box
0 ≤ x+δ ≤ 1. :class:`SSIMBallProblem` holds one batch of such problems; :func:`solve_admm`
solves them together in torch on the CPU or a GPU, for disjoint and overlapping windows alike
(consensus ADMM with per-window penalties, over-relaxation and residual balancing; the box step is
a clip because every pixel's window count is a diagonal, the window step a closed-form
projection), restores exact feasibility (alternating projections over groups of disjoint windows,
then a scaling towards 0, a feasible point), and certifies the result with a Lagrange dual bound
(over the box the window bounds imply), so each image's returned objective is provably within
``tol`` of the optimum. :func:`solve_cvxpy` is the reference (Clarabel or SCS).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError
from .gradients import LOSSES, loss_gradient

log = logging.getLogger("pixelrobust")

SOLVERS = ("admm", "clarabel", "scs")


def check_epsilon(eps, what: str = "epsilon") -> float:
    """ε bounds 1 − SSIM factor per window: it must be a number in [0, 1)."""
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{what}: {eps!r} is not a number; give the bound on 1 − SSIM per window, in [0, 1)"
        ) from None
    if not math.isfinite(e) or not 0.0 <= e < 1.0:
        raise ConfigError(
            f"{what}: {eps!r} is outside [0, 1); ε bounds 1 − SSIM per window (0 = the clean image only, "
            f"values near 1 allow any structure); e.g. 0.01"
        )
    return e


def check_windows(size: int, stride: int, height: int, width: int) -> None:
    if not isinstance(size, int) or size < 2:
        raise ConfigError(f"ssim window size must be an integer >= 2, got {size!r}")
    if not isinstance(stride, int) or not 1 <= stride <= size:
        raise ConfigError(
            f"ssim window stride must be an integer in [1, window size = {size}] so every pixel is in a "
            f"window, got {stride!r}"
        )
    if size > min(height, width):
        raise ConfigError(
            f"ssim window size {size} is larger than the {height}×{width} image; use a smaller window"
        )


def window_starts(n: int, size: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis: every ``stride``, plus one flush with the border."""
    s = list(range(0, n - size + 1, stride))
    if s[-1] != n - size:
        s.append(n - size)
    return s


def window_index(height: int, width: int, size: int, stride: int) -> torch.Tensor:
    """Flat pixel indices (windows × size²) of every window; a last window flush with each border."""
    check_windows(size, stride, height, width)
    off = (torch.arange(size)[:, None] * width + torch.arange(size)[None, :]).flatten()
    rows, cols = window_starts(height, size, stride), window_starts(width, size, stride)
    base = torch.tensor([r * width + c for r in rows for c in cols])
    return base[:, None] + off[None, :]


def window_groups(height: int, width: int, size: int, stride: int) -> list[torch.Tensor]:
    """The windows (numbers, in :func:`window_index` order) split into groups of pairwise disjoint ones.

    Along each axis the ``i``-th regular window goes to class ``i mod ⌈size/stride⌉`` (windows of one
    class are at least ``size`` apart) and the extra border-flush window to a class of its own; a
    group is a pair of classes. Disjoint layouts give one group."""
    check_windows(size, stride, height, width)
    k = -(-size // stride)

    def classes(n: int) -> list[int]:
        regular = len(range(0, n - size + 1, stride))
        return [i % k for i in range(regular)] + [k] * (
            len(window_starts(n, size, stride)) - regular
        )

    label = torch.tensor([a * (k + 1) + b for a in classes(height) for b in classes(width)])
    return [(label == v).nonzero()[:, 0] for v in label.unique()]


@dataclass
class SSIMBallProblem:
    """A batch of linearised SSIM-ball steps: maximise ⟨g, δ⟩ s.t. every window's SSIM bound, 0 ≤ x+δ ≤ 1."""

    x: torch.Tensor  # B×C×H×W in [0, 1]
    g: torch.Tensor  # B×C×H×W objective
    epsilon: float
    size: int = 8
    stride: int = 8
    luminance: bool = True
    k1: float = 0.01
    k2: float = 0.03

    def __post_init__(self):
        self.epsilon = check_epsilon(self.epsilon)
        if self.x.ndim != 4 or self.g.shape != self.x.shape:
            raise ValueError(
                f"SSIM ball: x and g must both be B×C×H×W, got {tuple(self.x.shape)} and {tuple(self.g.shape)}"
            )
        B, C, H, W = self.x.shape
        dev, dt = self.x.device, self.x.dtype
        self.idx = window_index(H, W, self.size, self.stride).to(dev)
        self.groups = [g.to(dev) for g in window_groups(H, W, self.size, self.stride)]
        self.group_idx = [self.idx[g] for g in self.groups]
        # a layout without extra border windows is gathered with strided views instead of by index:
        # the same numbers, 3-4x faster on the CPU (ours)
        self.regular = (H - self.size) % self.stride == 0 and (W - self.size) % self.stride == 0
        count = torch.bincount(self.idx.flatten(), minlength=H * W)
        self.count = count.to(dt).view(H, W)
        self.disjoint = bool((count == 1).all())
        e, n = self.epsilon, self.size * self.size
        xw = self.gather(self.x)
        mu = xw.mean(-1, keepdim=True)
        xt = xw - mu
        c1, c2 = self.k1**2, self.k2**2
        self.a = xt * (e / (1 - e))
        self.r = torch.sqrt(
            (xt * xt).sum(-1, keepdim=True) * (2 * e - e * e) / (1 - e) ** 2
            + e * (n - 1) * c2 / (1 - e)
        )
        self.b = mu * (e / (1 - e))
        self.s = torch.sqrt(mu * mu * (2 * e - e * e) / (1 - e) ** 2 + e * c1 / (1 - e))
        self.lo, self.hi = -self.x, 1 - self.x
        # The box the window bounds imply: δ_i = (Pδ_w)_i + mean(δ_w), a coordinate of a zero-mean
        # vector within r_w of a_w differs from a_w's by at most r_w·√(1 − 1/n), and the mean lies in
        # [b_w − s_w, b_w + s_w]; every window holding pixel i bounds it. A redundant constraint: it
        # does not move the optimum, but it makes the dual bound's box term tight (ours).
        self.lo_implied, self.hi_implied = self.lo, self.hi
        if self.luminance:
            dev_w = self.r * math.sqrt(1 - 1 / n)
            self.lo_implied = torch.maximum(
                self.lo, self.fold_reduce(self.a + self.b - self.s - dev_w, "amax")
            )
            self.hi_implied = torch.minimum(
                self.hi, self.fold_reduce(self.a + self.b + self.s + dev_w, "amin")
            )

    def select(self, keep: torch.Tensor) -> SSIMBallProblem:
        """The sub-batch of images ``keep`` (shares the window layout; nothing is recomputed)."""
        q = copy.copy(self)
        for name in ("x", "g", "a", "r", "b", "s", "lo", "hi", "lo_implied", "hi_implied"):
            setattr(q, name, getattr(self, name)[keep])
        return q

    # --- window algebra -----------------------------------------------------------------------
    def gather(self, d: torch.Tensor) -> torch.Tensor:
        """B×C×H×W → B×C×windows×n."""
        if self.regular:  # windows row by row, entries row-major: window_index's order (may be a view of d: read only)
            B, C = d.shape[:2]
            return (
                d.unfold(2, self.size, self.stride)
                .unfold(3, self.size, self.stride)
                .reshape(B, C, -1, self.size * self.size)
            )
        return d.flatten(2)[:, :, self.idx]

    def fold(self, dw: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`gather` (sum of each pixel's window entries): B×C×windows×n → B×C×H×W."""
        B, C = dw.shape[:2]
        H, W = self.x.shape[2:]
        out = dw.new_zeros(B, C, H * W)
        return out.index_add_(2, self.idx.flatten(), dw.reshape(B, C, -1)).view(B, C, H, W)

    def fold_reduce(self, dw: torch.Tensor, how: str) -> torch.Tensor:
        """Per pixel, the largest (``amax``) or smallest (``amin``) entry of the windows holding it."""
        B, C = dw.shape[:2]
        dw = dw.expand(B, C, *self.idx.shape)
        out = dw.new_zeros(B, C, self.x.shape[2] * self.x.shape[3])
        index = self.idx.flatten().expand(B, C, -1)
        return out.scatter_reduce_(2, index, dw.reshape(B, C, -1), how, include_self=False).view(
            B, C, *self.x.shape[2:]
        )

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """Project window patches onto their sets (structure ball × luminance interval)."""
        return self._project(v, self.a, self.r, self.b, self.s)[0]

    def _project(self, v, a, r, b, s, excess: bool = False):
        """Projection onto the sets (a, r, b, s) and, with ``excess``, each window's largest violation before it."""
        w = v - a  # a is zero-mean: w's mean is v's, its zero-mean part is Pv − a
        m = w.mean(
            -1, keepdim=True
        )  # (mean, subtract, sum of squares: ~10× faster than var_mean here)
        z = w.sub_(m)
        nd = (z * z).sum(-1, keepdim=True).sqrt_()
        over = (nd - r) if excess else None
        scale = torch.clamp(r / nd.clamp_min(1e-30), max=1.0)
        mm = m
        if self.luminance:
            if excess:
                over = torch.maximum(over, (m - b).abs() - s)
            mm = torch.minimum(torch.maximum(m, b - s), b + s)
        # a + (w − m)·scale + mm
        return torch.addcmul(a, z, scale).add_(mm), over

    # --- feasibility ---------------------------------------------------------------------------
    def violations(self, delta: torch.Tensor) -> torch.Tensor:
        """Per image, the largest violation of any window bound or of the box (0 when feasible)."""
        dw = self.gather(delta)
        m = dw.mean(-1, keepdim=True)
        ball = ((dw - m - self.a).norm(dim=-1, keepdim=True) - self.r).clamp_min(0)
        worst = ball.flatten(1).amax(1)
        if self.luminance:
            worst = torch.maximum(
                worst, ((m - self.b).abs() - self.s).clamp_min(0).flatten(1).amax(1)
            )
        box = torch.maximum(self.lo - delta, delta - self.hi).clamp_min(0).flatten(1).amax(1)
        return torch.maximum(worst, box)

    def restore(self, delta: torch.Tensor, sweeps: int = 10, stop: float = 0.0) -> torch.Tensor:
        """A feasible point near ``delta``: alternating projections, then an exact scaling towards 0.

        Each sweep projects every group of mutually disjoint windows onto its sets (exact, in
        parallel) and then clips to the box; it stops after ``sweeps``, once no window is off by
        more than rounding, or once no window is off by more than ``stop`` times its radius (the
        smaller of r_w and, with luminance, s_w; the scaling then costs about that fraction of the
        objective). The sets are convex and hold δ = 0, so for each window the admissible
        scales of the result form an interval [0, θ_w]: disjoint windows are then scaled one by one,
        overlapping ones by the smallest θ_w of their image and channel, which is exactly feasible
        and, after the sweeps, close to 1. Per image, the better (by ⟨g, δ⟩) of this point and of
        ``delta`` scaled without the sweeps is returned."""
        delta = torch.minimum(torch.maximum(delta, self.lo), self.hi)
        scaled = self.scale_in(delta)  # the scaling alone, kept where it scores higher
        delta = delta.clone()
        flat = delta.view(delta.shape[0], delta.shape[1], -1)
        tiny = (
            16 * torch.finfo(delta.dtype).eps * (1 + float(self.r.max()) if self.r.numel() else 1)
        )
        radius = torch.minimum(self.r, self.s) if self.luminance else self.r
        for _ in range(sweeps):
            worst = delta.new_zeros(())
            worst_rel = delta.new_zeros(())
            for g, idx in zip(self.groups, self.group_idx):
                z, excess = self._project(
                    flat[:, :, idx],
                    self.a[:, :, g],
                    self.r[:, :, g],
                    self.b[:, :, g],
                    self.s[:, :, g],
                    True,
                )
                flat[:, :, idx] = z
                worst = torch.maximum(worst, excess.max())
                if stop:
                    worst_rel = torch.maximum(
                        worst_rel, (excess / radius[:, :, g].clamp_min(1e-30)).max()
                    )
            torch.minimum(torch.maximum(delta, self.lo), self.hi, out=delta)
            if float(worst) <= tiny or (stop and float(worst_rel) <= stop):
                break
        delta = self.scale_in(delta)
        return torch.where(
            (self.objective(scaled) > self.objective(delta)).view(-1, 1, 1, 1), scaled, delta
        )

    def scale_in(self, delta: torch.Tensor) -> torch.Tensor:
        """Scale δ (inside the box) towards 0 until every window bound holds exactly (see :meth:`restore`)."""
        dw = self.gather(delta)
        m = dw.mean(-1, keepdim=True)
        z = dw - m
        A = (z * z).sum(-1, keepdim=True)
        Bq = (z * self.a).sum(-1, keepdim=True)
        Cq = (self.a * self.a).sum(-1, keepdim=True) - self.r * self.r  # ≤ 0: δ = 0 is feasible
        disc = (Bq * Bq - A * Cq).clamp_min(0)
        inf = torch.full_like(A, math.inf)
        theta = torch.where(A > 0, (Bq + disc.sqrt()) / A.clamp_min(1e-300), inf)
        if self.luminance:
            lim = torch.where(m > 0, (self.b + self.s) / m.clamp_min(1e-300), inf)
            lim = torch.where(m < 0, (self.b - self.s) / m.clamp(max=-1e-300), lim)
            theta = torch.minimum(theta, lim)
        theta = theta.clamp(0, 1) * (
            1 - max(1e-9, 64 * torch.finfo(theta.dtype).eps)
        )  # a margin that survives rounding
        if self.disjoint:
            return self.fold(dw * theta)
        return delta * theta.flatten(2).amin(2)[:, :, None, None]

    # --- objective and certificate ---------------------------------------------------------------
    def objective(self, delta: torch.Tensor) -> torch.Tensor:
        return (self.g * delta).flatten(1).sum(1)

    def dual_bound(self, lam: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """Lagrange dual function at window multipliers ``lam``: an upper bound on the optimum of
        ⟨g, δ⟩ (``g`` defaults to the problem's objective), for any ``lam``.

        h(λ) = max over the implied box of ⟨g − Uᵀλ, δ⟩ + Σ_w support of window w's set at λ_w,
        where U gathers the windows (Uᵀ = :meth:`fold`, which sums each pixel's window entries, so a
        pixel covered by k windows carries k multipliers) and the implied box (the image box
        intersected with the per-pixel bounds every window implies, a redundant constraint) keeps
        the box term small when Uᵀλ nearly matches g."""
        if (
            not self.luminance
        ):  # the set is unbounded along each window's mean: use λ's zero-mean part
            lam = lam - lam.mean(-1, keepdim=True)
        c = (self.g if g is None else g) - self.fold(lam)
        box = (
            (c.clamp_min(0) * self.hi_implied + c.clamp(max=0) * self.lo_implied).flatten(1).sum(1)
        )
        total = lam.sum(-1, keepdim=True)
        pl = lam - total / lam.shape[-1]
        sup = (lam * self.a).sum(-1, keepdim=True) + self.r * pl.norm(dim=-1, keepdim=True)
        if self.luminance:
            sup = sup + self.b * total + self.s * total.abs()
        return box + sup.flatten(1).sum(1)

    def certify(self, lam: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """The better of two dual bounds: at ``lam``, and at ``lam`` plus the residual g − Uᵀλ spread
        evenly over each pixel's windows (then Uᵀλ = g: no box term, larger support terms)."""
        c = (self.g if g is None else g) - self.fold(lam)
        return torch.minimum(
            self.dual_bound(lam, g), self.dual_bound(lam + self.gather(c / self.count), g)
        )


@dataclass
class Solution:
    delta: torch.Tensor  # B×C×H×W, feasible
    objective: torch.Tensor  # B, ⟨g, δ⟩
    bound: torch.Tensor  # B, an upper bound on the optimum (NaN for CVXPY)
    violation: torch.Tensor  # B
    iterations: int
    seconds: float
    lam: torch.Tensor | None = (
        None  # B×C×windows×n window multipliers for ‖g‖ = 1 (ADMM; a warm start)
    )

    @property
    def gap(self) -> torch.Tensor:
        """Per image, the certified relative gap (bound − objective)/|bound| (NaN without a bound)."""
        return (self.bound - self.objective) / self.bound.abs().clamp_min(1e-30)


def _window_optimum(p: SSIMBallProblem, gw: torch.Tensor) -> torch.Tensor:
    """Each window's own maximiser of ⟨gw_w, y_w⟩ over its set (closed form)."""
    m = gw.mean(-1, keepdim=True)
    pg = gw - m
    y = p.a + p.r * pg / pg.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    if p.luminance:
        y = y + p.b + p.s * torch.sign(m)
    return y


def solve_admm(
    p: SSIMBallProblem,
    tol: float = 1e-3,
    max_iter: int = 3000,
    check_every: int = 25,
    alpha: float = 1.6,
    warm: Solution | None = None,
    restore_sweeps: int = 10,
    restore_stop: float | None = None,
) -> Solution:
    """Certified consensus ADMM over all windows, disjoint or overlapping, for a batch of images.

    Each window w has a copy y_w ∈ C_w of its pixels, constrained to y = Uδ. Per window penalty
    ρ_w = ‖g_w‖ / size of C_w (g_w: the window's share g/count of the objective), so windows with
    little objective and windows with large sets are balanced; a per-image factor on all ρ_w follows
    residual balancing; steps are over-relaxed (``alpha``). The δ step is a clip (UᵀU is diagonal:
    each pixel's window count) to the box the window bounds imply. Start: every window at its own
    optimum with multipliers λ_w = g_w (exact for disjoint windows where the box is inactive), or
    ``warm`` (a previous solution of the same x: its δ and multipliers). Every ``check_every``
    iterations the dual bound at λ = ρu is evaluated (:meth:`SSIMBallProblem.certify`, over the
    implied box); when the current δ is within ``tol`` of it,
    :meth:`SSIMBallProblem.restore` makes δ exactly feasible (at most ``restore_sweeps`` sweeps,
    ending once every window is within ``restore_stop``, default ``tol``/10, of its radius: the
    final scaling then costs about that fraction of the objective, and the sweeps after it would buy
    less than the tolerance; ours), and an image stops (and leaves the
    batch) when its (bound − objective) ≤ tol·bound: the returned δ is feasible and provably
    within ``tol`` of the optimum. Device and dtype follow ``p.x``."""
    t0 = time.perf_counter()
    B = p.x.shape[0]
    view = (-1, 1, 1, 1)
    dev, dt = p.x.device, p.x.dtype
    gn = p.g.flatten(1).norm(dim=1).clamp_min(1e-30)
    out_delta = torch.zeros_like(p.x)
    out_obj = torch.zeros(B, dtype=dt, device=dev)
    out_ub = torch.full((B,), math.inf, dtype=dt, device=dev)
    out_lam = torch.zeros_like(p.gather(p.x))
    if p.luminance and p.epsilon == 0.0:  # the set is {0}
        return Solution(
            out_delta,
            out_obj,
            out_obj.clone(),
            p.violations(out_delta),
            0,
            time.perf_counter() - t0,
            out_lam,
        )
    q = p.select(torch.arange(B, device=dev))
    q.g = p.g / gn.view(view)  # scale-free: every image's objective has unit gradient norm
    n = p.size * p.size
    gw = q.gather(q.g / q.count)
    half = (
        q.s if q.luminance else 0.5
    )  # the window mean's range: the luminance interval, else the box (width 1)
    size_w = torch.sqrt(q.r * q.r + n * half * half)
    gnw = gw.norm(dim=-1, keepdim=True)
    rho = torch.maximum(gnw, 1e-2 * gnw.mean((1, 2, 3), keepdim=True) + 1e-12) / size_w.clamp_min(
        1e-12
    )
    if warm is not None and warm.lam is not None and warm.lam.shape == gw.shape:
        y, u = q.project(q.gather(warm.delta.to(dev, dt))), warm.lam.to(dev, dt) / rho
    else:
        y, u = _window_optimum(q, gw), gw / rho
    weight = q.fold(rho.expand_as(gw))
    best = torch.zeros_like(q.x)
    best_obj = torch.zeros(B, dtype=dt, device=dev)
    best_ub = torch.full((B,), math.inf, dtype=dt, device=dev)
    act = torch.arange(B, device=dev)
    it = 0
    for it in range(1, max_iter + 1):
        delta = torch.minimum(
            torch.maximum((q.fold((y - u).mul_(rho)) + q.g) / weight, q.lo_implied), q.hi_implied
        )
        ud = q.gather(delta)
        v = torch.lerp(y, ud, alpha)  # over-relaxation: α·Uδ + (1 − α)·y
        y_old = y
        y = q.project(v + u)
        u = u.add_(v).sub_(y)
        last = it == max_iter
        if it % check_every and not last:
            continue
        best_ub = torch.minimum(best_ub, q.certify(rho * u))
        near = (best_ub - q.objective(delta)) <= tol * best_ub.abs() + 1e-12
        if bool(near.any()) or last:
            cand = q.restore(
                delta, restore_sweeps, tol / 10 if restore_stop is None else restore_stop
            )
            obj = q.objective(cand)
            better = obj > best_obj
            best = torch.where(better.view(view), cand, best)
            best_obj = torch.where(better, obj, best_obj)
        done = (best_ub - best_obj) <= tol * best_ub.abs() + 1e-12
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "ssim admm it %d: %d active, largest gap %.3g, bound %s, objective %s",
                it,
                len(act),
                float(((best_ub - best_obj) / best_ub.abs().clamp_min(1e-30)).max()),
                best_ub.tolist()[:4],
                best_obj.tolist()[:4],
            )
        if last:
            done = torch.ones_like(done)
        if bool(done.any()):
            ids = act[done]
            out_delta[ids], out_obj[ids], out_ub[ids], out_lam[ids] = (
                best[done],
                best_obj[done],
                best_ub[done],
                (rho * u)[done],
            )
            keep = (~done).nonzero()[:, 0]
            if len(keep) == 0:
                break
            act, q = act[keep], q.select(keep)
            q.g = p.g[act] / gn[act].view(view)
            y, y_old, u, ud, rho, weight = (
                y[keep],
                y_old[keep],
                u[keep],
                ud[keep],
                rho[keep],
                weight[keep],
            )
            best, best_obj, best_ub = best[keep], best_obj[keep], best_ub[keep]
        r_prim = (ud - y).flatten(1).norm(dim=1)
        r_dual = q.fold(rho * (y - y_old)).flatten(1).norm(dim=1)
        up, down = r_prim > 10 * r_dual, r_dual > 10 * r_prim
        factor = torch.where(up, 2.0, torch.where(down, 0.5, 1.0)).to(dt).view(view)
        rho, u, weight = rho * factor, u / factor, weight * factor
    return Solution(
        delta=out_delta,
        objective=p.objective(out_delta),
        bound=out_ub * gn,
        violation=p.violations(out_delta),
        iterations=it,
        seconds=time.perf_counter() - t0,
        lam=out_lam,
    )


def cvxpy_problem(p: SSIMBallProblem, i: int):
    """Image ``i`` of a problem batch as a CVXPY problem (one vectorised cone constraint)."""
    # lazy: only the CVXPY reference needs these (cvxpy takes about 1 s to import)
    import cvxpy as cp
    import scipy.sparse as sp

    C, H, W = p.x.shape[1:]
    idx = p.idx.cpu().numpy()
    nw, n = idx.shape
    # rows: for every channel and window, the window's pixels minus their mean
    rows = np.arange(C * nw * n)
    chan = np.repeat(np.arange(C), nw * n)
    cols = chan * H * W + np.tile(idx.reshape(-1), C)
    gather = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(C * nw * n, C * H * W))
    mean = sp.kron(sp.eye(C * nw), np.full((1, n), 1.0 / n), format="csr") @ gather
    center = gather - sp.kron(sp.eye(C * nw), np.full((n, 1), 1.0), format="csr") @ mean
    x = p.x[i].double().cpu().numpy().reshape(-1)
    g = p.g[i].double().cpu().numpy().reshape(-1)
    a = p.a[i].double().cpu().numpy().reshape(-1)
    r = p.r[i].double().cpu().numpy().reshape(-1)
    d = cp.Variable(C * H * W)
    zero_mean = cp.reshape(center @ d - a, (n, C * nw), order="F")
    cons = [cp.SOC(r, zero_mean, axis=0), d >= -x, d <= 1 - x]
    if p.luminance:
        b = p.b[i].double().cpu().numpy().reshape(-1)
        s = p.s[i].double().cpu().numpy().reshape(-1)
        cons.append(cp.abs(mean @ d - b) <= s)
    return cp.Problem(cp.Maximize(g @ d), cons), d


def solve_cvxpy(p: SSIMBallProblem, solver: str = "clarabel", **options) -> Solution:
    """The reference: every image of the batch solved by CVXPY with Clarabel or SCS."""
    # lazy: only the CVXPY reference needs these (cvxpy takes about 1 s to import)
    import cvxpy as cp

    names = {"clarabel": cp.CLARABEL, "scs": cp.SCS}
    if solver not in names:
        raise ConfigError(f"CVXPY solver must be one of {', '.join(names)}, got {solver!r}")
    t0 = time.perf_counter()
    out = torch.zeros_like(p.x)
    for i in range(p.x.shape[0]):
        prob, d = cvxpy_problem(p, i)
        prob.solve(solver=names[solver], **options)
        if d.value is None or prob.status not in ("optimal", "optimal_inaccurate"):
            raise RuntimeError(f"CVXPY/{solver} did not solve image {i}: status {prob.status}")
        out[i] = torch.from_numpy(np.asarray(d.value)).view(p.x.shape[1:]).to(p.x)
    nan = torch.full((p.x.shape[0],), math.nan)
    return Solution(
        delta=out,
        objective=p.objective(out),
        bound=nan,
        violation=p.violations(out),
        iterations=0,
        seconds=time.perf_counter() - t0,
    )


def solve(p: SSIMBallProblem, solver: str = "admm", **options) -> Solution:
    if solver == "admm":
        return solve_admm(p, **options)
    if solver in ("clarabel", "scs"):
        return solve_cvxpy(p, solver, **options)
    raise ConfigError(f"ssim solver must be one of {', '.join(SOLVERS)}, got {solver!r}")


# --- the attack: sequential convex programming (the loss's gradient: gradients.loss_gradient) ----


class SSIMBall:
    """Untargeted SSIM-ball attack (P2), torchattacks style: build with its settings, call on
    ``(images, labels)`` in [0, 1].

    Each step linearises the loss (``margin``: best other logit − true logit, or ``ce``) at the
    current x+δ and solves the convex step (maximise ⟨∇, δ'⟩ over the SSIM ball around the *clean*
    x); δ ← (1 − ``step_size``)·δ + ``step_size``·δ' stays in the ball (it is convex). Images stop
    when misclassified; at most ``steps`` steps. An image's ADMM solve starts from its previous
    step's solution and multipliers (same x, same sets; ours). :meth:`run` also returns per-image
    diagnostics.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        epsilon: float,
        size: int = 8,
        stride: int = 8,
        luminance: bool = True,
        steps: int = 10,
        loss: str = "margin",
        step_size: float = 1.0,
        solver: str = "admm",
        tol: float = 1e-3,
        max_iter: int = 3000,
        k1: float = 0.01,
        k2: float = 0.03,
    ):
        self.epsilon = check_epsilon(epsilon)
        if loss not in LOSSES:
            raise ConfigError(f"SSIM-ball loss must be one of {LOSSES}, got {loss!r}")
        if solver not in SOLVERS:
            raise ConfigError(f"SSIM-ball solver must be one of {SOLVERS}, got {solver!r}")
        if not 0 < step_size <= 1 or steps < 1:
            raise ConfigError(
                f"SSIM-ball needs 0 < step_size <= 1 and steps >= 1, got {step_size}, {steps}"
            )
        self.model, self.size, self.stride, self.luminance = model, size, stride, luminance
        self.steps, self.loss, self.step_size, self.solver = (
            int(steps),
            loss,
            float(step_size),
            solver,
        )
        self.options = {"tol": tol, "max_iter": max_iter} if solver == "admm" else {}
        self.k1, self.k2 = k1, k2

    def run(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        x = images.detach()
        check_windows(self.size, self.stride, x.shape[-2], x.shape[-1])
        n = len(x)
        delta = torch.zeros_like(x)
        steps = torch.zeros(n, dtype=torch.long)
        gap = torch.zeros(n, dtype=torch.float64)
        with torch.no_grad():
            fooled = self.model(x).argmax(1) != labels
        prev = None  # the last step's solutions (δ', multipliers): the next step's warm start (same x, same sets)
        for _ in range(self.steps):
            active = (~fooled).nonzero()[:, 0]
            if len(active) == 0:
                break
            xa, ya = x[active], labels[active]
            grad = loss_gradient(self.model, xa + delta[active], ya, self.loss)
            prob = SSIMBallProblem(
                xa, grad, self.epsilon, self.size, self.stride, self.luminance, self.k1, self.k2
            )
            options = dict(self.options)
            if prev is not None and self.solver == "admm":
                options["warm"] = Solution(
                    prev[0][active], None, None, None, 0, 0.0, prev[1][active]
                )
            sol = solve(prob, self.solver, **options)
            if self.solver == "admm":
                if prev is None:
                    prev = (torch.zeros_like(x), x.new_zeros((n,) + tuple(sol.lam.shape[1:])))
                prev[0][active], prev[1][active] = sol.delta, sol.lam
            new = (1 - self.step_size) * delta[active] + self.step_size * sol.delta
            delta[active] = new
            rel = ((sol.bound - sol.objective) / sol.bound.abs().clamp_min(1e-30)).double().cpu()
            gap[active.cpu()] = torch.maximum(gap[active.cpu()], torch.nan_to_num(rel, nan=0.0))
            steps[active.cpu()] += 1
            with torch.no_grad():
                fooled[active] = self.model(xa + new).argmax(1) != ya
        return {
            "adv": (x + delta).clamp(0, 1).detach(),
            "success": fooled.cpu(),
            "steps": steps,
            "gap": gap,
        }

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.run(images, labels)["adv"]


# --- direct SSIM factors (independent of the ball derivation; for checks) ---------------------------
def window_factors(
    x: torch.Tensor, y: torch.Tensor, size: int, stride: int, k1: float = 0.01, k2: float = 0.03
):
    """Per window and channel, SSIM's luminance and contrast-structure factors between x and y."""
    idx = window_index(x.shape[-2], x.shape[-1], size, stride).to(x.device)
    xw, yw = x.flatten(2)[:, :, idx].double(), y.flatten(2)[:, :, idx].double()
    n = idx.shape[1]
    mx, my = xw.mean(-1), yw.mean(-1)
    xt, yt = xw - mx[..., None], yw - my[..., None]
    c1, c2 = k1**2, k2**2
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    struct = (2 * (xt * yt).sum(-1) + (n - 1) * c2) / (
        (xt * xt).sum(-1) + (yt * yt).sum(-1) + (n - 1) * c2
    )
    return lum, struct


__all__ = [
    "LOSSES",
    "SOLVERS",
    "SSIMBall",
    "SSIMBallProblem",
    "Solution",
    "check_epsilon",
    "check_windows",
    "cvxpy_problem",
    "solve",
    "solve_admm",
    "solve_cvxpy",
    "window_factors",
    "window_groups",
    "window_index",
    "window_starts",
]
