"""The five attacks of P3's defence table, torchattacks-style: build with settings, call on (images, labels).

Inputs and outputs are images in [0, 1]; the model wrapper normalises. Settings follow the
authors' code (branch ``nsml``; see ``docs/p3.md``):

* ``onepixel`` — Su et al.'s DE (:class:`pixelrobust.onepixel.DifferentialEvolution`: population
  400, 100 generations, F 0.5, CR 1, early stop), the winning pixel written into the image;
* ``jsma`` — ``torchattacks.JSMA(θ = 1, γ = 0.1)`` (pairs of pixels per iteration). Its saliency
  map is quadratic in the number of input features, so it is refused above ``max_features``
  (default 3·64·64): on 224×224 ImageNet it needs about 90 GB per image;
* ``deepfool`` — ours: L2 DeepFool (Moosavi-Dezfooli et al.) over the ``candidates`` most likely
  classes (the original implementation's 10), 50 iterations, overshoot 0.02, batched over images
  (torchattacks' version differentiates every class, 1000 backward passes per step on ImageNet);
* ``cw`` — ours: Carlini & Wagner L2 with the authors' schedule (c starts at 1e-3 and is
  multiplied by 10 for images not yet fooled, ``outer_steps`` × ``steps`` Adam iterations at
  lr 1e-2, κ = 0), keeping the smallest successful perturbation per image;
* ``pgd`` — :class:`pixelrobust.pgd.PGD` (L∞, ε 8/255).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .onepixel import DifferentialEvolution
from .pgd import PGD
from .runtime import model_device


class OnePixel:
    def __init__(self, model: nn.Module, popsize: int = 400, maxiter: int = 100, F: float = 0.5, CR: float = 1.0,
                 seed: int = 0, batch_size: int | None = None):
        self.de = DifferentialEvolution(model, popsize, maxiter, F, CR, seed=seed, batch_size=batch_size)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = images.clone()
        for i, r in enumerate(self.de(images, labels)):
            row, col = r.pixel
            adv[i, :, row, col] = torch.as_tensor(r.colour, dtype=adv.dtype)
        return adv


class JSMA:
    def __init__(self, model: nn.Module, theta: float = 1.0, gamma: float = 0.1, max_features: int = 3 * 64 * 64):
        import torchattacks

        self.attack, self.max_features = torchattacks.JSMA(model, theta=theta, gamma=gamma), int(max_features)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = images[0].numel()
        if features > self.max_features:
            raise ValueError(
                f"JSMA's pairwise saliency map needs memory quadratic in the {features} input features "
                f"(limit attacks.jsma.max_features = {self.max_features}); it is not run at this image size"
            )
        return self.attack(images, labels)


class DeepFool:
    def __init__(self, model: nn.Module, steps: int = 50, overshoot: float = 0.02, candidates: int = 10):
        self.model, self.steps, self.overshoot, self.candidates = model, int(steps), float(overshoot), int(candidates)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        device = model_device(self.model)
        x0 = images.detach().to(device)
        labels = labels.to(device)
        with torch.no_grad():
            logits = self.model(x0)
        k = min(self.candidates, logits.shape[1])
        cand = logits.topk(k, dim=1).indices  # N × k (the true label is put first below)
        others = torch.stack([torch.cat([c[c != y], c[c == y]])[: k - 1] for c, y in zip(cand, labels)]) if k > 1 else cand[:, :0]
        r_total = torch.zeros_like(x0)
        active = logits.argmax(1) == labels
        for _ in range(self.steps):
            if not active.any():
                break
            idx = active.nonzero().squeeze(1)
            x = (x0[idx] + (1 + self.overshoot) * r_total[idx]).clamp(0, 1).requires_grad_(True)
            out = self.model(x)
            y, oth = labels[idx], others[idx]
            f_y = out.gather(1, y[:, None]).squeeze(1)
            (g_y,) = torch.autograd.grad(f_y.sum(), x, retain_graph=True)
            best_dist = torch.full((len(idx),), float("inf"), device=device)
            best_step = torch.zeros_like(x)
            for j in range(oth.shape[1]):
                f_k = out.gather(1, oth[:, j : j + 1]).squeeze(1)
                (g_k,) = torch.autograd.grad(f_k.sum(), x, retain_graph=j < oth.shape[1] - 1)
                w = g_k - g_y
                f = (f_k - f_y).detach()
                wn = w.flatten(1).norm(dim=1).clamp_min(1e-8)
                dist = f.abs() / wn
                better = dist < best_dist
                step = ((f.abs() + 1e-4) / wn**2).view(-1, 1, 1, 1) * w
                best_dist = torch.where(better, dist, best_dist)
                best_step = torch.where(better.view(-1, 1, 1, 1), step, best_step)
            r_total[idx] = r_total[idx] + best_step.detach()
            with torch.no_grad():
                pred = self.model((x0[idx] + (1 + self.overshoot) * r_total[idx]).clamp(0, 1)).argmax(1)
            active[idx] = pred == y
        return (x0 + (1 + self.overshoot) * r_total).clamp(0, 1).detach()


class CW:
    def __init__(self, model: nn.Module, c: float = 1e-3, c_factor: float = 10.0, outer_steps: int = 10, steps: int = 100,
                 lr: float = 0.01, kappa: float = 0.0):
        self.model, self.c, self.c_factor, self.outer, self.steps = model, float(c), float(c_factor), int(outer_steps), int(steps)
        self.lr, self.kappa = float(lr), float(kappa)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        device = model_device(self.model)
        x0 = images.detach().to(device)
        labels = labels.to(device)
        n = len(x0)
        best = x0.clone()
        best_l2 = torch.full((n,), float("inf"), device=device)
        c = torch.full((n,), self.c, device=device)
        w0 = torch.atanh((x0 * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        for _ in range(self.outer):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=device)
            for _ in range(self.steps):
                adv = (torch.tanh(w) + 1) / 2
                logits = self.model(adv)
                onehot = F.one_hot(labels, logits.shape[1]).bool()
                real = logits[onehot]
                other = logits.masked_fill(onehot, float("-inf")).amax(1)
                f = (real - other + self.kappa).clamp_min(0)
                l2 = (adv - x0).flatten(1).pow(2).sum(1)
                loss = (l2 + c * f).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    fooled = logits.argmax(1) != labels
                    better = fooled & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best[better] = adv[better].detach()
                    found |= fooled
            c = torch.where(found | torch.isfinite(best_l2), c, c * self.c_factor)
            if torch.isfinite(best_l2).all():
                break
        return best.detach()


ATTACKS = {"onepixel": OnePixel, "jsma": JSMA, "deepfool": DeepFool, "cw": CW, "pgd": PGD}


def build_attack(name: str, model: nn.Module, settings: dict | None = None, seed: int = 0):
    """An attack by name with its settings (``seed`` goes to the randomised ones)."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    settings = dict(settings or {})
    if name in ("onepixel", "pgd"):
        settings.setdefault("seed", seed)
    return ATTACKS[name](model, **settings)
