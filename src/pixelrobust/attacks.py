"""The five attacks of P3's defence table, torchattacks-style: build with settings, call on (images, labels).

Inputs and outputs are images in [0, 1]; the model wrapper normalises. "The authors'" below means
their code (github niffler92/where-adversarial-added, branch ``nsml``, ``submodules/attacks/``;
the paper's text could not be read, docs/sources.md compares every setting):

* ``onepixel`` — Su et al.'s DE (:class:`pixelrobust.onepixel.DifferentialEvolution`: population
  400, 100 generations, F 0.5, CR 1, rand/1, early stop: Su et al.'s and the authors'), with our
  encoding (a 1-D index into the allowed pixels and real colours; theirs: x, y and 8-bit colours),
  the winning pixel written into the image;
* ``jsma`` — our implementation, :class:`JSMA`: the authors' θ = 1 in normalised space, γ = 0.1,
  least-likely target and re-picking (``theta_space: normalized``, ``target: least_likely``,
  ``search_domain: until_clipped``) or torchattacks' textbook settings (the defaults); the
  saliency map of ``torchattacks.JSMA`` from two backward passes per iteration instead of one per
  class; on ImageNet the pair search is restricted to the most salient features (a full pair map
  of a 224×224×3 image needs about 90 GB);
* ``deepfool`` — ours: L2 DeepFool (Moosavi-Dezfooli et al.), 50 iterations (the authors'), over
  the ``candidates`` most likely classes (the original implementation's 10; the authors' code
  loops over every class), overshoot 0.02, batched over images (torchattacks' version
  differentiates every class, 1000 backward passes per step on ImageNet);
* ``cw`` — ours: Carlini & Wagner L2 with the authors' constants (c starts at 1e-3, ×10,
  ``outer_steps`` × ``steps`` Adam iterations at lr 1e-2, κ = 0) but our schedule for c: it is
  multiplied by 10 for images not yet fooled and then **kept fixed** (the authors' ``cnw.py``
  multiplies by 10 only until the first success and then bisects c between the largest failing
  and the smallest succeeding value); keeping the smallest successful perturbation per image; as
  in Carlini & Wagner's reference code (not the authors'), an inner loop stops early when the loss
  has not fallen by 0.01 % over the last ``steps / 10`` iterations (``abort_early``);
* ``pgd`` — :class:`BoxPGD`, the authors' form (``alpha_space: normalized``: a step of α in the
  model's normalised space, then each pixel clipped to ±ε; ``norm: linf`` = their ``pgd_linf_*``,
  ``l2_box`` = their ``pgd_l2_*``), or :class:`pixelrobust.pgd.PGD` in pixel space (L∞ or an L2
  ball, ours).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .models import Classifier
from .onepixel import DifferentialEvolution
from .pgd import PGD
from .runtime import model_device


class OnePixel:
    """Su et al.'s one-pixel attack: our DE; ``batch_size`` candidate images per forward pass (100:
    on this 2-core CPU ResNet-20 runs a DE 40 % faster in batches of 100 than of 256, and twice as
    fast as in one batch of thousands; raise it on a GPU)."""

    def __init__(
        self,
        model: nn.Module,
        popsize: int = 400,
        maxiter: int = 100,
        F: float = 0.5,
        CR: float = 1.0,
        seed: int = 0,
        batch_size: int | None = 100,
        strategy: str = "rand1",
    ):
        self.de = DifferentialEvolution(
            model, popsize, maxiter, F, CR, seed=seed, batch_size=batch_size, strategy=strategy
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = images.clone()
        for i, r in enumerate(self.de(images, labels)):
            row, col = r.pixel
            adv[i, :, row, col] = torch.as_tensor(r.colour, dtype=adv.dtype)
        return adv


class JSMA:
    """Papernot et al.'s JSMA (increasing saliency, two features per iteration), batched over images.

    The saliency map needs only two gradients per iteration, ∂Z_t/∂x and ∂(Σ_j Z_j)/∂x (the other
    classes' sum is their difference), where torchattacks builds the full Jacobian with one backward
    pass per class (10 on CIFAR-10, 1 000 on ImageNet). The pair search is the textbook one over
    every feature still in the search domain, pruned by an exact bound (:meth:`_pair`); only when
    more than ``pair_features`` features survive the bound (possible on ImageNet, where a full
    pair map of 150 528 features needs 90 GB) is it restricted to the ``pair_features`` features
    with the largest ``∂Z_t/∂x − ∂Z_others/∂x`` (ours).

    Settings, and whose they are (the authors' code: github niffler92/where-adversarial-added,
    branch ``nsml``, ``submodules/attacks/jsma.py``, called with its defaults):

    * ``theta`` — the step added to each chosen feature, in ``theta_space``: ``pixel`` = [0, 1]
      pixel units (torchattacks, Papernot et al.); ``normalized`` = the model's normalised input
      space, so a feature of channel c moves by θ·std_c in pixel units (the authors' code, which
      attacks normalised tensors: θ = 1 there is 0.224–0.229 in pixels with the ImageNet std their
      dataloader uses for CIFAR too). The normalisation is read from the model's
      :class:`pixelrobust.models.Classifier`.
    * ``target`` — ``least_likely`` = the class with the smallest clean logit (the authors' code:
      ``target=None`` means the least likely label); ``next`` = (label + 1) mod classes
      (torchattacks' choice, with the right number of classes); ``second`` = the most likely wrong
      class of the clean image (ours).
    * ``search_domain`` — ``once``: a feature leaves the search domain once chosen (Papernot et
      al., torchattacks; it starts as the features below 0.99); ``until_clipped``: it leaves only
      when it reaches the clip bound, so it can be chosen again (the authors' code; it starts as
      the features below the bound). With θ = 1 in pixel space the two are the same.
    * ``gamma`` — the largest share of features changed: at most ``ceil(γ·features/2)``
      iterations (torchattacks; the authors' code takes the floor, one iteration fewer on CIFAR),
      or ``max_iters`` (ours) if smaller. The attack stops for an image when it reaches the target
      or when no pair has the saliency's signs (ours: there the authors' code takes ``np.argmax``
      of an all-zero score map, i.e. feature 0 twice, raises it by θ and goes on).

    Ours in every setting: features are clipped to the valid pixel range [0, 1] (the authors' code
    clips to the minimum and maximum of the first image it attacks, in normalised space).
    """

    TARGETS = ("next", "second", "least_likely")
    THETA_SPACES = ("pixel", "normalized")
    SEARCH_DOMAINS = ("once", "until_clipped")

    def __init__(
        self,
        model: nn.Module,
        theta: float = 1.0,
        gamma: float = 0.1,
        target: str = "next",
        pair_features: int = 4096,
        max_iters: int | None = None,
        theta_space: str = "pixel",
        search_domain: str = "once",
    ):
        if max_iters is not None and max_iters < 1:
            raise ValueError(f"JSMA max_iters must be at least 1 (or None), got {max_iters}")
        if theta <= 0 or not 0 < gamma <= 1:
            raise ValueError(
                f"JSMA needs theta > 0 and 0 < gamma <= 1, got theta={theta}, gamma={gamma}"
            )
        if target not in self.TARGETS:
            raise ValueError(
                f"JSMA target must be one of {', '.join(self.TARGETS)} (attack_settings.jsma.target), got {target!r}"
            )
        if theta_space not in self.THETA_SPACES:
            raise ValueError(
                f"JSMA theta_space must be 'pixel' or 'normalized' (attack_settings.jsma.theta_space), got {theta_space!r}"
            )
        if search_domain not in self.SEARCH_DOMAINS:
            raise ValueError(
                f"JSMA search_domain must be 'once' or 'until_clipped' (attack_settings.jsma.search_domain), "
                f"got {search_domain!r}"
            )
        if pair_features < 2:
            raise ValueError(f"JSMA pair_features must be at least 2, got {pair_features}")
        self.model, self.theta, self.gamma, self.target, self.pair_features = (
            model,
            float(theta),
            float(gamma),
            target,
            int(pair_features),
        )
        self.max_iters = max_iters
        self.theta_space, self.search_domain = theta_space, search_domain

    def targets(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.target == "next":
            return (labels + 1) % logits.shape[1]
        if self.target == "least_likely":
            return logits.argmin(1)
        return logits.scatter(1, labels[:, None], float("-inf")).argmax(1)

    def steps(self, image_shape: torch.Size, device=None) -> torch.Tensor:
        """The step of every feature (C·H·W, flattened like the image) in pixel units: θ, or θ·std of its channel."""
        c, h, w = image_shape
        if self.theta_space == "pixel":
            return torch.full((c * h * w,), self.theta, device=device)
        std = normalisation_std(self.model, c)
        return (self.theta * std.to(device)).repeat_interleave(h * w)

    @staticmethod
    def _best(
        cand: torch.Tensor, t: torch.Tensor, o: torch.Tensor
    ) -> tuple[float, tuple[int, int]]:
        """Best pair among ``cand`` (sorted feature indices): α·|β| with α > 0 and β < 0, first in row-major order."""
        tc, oc = t[cand], o[cand]
        alpha = tc[:, None] + tc[None, :]
        beta = oc[:, None] + oc[None, :]
        sal = torch.where(
            (alpha > 0) & (beta < 0),
            alpha * -beta,
            torch.zeros((), dtype=alpha.dtype, device=alpha.device),
        )
        sal.fill_diagonal_(0)
        idx = int(sal.flatten().argmax())
        k = len(cand)
        return float(sal.flatten()[idx]), (int(cand[idx // k]), int(cand[idx % k]))

    def _pair(
        self, t: torch.Tensor, o: torch.Tensor, domain: torch.Tensor
    ) -> tuple[int, int] | None:
        """The textbook pair search, pruned exactly.

        A feature p can only belong to a pair of saliency ≥ s if its bound
        (t_p + max t)·(−o_p − min o) ≥ s; s is first taken from the 256 features with the largest
        t − o, then the exact search runs over the features whose bound reaches it (capped at
        ``pair_features``, by t − o, which is the only approximation and only above that size).
        """
        dom = domain.nonzero().squeeze(1)
        if len(dom) < 2:
            return None
        td, od = t[dom], o[dom]
        score = td - od
        seed = dom[score.topk(min(len(dom), 256)).indices.sort().values]
        best, pair = self._best(seed, t, o)
        bound = (td + td.max()).clamp_min(0) * (-(od + od.min())).clamp_min(0)
        keep = (bound >= best) if best > 0 else (bound > 0)
        cand = dom[keep]
        if len(cand) > self.pair_features:
            cand = cand[(t[cand] - o[cand]).topk(self.pair_features).indices.sort().values]
        if len(cand) >= 2 and not torch.equal(cand, seed):
            best, pair = self._best(cand, t, o)
        return pair if best > 0 else None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        device = model_device(self.model)
        x = images.detach().to(device).clone()
        labels = labels.to(device)
        n, features = len(x), x[0].numel()
        step = self.steps(x.shape[1:], device)
        with torch.no_grad():
            logits = self.model(x)
        target = self.targets(logits, labels)
        active = logits.argmax(1) != target
        domain = (x < (0.99 if self.search_domain == "once" else 1.0)).flatten(1)
        max_iters = int(math.ceil(features * self.gamma / 2.0))
        if self.max_iters is not None:
            max_iters = min(max_iters, int(self.max_iters))
        for _ in range(max_iters):
            idx = (active & (domain.sum(1) > 0)).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            xi = x[idx].clone().requires_grad_(True)
            out = self.model(xi)
            (g_t,) = torch.autograd.grad(
                out.gather(1, target[idx, None]).sum(), xi, retain_graph=True
            )
            (g_all,) = torch.autograd.grad(out.sum(), xi)
            g_t, g_o = g_t.flatten(1), (g_all - g_t).flatten(1)
            flat = x.view(n, -1)
            for j, i in enumerate(idx.tolist()):
                pair = self._pair(g_t[j], g_o[j], domain[i])
                if pair is None:
                    active[i] = False
                    continue
                pair = list(pair)
                flat[i, pair] = (flat[i, pair] + step[pair]).clamp(0, 1)
                domain[i, pair] = False if self.search_domain == "once" else flat[i, pair] < 1.0
            with torch.no_grad():
                active[idx] &= self.model(x[idx]).argmax(1) != target[idx]
        return x.detach()


def normalisation_std(model: nn.Module, channels: int) -> torch.Tensor:
    """Per-channel std of the normalisation in front of ``model``'s network (its first
    :class:`pixelrobust.models.Classifier`, also inside a defence wrapper)."""
    for m in model.modules():
        if isinstance(m, Classifier):
            std = m.std.detach().flatten()
            if len(std) != channels:
                raise ValueError(
                    f"the model's normalisation has {len(std)} channels, the images {channels}"
                )
            return std
    raise ValueError(
        f"a setting in normalised space (jsma theta_space: normalized, pgd alpha_space: normalized or norm: l2_box) needs "
        f"the model's normalisation, but {type(model).__name__} contains no pixelrobust.models.Classifier; "
        "use theta_space / alpha_space: pixel"
    )


class DeepFool:
    def __init__(
        self, model: nn.Module, steps: int = 50, overshoot: float = 0.02, candidates: int = 10
    ):
        self.model, self.steps, self.overshoot, self.candidates = (
            model,
            int(steps),
            float(overshoot),
            int(candidates),
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        device = model_device(self.model)
        x0 = images.detach().to(device)
        labels = labels.to(device)
        with torch.no_grad():
            logits = self.model(x0)
        k = min(self.candidates, logits.shape[1])
        cand = logits.topk(k, dim=1).indices  # N × k (the true label is put first below)
        others = (
            torch.stack([torch.cat([c[c != y], c[c == y]])[: k - 1] for c, y in zip(cand, labels)])
            if k > 1
            else cand[:, :0]
        )
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
                pred = self.model(
                    (x0[idx] + (1 + self.overshoot) * r_total[idx]).clamp(0, 1)
                ).argmax(1)
            active[idx] = pred == y
        return (x0 + (1 + self.overshoot) * r_total).clamp(0, 1).detach()


class CW:
    def __init__(
        self,
        model: nn.Module,
        c: float = 1e-3,
        c_factor: float = 10.0,
        outer_steps: int = 10,
        steps: int = 100,
        lr: float = 0.01,
        kappa: float = 0.0,
        abort_early: bool = True,
    ):
        self.model, self.c, self.c_factor, self.outer, self.steps = (
            model,
            float(c),
            float(c_factor),
            int(outer_steps),
            int(steps),
        )
        self.lr, self.kappa, self.abort_early = float(lr), float(kappa), bool(abort_early)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        device = model_device(self.model)
        x0 = images.detach().to(device)
        labels = labels.to(device)
        n = len(x0)
        best = x0.clone()
        best_l2 = torch.full((n,), float("inf"), device=device)
        c = torch.full((n,), self.c, device=device)
        w0 = torch.atanh((x0 * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        onehot = None
        for _ in range(self.outer):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=device)
            prev = float("inf")
            check = max(self.steps // 10, 1)
            for step in range(self.steps):
                adv = (torch.tanh(w) + 1) / 2
                logits = self.model(adv)
                if onehot is None:
                    onehot = F.one_hot(labels, logits.shape[1]).bool()
                real = logits.gather(1, labels[:, None]).squeeze(1)
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
                    best = torch.where(better.view(-1, 1, 1, 1), adv, best)
                    found |= fooled
                if self.abort_early and step % check == 0:  # Carlini & Wagner's reference code
                    if loss.item() > prev * 0.9999:
                        break
                    prev = loss.item()
            c = torch.where(found | torch.isfinite(best_l2), c, c * self.c_factor)
            if torch.isfinite(best_l2).all():
                break
        return best.detach()


class BoxPGD:
    """PGD in the form of the authors' code (``submodules/attacks/pgd.py``, branch ``nsml``):
    untargeted, cross-entropy, no random start; each step is taken, then the perturbation is
    clipped to ±``eps`` per pixel (in [0, 1] pixel units) and the image to [0, 1].

    * ``norm``: ``linf`` — a sign step (their ``pgd_linf_*``); ``l2_box`` — a step along the
      L2-normalised gradient (their ``pgd_l2_*``: L2 steps inside an L∞ box, not an L2 ball).
    * ``alpha_space``: ``normalized`` — the step is taken in the model's normalised input space, as
      in their code (which attacks normalised tensors): a sign step of α is α·std_c in pixels, an L2
      step of α along the normalised-space gradient g_z = std·g_x is α·std·g_z/‖g_z‖ in pixels;
      ``pixel`` — the same step rules in pixel units.

    Their code's values: ε = 0.031, α = 0.1 in normalised space, 10, 100 or 1000 steps
    (``pgd_linf_10/100/1000``, ``pgd_l2_10/20/100/1000``).
    """

    NORMS = ("linf", "l2_box")

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.031,
        alpha: float = 0.1,
        steps: int = 10,
        norm: str = "linf",
        alpha_space: str = "normalized",
        random_start: bool = False,
        seed: int = 0,
    ):
        if norm not in self.NORMS:
            raise ValueError(
                f"pgd norm {norm!r} with alpha_space {alpha_space!r}: the box PGD takes norm linf or l2_box "
                "(attack_settings.pgd.norm; l2 is the L2-ball PGD, pixel space only)"
            )
        if alpha_space not in ("pixel", "normalized"):
            raise ValueError(
                f"pgd alpha_space must be 'pixel' or 'normalized' (attack_settings.pgd.alpha_space), got {alpha_space!r}"
            )
        if random_start:
            raise ValueError(
                "pgd random_start: the authors' PGD (norm l2_box or alpha_space normalized) has none; "
                "set attack_settings.pgd.random_start: false"
            )
        if eps <= 0 or alpha <= 0 or steps < 0:
            raise ValueError(
                f"PGD needs eps > 0, alpha > 0, steps >= 0; got eps={eps}, alpha={alpha}, steps={steps}"
            )
        self.model, self.eps, self.alpha, self.steps = model, float(eps), float(alpha), int(steps)
        self.norm, self.alpha_space = norm, alpha_space

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        device = model_device(self.model)
        x0 = images.detach().to(device)
        labels = labels.to(device)
        c = x0.shape[1]
        std = (
            normalisation_std(self.model, c).to(device).view(1, c, 1, 1)
            if self.alpha_space == "normalized"
            else None
        )
        x = x0.clone()
        for _ in range(self.steps):
            x.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(self.model(x), labels, reduction="sum"), x)
            with torch.no_grad():
                gz = (
                    g if std is None else g * std
                )  # the gradient with respect to the normalised input
                if self.norm == "linf":
                    dz = gz.sign()
                else:
                    dz = gz / gz.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                dx = self.alpha * (dz if std is None else dz * std)
                x = (x0 + ((x + dx).clamp(0, 1) - x0).clamp(-self.eps, self.eps)).clamp(0, 1)
        return x.detach()


def _pgd(model: nn.Module, norm: str = "linf", alpha_space: str = "pixel", **settings):
    """``pgd``: the L∞ / L2-ball PGD of :mod:`pixelrobust.pgd` (pixel space), or :class:`BoxPGD`
    for the authors' form (``norm: l2_box`` or ``alpha_space: normalized``)."""
    if norm == "l2_box" or alpha_space == "normalized":
        return BoxPGD(model, norm=norm, alpha_space=alpha_space, **settings)
    if alpha_space != "pixel":
        raise ValueError(
            f"pgd alpha_space must be 'pixel' or 'normalized' (attack_settings.pgd.alpha_space), got {alpha_space!r}"
        )
    return PGD(model, norm=norm, **settings)


ATTACKS = {"onepixel": OnePixel, "jsma": JSMA, "deepfool": DeepFool, "cw": CW, "pgd": _pgd}


def build_attack(name: str, model: nn.Module, settings: dict | None = None, seed: int = 0):
    """An attack by name with its settings (``seed`` goes to the randomised ones)."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    settings = dict(settings or {})
    if name in ("onepixel", "pgd"):
        settings.setdefault("seed", seed)
    return ATTACKS[name](model, **settings)
