"""Projected gradient descent (Madry et al. 2018), optionally restricted to a pixel mask (P3).

torchattacks style: build with the settings, call on ``(images, labels)`` in [0, 1]; the model
wrapper normalises. A mask (H×W, or N×1×H×W, boolean) confines the perturbation to the selected
pixels in every channel: ``x_adv = x + δ·mask`` (the authors' ``adv·mask + x·(1 − mask)``).

Norms:

* ``linf`` — sign steps of size ``alpha``, projection onto ‖δ‖∞ ≤ ``eps``;
* ``l2`` — steps of size ``alpha`` along the L2-normalised (masked) gradient, projection onto
  ‖δ‖₂ ≤ ``eps`` per image. (The authors' ``pgd_l2`` instead clips each pixel to ±0.031 after an
  L2-normalised step, an L∞ box with L2 steps; ours is the standard L2 ball, see docs/p3.md.)

Every iterate is clipped to [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

NORMS = ("linf", "l2")


class PGD:
    """Untargeted PGD on the cross-entropy loss.

    ``random_start`` draws δ₀ uniformly from the ball (L∞) or on a random direction scaled by a
    uniform radius (L2), with its own generator seeded by ``seed`` so results do not depend on
    the global RNG. Called with ``seeds`` (one int per image, e.g. derived from the image ids),
    each image's start is drawn from its own generator instead, so an image's attack does not
    depend on the batch or chunk it is in (the workflow's rules do this).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        seed: int = 0,
    ):
        if norm not in NORMS:
            raise ValueError(f"PGD norm must be one of {NORMS}, got {norm!r}")
        if eps < 0 or alpha <= 0 or steps < 0:
            raise ValueError(
                f"PGD needs eps >= 0, alpha > 0, steps >= 0; got eps={eps}, alpha={alpha}, steps={steps}"
            )
        self.model, self.eps, self.alpha, self.steps = model, float(eps), float(alpha), int(steps)
        self.norm, self.random_start, self.seed = norm, random_start, seed

    def _mask(self, mask, images: torch.Tensor) -> torch.Tensor:
        if mask is None:
            return torch.ones(len(images), 1, *images.shape[-2:], device=images.device)
        m = torch.as_tensor(mask, device=images.device).float()
        if m.ndim == 2:
            m = m[None, None]
        if m.shape[-2:] != images.shape[-2:] or m.ndim != 4 or m.shape[1] != 1:
            raise ValueError(
                f"PGD mask must be H×W or N×1×H×W matching images {tuple(images.shape)}, got {tuple(m.shape)}"
            )
        return m.expand(len(images), 1, *images.shape[-2:])

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return delta * (self.eps / norms).clamp(max=1.0).view(-1, 1, 1, 1)

    def _draws(self, shape, seeds) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Uniform (and, for L2, normal) draws of ``shape`` on the CPU: one generator for the batch
        (``self.seed``), or one per image (``seeds``)."""
        if seeds is None:
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            r = torch.rand(shape, generator=g)
            return r, (torch.randn(shape, generator=g) if self.norm == "l2" else None)
        seeds = [int(s) for s in seeds]
        if len(seeds) != shape[0]:
            raise ValueError(f"PGD seeds: {len(seeds)} seeds for a batch of {shape[0]} images")
        rs, ns = [], []
        for s in seeds:
            g = torch.Generator(device="cpu").manual_seed(s)
            rs.append(torch.rand(shape[1:], generator=g))
            if self.norm == "l2":
                ns.append(torch.randn(shape[1:], generator=g))
        return torch.stack(rs), (torch.stack(ns) if ns else None)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, mask=None, seeds=None
    ) -> torch.Tensor:
        x = images.detach()
        m = self._mask(mask, x)
        full = mask is None  # no mask: skip the multiplications by ones
        delta = torch.zeros_like(x)
        if self.random_start and self.eps > 0:
            r, n = self._draws(x.shape, seeds)
            r = r.to(x.device)
            if self.norm == "linf":
                delta = (2 * r - 1) * self.eps
            else:
                d = n.to(x.device) * m
                d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                delta = d * self.eps * r.flatten(1)[:, :1].view(-1, 1, 1, 1)
            delta = self._project(delta * m)
            delta = (x + delta).clamp(0, 1) - x
        for _ in range(self.steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(self.model(x + delta), labels)
            (grad,) = torch.autograd.grad(loss, delta)
            if not full:
                grad = grad * m
            with torch.no_grad():
                if self.norm == "linf":
                    step = grad.sign()
                else:
                    step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                delta = self._project(delta + self.alpha * step)
                if not full:
                    delta = delta * m
                delta = (x + delta).clamp(0, 1) - x
        return (x + delta).detach()
