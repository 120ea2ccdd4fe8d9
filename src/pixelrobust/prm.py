"""The Pixel Robustness Manipulator (P3; Hwang et al. 2019): a front-end that reads a lattice of pixels.

Architecture (after the authors' ``submodules/autoencoders/unet.py`` and ``submodules/ace.py``,
written anew here):

* a *sparse* first convolution whose kernel and stride read only a lattice of the input pixels
  (:data:`LATTICES`; the default ``s2`` is a 1×1 convolution with stride 2: even rows and even
  columns, 25 % of the pixels);
* a U-Net (``depth`` levels, ``start_filters`` channels at the top, doubling per level, max-pool
  down, 2×2 transposed convolutions up, skip connections by concatenation);
* a 3×3 transposed convolution with the lattice's stride back to the input size, and a 3×3
  convolution to 3 channels, squashed by a sigmoid into [0, 1] (ours: the authors work in
  normalised space and do not squash; we keep every mixture in the classifier's input range).

``first_conv`` (:data:`FIRST_CONVS`): ``"authors"`` is their ``unet.py`` — the sparse convolution
maps 3 → 3 channels with no activation, the U-Net's first level takes those 3 channels, and the
transposed convolution is linear; ``"ours"`` (the default, kept for the runs documented before the
option existed) maps 3 → ``start_filters`` channels with a ReLU and puts a ReLU after the
transposed convolution.

The wrapped classifier sees ``x' = λ·PRM(x) + (1 − λ)·x`` (:class:`PRMClassifier`). Training
(:func:`train`) minimises ``recon_ratio·MSE(PRM(x), x) + (1 − recon_ratio)·CE(f(x'), y)`` over the
PRM's parameters only, the classifier frozen in eval mode.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .cost import Progress
from .data import load_split, read_manifest
from .errors import ConfigError
from .evaluate import predict
from .gradients import pixel_mask
from .io import atomic_path, save_npz, write_table
from .maps import chance_iou, iou, n_selected
from .models import build_model, freeze
from .runtime import model_device

log = logging.getLogger("pixelrobust")

# name: (kernel (h, w), stride (h, w)); the authors' unet_v0..v5 first convolutions.
LATTICES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "s2": ((1, 1), (2, 2)),  # v0: even rows, even columns (25 %)
    "s2x1": ((1, 1), (2, 1)),  # v1: even rows (50 %)
    "s1x2": ((1, 1), (1, 2)),  # v2: even columns (50 %)
    "k1x2_s2x4": ((1, 2), (2, 4)),  # v3: 25 %
    "k2x1_s4x2": ((2, 1), (4, 2)),  # v4: 25 %
    "k2_s4": ((2, 2), (4, 4)),  # v5: 2×2 blocks every 4 pixels (25 %)
}


def check_lattice(name: str) -> tuple[tuple[int, int], tuple[int, int]]:
    if name not in LATTICES:
        raise ConfigError(f"unknown PRM lattice {name!r}; known: {', '.join(LATTICES)}")
    return LATTICES[name]


def variant_name(lattice: str, replicate: int) -> str:
    """The name of one trained PRM, ``<lattice>-r<replicate>`` (its folder: ``results/p3/prm/<model>/<name>/``)."""
    check_lattice(lattice)
    return f"{lattice}-r{int(replicate)}"


def parse_variant(name: str) -> tuple[str, int]:
    """``"s2-r0"`` → ``("s2", 0)``; the inverse of :func:`variant_name`."""
    lattice, sep, rep = name.rpartition("-r")
    if not sep or not rep.isdigit():
        raise ConfigError(f"PRM variant {name!r} is not <lattice>-r<replicate> (e.g. s2-r0)")
    check_lattice(lattice)
    return lattice, int(rep)


def pool_variants(pool: dict) -> list[str]:
    """The PRMs a stochastic-PRM pool draws from: every lattice × replicate, in config order.

    ``pool`` is ``defense_eval.defense_settings.stochastic_prm.pool``: ``{"lattices": [...], "replicates": n}``.
    Replicates of a lattice differ only in their training seed (ours; the authors' 30 variants are six
    lattices × five network families).
    """
    lattices, replicates = list(pool["lattices"]), int(pool["replicates"])
    if not lattices or replicates < 1 or len(set(lattices)) != len(lattices):
        raise ConfigError(
            f"stochastic_prm.pool needs distinct lattices and replicates >= 1, got {pool}"
        )
    return [variant_name(lat, r) for lat in lattices for r in range(replicates)]


def max_depth(name: str, height: int, width: int) -> int:
    """The deepest U-Net whose coarsest level still has a pixel on the lattice grid of an H×W image.

    The sparse convolution leaves a grid of ``(H − kh)//sh + 1`` by ``(W − kw)//sw + 1``; a U-Net of
    depth d halves it d − 1 times. On 32×32 images: 5 for ``s2``, ``s2x1``, ``s1x2`` and 4 for the
    three stride-4 lattices, the depths the authors' unet_v0..v5 use.
    """
    (kh, kw), (sh, sw) = check_lattice(name)
    side = min((height - kh) // sh + 1, (width - kw) // sw + 1)
    if side < 1:
        raise ConfigError(f"PRM lattice {name!r} reads no pixel of a {height}x{width} image")
    return side.bit_length()


def lattice_mask(name: str, height: int, width: int) -> torch.Tensor:
    """Boolean H×W mask of the pixels the sparse convolution of lattice ``name`` reads."""
    (kh, kw), (sh, sw) = check_lattice(name)
    rows = torch.zeros(height, dtype=torch.bool)
    cols = torch.zeros(width, dtype=torch.bool)
    for i in range(0, height - kh + 1, sh):
        rows[i : i + kh] = True
    for j in range(0, width - kw + 1, sw):
        cols[j : j + kw] = True
    return rows[:, None] & cols[None, :]


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, pool: bool):
        super().__init__()
        self.conv1, self.conv2 = (
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.pool = pool

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return (F.max_pool2d(x, 2) if self.pool else x), x


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv1, self.conv2 = (
            nn.Conv2d(2 * cout, cout, 3, padding=1),
            nn.Conv2d(cout, cout, 3, padding=1),
        )

    def forward(self, skip, x):
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:  # odd sizes on the way down: pad the upsampled map to the skip's size
            x = F.pad(x, (0, dw, 0, dh))
        return F.relu(self.conv2(F.relu(self.conv1(torch.cat([x, skip], 1)))))


class UNet(nn.Module):
    """Ronneberger et al. U-Net without a head: ``channels`` in, ``start_filters`` out, same size."""

    def __init__(self, channels: int, depth: int = 4, start_filters: int = 64):
        super().__init__()
        if depth < 1:
            raise ConfigError(f"prm.depth must be >= 1, got {depth}")
        widths = [start_filters * 2**i for i in range(depth)]
        self.downs = nn.ModuleList(
            _Down(c_in, c_out, pool=i < depth - 1)
            for i, (c_in, c_out) in enumerate(zip([channels, *widths], widths))
        )
        self.ups = nn.ModuleList(_Up(widths[i + 1], widths[i]) for i in reversed(range(depth - 1)))

    def forward(self, x):
        skips = []
        for down in self.downs:
            x, before = down(x)
            skips.append(before)
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            x = up(skip, x)
        return x


def nearest_lattice_index(name: str, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row (column), the nearest row (column) the lattice reads; the lattice is a product of both."""
    lat = lattice_mask(name, height, width)
    rows, cols = lat.any(dim=1).nonzero().flatten(), lat.any(dim=0).nonzero().flatten()
    near = lambda keep, n: keep[(torch.arange(n)[:, None] - keep[None, :]).abs().argmin(dim=1)]  # noqa: E731
    return near(rows, height), near(cols, width)


FIRST_CONVS = ("ours", "authors")


def check_first_conv(name: str) -> str:
    if name not in FIRST_CONVS:
        raise ConfigError(f"prm.first_conv must be one of {', '.join(FIRST_CONVS)}, got {name!r}")
    return name


class PRM(nn.Module):
    """Sparse first convolution → U-Net → transposed convolution to full size → 3×3 conv → sigmoid.

    ``residual=True`` (ours, the default in our configs) adds the network's output, in logit space,
    to a nearest-neighbour fill of the lattice pixels, ``sigmoid(logit(fill(x)) + net(x))``, with the
    last convolution initialised to zero: training starts from "copy the lattice" instead of from a
    constant image. Both variants read only the lattice. ``first_conv``: module docstring.
    """

    def __init__(
        self,
        lattice: str = "s2",
        depth: int = 4,
        start_filters: int = 64,
        channels: int = 3,
        residual: bool = False,
        first_conv: str = "ours",
    ):
        super().__init__()
        (kh, kw), (sh, sw) = check_lattice(lattice)
        self.lattice, self.residual, self.first_conv = (
            lattice,
            bool(residual),
            check_first_conv(first_conv),
        )
        width = (
            start_filters if first_conv == "ours" else channels
        )  # the authors': Conv2d(3, 3, k, stride)
        self.sparse = nn.Conv2d(channels, width, (kh, kw), stride=(sh, sw))
        self.unet = UNet(width, depth, start_filters)
        self.up = nn.ConvTranspose2d(start_filters, start_filters, 3, stride=(sh, sw), padding=1)
        self.out = nn.Conv2d(start_filters, channels, 3, padding=1)
        if self.residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        self._index: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def fill(self, x: torch.Tensor) -> torch.Tensor:
        """Every pixel takes the value of its nearest lattice pixel."""
        key = tuple(x.shape[-2:])
        if key not in self._index:
            self._index[key] = nearest_lattice_index(self.lattice, *key)
        r, c = (t.to(x.device) for t in self._index[key])
        return x.index_select(-2, r).index_select(-1, c)

    def forward(self, x):
        ours = self.first_conv == "ours"
        h = self.sparse(x)
        h = self.unet(F.relu(h) if ours else h)
        h = self.up(h, output_size=list(x.shape[-2:]))
        logits = self.out(F.relu(h) if ours else h)
        if self.residual:
            logits = logits + torch.logit(self.fill(x).clamp(1e-3, 1 - 1e-3))
        return torch.sigmoid(logits)


class FillOnly(nn.Module):
    """The residual PRM without its network: every pixel takes its nearest lattice pixel's value.

    The λ sweep's control for ``residual=True`` (ours): what the formulation gives before any training.
    """

    fill = PRM.fill

    def __init__(self, lattice: str = "s2"):
        super().__init__()
        check_lattice(lattice)
        self.lattice = lattice
        self._index: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, x):
        return self.fill(x)


def untrained_like(meta: dict, seed: int) -> PRM:
    """A freshly initialised PRM of the architecture ``meta`` describes (``prm.pt``'s meta), every layer random.

    For ``residual`` PRMs the last convolution is given PyTorch's default random initialisation too
    (training starts it at zero, which would make this PRM the fill map, :class:`FillOnly`).
    The global random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        prm = PRM(
            meta["lattice"],
            meta["depth"],
            meta["start_filters"],
            residual=meta.get("residual", False),
            first_conv=meta.get("first_conv", "ours"),
        )
        if prm.residual:
            prm.out.reset_parameters()
    return prm.eval()


class PRMClassifier(nn.Module):
    """A frozen classifier behind a PRM: ``f(λ·PRM(x) + (1 − λ)·x)`` for images in [0, 1]."""

    def __init__(self, classifier: nn.Module, prm: PRM, lam: float = 1.0):
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"λ must be in [0, 1], got {lam}")
        self.classifier, self.prm, self.lam = classifier, prm, float(lam)
        self.name = f"{getattr(classifier, 'name', '')}+prm(λ={lam:g})"
        self.num_classes = getattr(classifier, "num_classes", None)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        return self.lam * self.prm(x) + (1.0 - self.lam) * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.mix(x))


# ----------------------------------------------------------------------------------------------
# Training with resumable checkpoints
# ----------------------------------------------------------------------------------------------

HISTORY_COLUMNS = ["step", "epoch", "loss", "mse", "ce", "top1"]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random crop after 4-pixel zero padding (scaled with the size; ours)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def train(
    classifier: nn.Module,
    prm: PRM,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    recon_ratio: float,
    train_lambda: float = 1.0,
    max_steps: int | None = None,
    augment: bool = True,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    progress: bool = True,
) -> pd.DataFrame:
    """Train ``prm`` in front of the frozen ``classifier``; returns the per-step loss history.

    With ``checkpoint`` set, the state (PRM, optimiser, step, history) is saved there every
    ``checkpoint_every`` steps and at the end of each epoch, atomically; a later call with the same
    settings resumes from it (a checkpoint written under other settings is ignored and replaced).
    The batch order and augmentation are functions of ``(seed, epoch, batch)``, so a resumed run
    reproduces an uninterrupted one.
    """
    if not 0.0 <= recon_ratio <= 1.0:
        raise ConfigError(f"prm.train.recon_ratio must be in [0, 1], got {recon_ratio}")
    if len(images) == 0:
        raise ValueError("PRM training needs at least one image")
    device = model_device(classifier)
    freeze(classifier)
    prm.to(device).train()
    opt = torch.optim.Adam(prm.parameters(), lr=lr)
    per_epoch = math.ceil(len(images) / batch_size)
    total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    settings = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "recon_ratio": recon_ratio,
        "train_lambda": train_lambda,
        "max_steps": max_steps,
        "augment": augment,
        "seed": seed,
        "n_images": len(images),
        "lattice": prm.lattice,
        "residual": prm.residual,
        "n_params": sum(p.numel() for p in prm.parameters()),
    }
    if prm.first_conv != "ours":  # only then, so checkpoints written before the option still resume
        settings["first_conv"] = prm.first_conv
    fp = fingerprint(settings)
    step, history = 0, []
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state.get("fingerprint") == fp:
            prm.load_state_dict(state["prm"])
            opt.load_state_dict(state["optimizer"])
            step, history = state["step"], state["history"]
            log.info("resuming PRM training from %s at step %d of %d", checkpoint, step, total)
        else:
            log.info("ignoring checkpoint %s: written under other settings", checkpoint)

    def save():
        if checkpoint is None:
            return
        with atomic_path(checkpoint) as tmp:
            torch.save(
                {
                    "fingerprint": fp,
                    "prm": prm.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step,
                    "history": history,
                    "settings": settings,
                },
                tmp,
            )

    bar = tqdm(total=total, initial=step, desc="train PRM", disable=not progress, mininterval=5.0)
    steps_left = Progress("PRM training, steps from here", total - step)
    while step < total:
        epoch, b = divmod(step, per_epoch)
        order = torch.randperm(
            len(images), generator=torch.Generator().manual_seed(seed * 100003 + epoch)
        )
        idx = order[b * batch_size : (b + 1) * batch_size]
        x, y = images[idx], labels[idx]
        if augment:
            x = _augment(x, torch.Generator().manual_seed(seed * 100003 + epoch * 7919 + b))
        x, y = x.to(device), y.to(device)
        recon = prm(x)
        mixed = train_lambda * recon + (1.0 - train_lambda) * x
        logits = classifier(mixed)
        mse = F.mse_loss(recon, x)
        ce = F.cross_entropy(logits, y)
        loss = recon_ratio * mse + (1.0 - recon_ratio) * ce
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"PRM training diverged at step {step} (loss {loss.item()}); lower prm.train.lr"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        steps_left.step()
        top1 = (logits.argmax(1) == y).float().mean().item()
        history.append(
            {
                "step": step,
                "epoch": epoch,
                "loss": loss.item(),
                "mse": mse.item(),
                "ce": ce.item(),
                "top1": top1,
            }
        )
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", top1=f"{top1:.3f}", refresh=False)
        if step % checkpoint_every == 0 or step % per_epoch == 0 or step == total:
            save()
            log.info(
                "step %d/%d epoch %d loss %.4f mse %.5f ce %.4f top1 %.3f",
                step,
                total,
                epoch,
                loss.item(),
                mse.item(),
                ce.item(),
                top1,
            )
    bar.close()
    prm.eval()
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)


def save_prm(prm: PRM, path: str | os.PathLike, meta: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"state_dict": prm.state_dict(), "meta": meta}, tmp)


def load_prm(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[PRM, dict]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        meta = obj["meta"]
        prm = PRM(
            meta["lattice"],
            meta["depth"],
            meta["start_filters"],
            residual=meta.get("residual", False),
            first_conv=meta.get("first_conv", "ours"),
        )
        prm.load_state_dict(obj["state_dict"])
    except Exception as e:
        raise ValueError(
            f"cannot load a trained PRM from {path} ({type(e).__name__}: {e}); delete it and rerun train_prm"
        ) from e
    return prm.to(device).eval(), meta


# ----------------------------------------------------------------------------------------------
# The λ sweep
# ----------------------------------------------------------------------------------------------


def _gradient_pass(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    lat: torch.Tensor,
    topk_percent: float,
    batch_size: int,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """One pass of |∂CE/∂x| over the images: the dataset map (mean over images and channels, as
    :func:`~pixelrobust.gradients.dataset_gradient_map`), and per image the IoU of its own top-k % pixels
    with ``lat`` and whether the model classifies it correctly."""
    device = model_device(model)
    n_top = n_selected(lat.numel(), topk_percent)
    flat_lat = lat.flatten().to(device)
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    ious, correct = [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).detach().clone().requires_grad_(True)
        y = labels[i : i + batch_size].to(device)
        logits = model(x)
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
        if not torch.isfinite(g).all():
            raise FloatingPointError(f"non-finite input gradients on images {i}..{i + batch_size}")
        per_image = g.abs().mean(dim=1)
        total += per_image.sum(dim=0).double().cpu()
        flat = per_image.flatten(1).double()
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices[
            :, :n_top
        ]  # ties: pixel order, as pixel_mask (maps.top_k_mask, pixel_order)
        top = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)
        inter, union = (top & flat_lat).sum(1), (top | flat_lat).sum(1)
        ious.append(
            torch.where(
                union > 0, inter / union.clamp(min=1), torch.ones_like(inter, dtype=torch.float)
            )
            .double()
            .cpu()
        )
        correct.append((logits.detach().argmax(1) == y).cpu())
    return total / len(images), torch.cat(ious).numpy(), torch.cat(correct).numpy()


def lambda_sweep(
    classifier: nn.Module,
    prm: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    lambdas,
    *,
    topk_percent: float = 25.0,
    batch_size: int = 128,
    image_ids=None,
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Per λ: top-1 accuracy, and how the top-``topk_percent`` input-gradient pixels sit on the lattice.

    Returns a table (``lambda, top1, iou, image_iou, lattice_share, chance_iou, chance_share``), the
    per-λ dataset gradient maps (L×H×W) and a per-image table (``lambda, image_id, correct, iou``).
    ``iou`` compares the top-k % pixels of the mean |∂L/∂x| map of the wrapped model with the
    lattice mask; ``image_iou`` is the mean over images of the same IoU for each image's own map (the
    per-image values, the unit the verdict resamples, are in the third table); ``lattice_share`` is
    the fraction of the dataset map's top pixels on the lattice (chance = the lattice's density d,
    0.25 for ``s2``; a random set of density t has expected IoU dt/(d + t − dt), 1/7 for d = t = 0.25).
    ``prm`` is any module with a ``lattice`` name (a :class:`PRM`, an untrained one, :class:`FillOnly`).
    At λ = 1 both IoUs are 1 for *any* such module: the input reaches the classifier only through the lattice.
    """
    freeze(classifier)
    freeze(prm)
    lat = lattice_mask(prm.lattice, *images.shape[-2:])
    d, t = lat.float().mean().item(), topk_percent / 100.0
    chance = {"chance_iou": chance_iou(d, t), "chance_share": d}
    ids = list(range(len(images))) if image_ids is None else list(image_ids)
    rows, maps, per_image = [], [], []
    for lam in lambdas:
        model = PRMClassifier(classifier, prm, float(lam))
        gmap, image_iou, correct = _gradient_pass(
            model, images, labels, lat, topk_percent, batch_size
        )
        top = pixel_mask(gmap, topk_percent, "top")
        rows.append(
            {
                "lambda": float(lam),
                "top1": float(correct.mean()),
                "iou": iou(top, lat),
                "image_iou": float(image_iou.mean()),
                "lattice_share": (top & lat).sum().item() / max(1, top.sum().item()),
                **chance,
            }
        )
        per_image.append(
            pd.DataFrame(
                {
                    "lambda": float(lam),
                    "image_id": ids,
                    "correct": correct.astype(int),
                    "iou": image_iou,
                }
            )
        )
        maps.append(gmap.numpy())
        log.info(
            "λ=%g top1 %.4f IoU %.4f (per image %.4f) lattice share %.4f",
            lam,
            rows[-1]["top1"],
            rows[-1]["iou"],
            rows[-1]["image_iou"],
            rows[-1]["lattice_share"],
        )
    return pd.DataFrame(rows), np.stack(maps), pd.concat(per_image, ignore_index=True)


def sweep_prms(prm: PRM, meta: dict, control_seed: int) -> dict[str, nn.Module]:
    """The trained PRM and its same-run negative controls, by the ``prm`` column's names.

    ``untrained``: :func:`untrained_like` (seeded by ``control_seed``); ``fill_only`` (residual PRMs only):
    :class:`FillOnly`, where the residual formulation starts before training.
    """
    prms = {"trained": prm, "untrained": untrained_like(meta, control_seed)}
    if meta.get("residual", False):
        prms["fill_only"] = FillOnly(meta["lattice"])
    return prms


# ----------------------------------------------------------------------------------------------
# Job entry points (one call per workflow script)
# ----------------------------------------------------------------------------------------------


def _load_range(data_dir, images: dict):
    counts = read_manifest(data_dir)["counts"]
    split = images["split"]
    if split not in counts:
        raise ValueError(
            f"prm.train.images: {data_dir} has no {split!r} split (it has {sorted(counts)})"
        )
    start = images.get("start") or 0
    stop = counts[split] if images.get("stop") is None else min(images["stop"], counts[split])
    if start >= stop:
        raise ValueError(
            f"prm.train.images selects {split} images {start}:{stop} but {data_dir} has {counts[split]}; lower start"
        )
    return load_split(data_dir, split, start, stop)


def train_prm(
    *,
    data,
    weights,
    out: dict,
    spec: dict,
    checkpoint,
    lattice: str,
    depth: int,
    start_filters: int,
    residual: bool,
    first_conv: str,
    train_cfg: dict,
    images: dict,
    seed: int,
    device,
    progress: bool = True,
) -> None:
    """Rule ``train_prm``: train a PRM in front of one frozen classifier on the ``images`` range of
    ``data``; resumable through ``checkpoint``; the PRM to ``out["prm"]``, its history to ``out["history"]``.
    ``train_cfg`` is the rule's ``train`` param (under another name: :func:`train` is called here)."""
    data = _load_range(data, images)
    classifier = build_model(spec, weights, device)
    fits = max_depth(lattice, *data.images.shape[-2:])
    if depth > fits:  # ours: cap instead of failing, so one prm.depth serves a pool of lattices
        log.warning(
            "prm.depth %d is deeper than lattice %s allows on %dx%d images; this PRM uses depth %d",
            depth,
            lattice,
            *data.images.shape[-2:],
            fits,
        )
        depth = fits
    torch.manual_seed(seed)
    prm = PRM(lattice, depth, start_filters, residual=residual, first_conv=first_conv)
    keys = (
        "epochs",
        "batch_size",
        "lr",
        "recon_ratio",
        "train_lambda",
        "max_steps",
        "augment",
        "checkpoint_every",
    )
    history = train(
        classifier,
        prm,
        data.images,
        data.labels,
        seed=seed,
        checkpoint=checkpoint,
        progress=progress,
        **{k: train_cfg[k] for k in keys},
    )
    meta = {
        "lattice": lattice,
        "depth": depth,
        "start_filters": start_filters,
        "residual": residual,
        "first_conv": first_conv,
        "classifier": spec["name"],
        "n_train": len(data),
        "steps": int(history.step.max()),
        **{k: train_cfg[k] for k in keys},
    }
    write_table(history, out["history"], float_format="%.6g")
    save_prm(prm, out["prm"], meta)
    Path(checkpoint).unlink(missing_ok=True)  # the finished PRM supersedes it


def prm_sweep(
    *,
    data,
    weights,
    prm,
    out: dict,
    spec: dict,
    lambdas,
    n_images: int,
    topk_percent: float,
    batch_size: int,
    control_seed: int,
    device,
) -> None:
    """Rule ``prm_sweep``: accuracy and lattice IoU over λ on the first ``n_images`` test images, for the
    trained PRM (its file ``prm``) and its controls (:func:`sweep_prms`) through the same code; ``out``:
    ``table``, ``images``, ``maps``."""
    data = load_split(data, "test", 0, n_images)
    classifier = build_model(spec, weights, device)
    prm, meta = load_prm(prm, device)
    clean = (
        (
            predict(classifier, data.images, batch_size, model_device(classifier)).argmax(1)
            == data.labels
        )
        .float()
        .mean()
        .item()
    )
    tables, images, maps = [], [], {}
    for name, module in sweep_prms(prm, meta, control_seed).items():
        log.info("λ sweep of the %s PRM", name)
        table, m, per_image = lambda_sweep(
            classifier,
            module.to(device),
            data.images,
            data.labels,
            lambdas,
            topk_percent=topk_percent,
            batch_size=batch_size,
            image_ids=data.ids,
        )
        table.insert(0, "prm", name)
        per_image.insert(0, "prm", name)
        tables.append(table)
        images.append(per_image)
        maps["maps" if name == "trained" else f"maps_{name}"] = m
    table = pd.concat(tables, ignore_index=True)
    table["clean_top1"] = clean
    table.insert(0, "n_images", len(data))
    images = pd.concat(images, ignore_index=True)
    for frame in (table, images):
        frame.insert(0, "model", spec["name"])
        frame.insert(0, "dataset", spec["dataset"])
    write_table(table, out["table"], float_format="%.6g")
    write_table(images, out["images"], float_format="%.6g")
    save_npz(
        out["maps"],
        **maps,
        lambdas=np.asarray(lambdas, dtype=float),
        lattice=lattice_mask(meta["lattice"], *maps["maps"].shape[-2:]).numpy(),
    )


SWEEP_COLUMNS = ["dataset", "model", "prm", "lambda", "top1", "iou", "image_iou"]


def prm_tables(*, tables: list[str], images: list[str], out: dict) -> pd.DataFrame:
    """Rule ``prm_tables``: the prm_sweep tables and per-image tables (``tables``, ``images``) into
    ``prm_lambda_sweep.csv`` (fixed columns), a detail table with chance levels and clean top-1, and the
    per-image table (``prm_lambda_sweep_images.csv``) the IoU verdict resamples."""
    detail = pd.concat([pd.read_csv(p) for p in tables], ignore_index=True)
    write_table(detail[SWEEP_COLUMNS], out["csv"], out["md"])
    write_table(detail, out["detail"])
    write_table(
        pd.concat([pd.read_csv(p) for p in images], ignore_index=True),
        out["images"],
        float_format="%.6g",
    )
    return detail
