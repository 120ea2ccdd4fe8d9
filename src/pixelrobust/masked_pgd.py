"""PGD restricted to pixel masks chosen by input-gradient maps (P3): does *where* matter?

For each model, masks of k % of the pixels are taken from its gradient maps
(:mod:`pixelrobust.gradients`): ``top`` / ``bottom`` / ``random`` from the dataset map (mean
|∂L/∂x|), ``top_arch`` / ``bottom_arch`` from the architecture-induced map the authors' code uses.
``centre`` (ours) takes the k % of pixels nearest the image centre, from no map at all: a data-free control
(:func:`pixelrobust.summary.p3_beyond_geometry`). The same mask is used for every image of the model (the maps are
dataset-level). PGD (L∞, and L2
when configured) perturbs only the masked pixels; the result is the top-1 accuracy under attack, and
per image whether it is still classified correctly and its cross-entropy after the attack (the unit
P3's ordering verdict resamples, :func:`pixelrobust.summary.p3_ordering`).
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from .cost import Progress
from .data import load_split
from .gradients import backward_batch, centre_mask, pixel_mask
from .io import load_npz, write_table
from .models import build_model, freeze
from .pgd import PGD
from .runtime import derive_seed, model_device

log = logging.getLogger("pixelrobust")

MASKS = {
    "top": ("dataset_map", "top"),
    "bottom": ("dataset_map", "bottom"),
    "random": ("dataset_map", "random"),
    "top_arch": ("architecture_map", "top"),
    "bottom_arch": ("architecture_map", "bottom"),
    "centre": (None, "centre"),  # geometry only: the pixels nearest the image centre
}
CHUNK_COLUMNS = [
    "norm",
    "mask",
    "k_percent",
    "image_id",
    "label",
    "correct",
    "loss",
]  # one row per image
TABLE_COLUMNS = ["dataset", "model", "mask", "k_percent", "n_images", "top1"]
IMAGE_COLUMNS = ["dataset", "model", "norm", "mask", "k_percent", "image_id", "correct", "loss"]


def build_masks(
    maps: dict, masks: list[str], ks: list[float], seed: int
) -> dict[tuple[str, float], torch.Tensor]:
    out = {}
    for name in masks:
        if name not in MASKS:
            raise ValueError(f"masked_pgd.masks: unknown mask {name!r}; known: {', '.join(MASKS)}")
        source, kind = MASKS[name]
        for k in ks:
            out[name, float(k)] = (
                centre_mask(maps["dataset_map"].shape, k)
                if source is None
                else pixel_mask(maps[source], k, kind, seed)
            )
    return out


def masked_pgd_chunk(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: dict[tuple[str, float], torch.Tensor],
    attacks: dict[str, dict],
    seed: int,
    batch_size: int,
    image_ids=None,
) -> pd.DataFrame:
    """Per image and (norm, mask, k): still correct under PGD, and the cross-entropy of the attacked image.

    Identical masks are attacked once (k = 100 % is one attack whatever the mask). ``image_ids``
    default to 0..n−1. Each image's random start is drawn from its own seed, derived from ``seed`` (the rule
    passes the model's, not the chunk's) and its id, so an image's outcome does not depend on its chunk or
    batch; under every mask and k it is the same random field, masked to the mask's pixels. ``batch_size`` images per PGD batch, capped for large images
    (:func:`pixelrobust.gradients.backward_batch`: a backward pass keeps the batch's activations).
    """
    batch_size = backward_batch(batch_size, images.shape[-2:])
    device = model_device(model)
    ids = list(range(len(images))) if image_ids is None else list(image_ids)
    frames = []
    for norm, settings in attacks.items():
        cache: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        for (name, k), mask in Progress.over(f"masked PGD {norm}, (mask, k) pairs", masks.items()):
            key = mask.numpy().tobytes()
            if key not in cache:
                correct, loss = [], []
                for i in range(0, len(images), batch_size):
                    x, y = (
                        images[i : i + batch_size].to(device),
                        labels[i : i + batch_size].to(device),
                    )
                    attack = PGD(model, norm=norm, seed=seed, **settings)
                    starts = [derive_seed(seed, "pgd_start", j) for j in ids[i : i + batch_size]]
                    adv = attack(x, y, mask.to(device), seeds=starts) if mask.any() else x
                    with torch.no_grad():
                        logits = model(adv)
                    correct.append((logits.argmax(1) == y).cpu())
                    loss.append(
                        torch.nn.functional.cross_entropy(logits, y, reduction="none").cpu() + 0.0
                    )  # no -0
                cache[key] = (torch.cat(correct), torch.cat(loss))
            correct, loss = cache[key]
            frames.append(
                pd.DataFrame(
                    {
                        "norm": norm,
                        "mask": name,
                        "k_percent": float(k),
                        "image_id": ids,
                        "label": labels.numpy(),
                        "correct": correct.numpy().astype(int),
                        "loss": loss.numpy(),
                    }
                )
            )
            log.info("%s %s k=%g%%: %d/%d correct", norm, name, k, int(correct.sum()), len(images))
    return (
        pd.concat(frames, ignore_index=True)[CHUNK_COLUMNS]
        if frames
        else pd.DataFrame(columns=CHUNK_COLUMNS)
    )


def accuracy_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per (norm, mask, k): ``n_images``, ``n_correct`` and ``top1`` from per-image rows, in their order."""
    g = per_image.groupby(["norm", "mask", "k_percent"], sort=False, as_index=False).agg(
        n_images=("correct", "size"), n_correct=("correct", "sum")
    )
    g["top1"] = g.n_correct / g.n_images
    return g


def masked_pgd(
    *,
    data,
    weights,
    maps,
    out: dict,
    spec: dict,
    bounds: tuple[int, int],
    masks: list[str],
    k_percent: list[float],
    attacks: dict[str, dict],
    mask_seed: int,
    batch_size: int,
    seed: int,
    device,
) -> None:
    """Rule ``masked_pgd``: test images ``bounds`` (start, stop) of one model, attacked through the masks
    of its gradient map ``maps``; the per-image table to ``out["csv"]``."""
    maps_path = maps
    maps = load_npz(maps_path)
    split = load_split(data, "test", *bounds)
    if maps["dataset_map"].shape != tuple(split.images.shape[-2:]):
        raise ValueError(
            f"{maps_path} holds a {maps['dataset_map'].shape} map for {tuple(split.images.shape[-2:])} images; rerun gradient_map"
        )
    model = freeze(build_model(spec, weights, device))
    table = masked_pgd_chunk(
        model,
        split.images,
        split.labels,
        build_masks(maps, masks, k_percent, mask_seed),
        attacks,
        seed,
        batch_size,
        image_ids=split.ids,
    )
    write_table(table, out["csv"], float_format="%.6g")


def masked_pgd_tables(
    *, chunks: dict[str, list[str]], out: dict, datasets: dict[str, str]
) -> dict[str, pd.DataFrame]:
    """Rule ``masked_pgd_tables``: the masked_pgd chunk tables (``chunks``: model -> files), one table per norm (``dataset,model,mask,k_percent,n_images,top1``) and, in
    ``out["images"]``, every image's outcome (``dataset,model,norm,mask,k_percent,image_id,correct,loss``)."""
    frames, images = [], []
    for model, paths in chunks.items():
        per_image = pd.concat(
            [pd.read_csv(p, dtype={"image_id": str}) for p in paths], ignore_index=True
        )
        missing = set(CHUNK_COLUMNS) - set(per_image.columns)
        if missing:
            raise ValueError(
                f"{paths[0]} lacks per-image columns {sorted(missing)} (written by an older masked_pgd); "
                "rerun it with --forcerun masked_pgd"
            )
        df = accuracy_table(per_image)
        for frame in (df, per_image):
            frame.insert(0, "model", model)
            frame.insert(0, "dataset", datasets[model])
        frames.append(df)
        images.append(per_image)
    allrows = pd.concat(frames, ignore_index=True)
    if "images" in out:
        write_table(
            pd.concat(images, ignore_index=True)[IMAGE_COLUMNS], out["images"], float_format="%.6g"
        )
    tables = {}
    for norm in ("linf", "l2"):
        if norm not in out:
            continue
        t = allrows[allrows.norm == norm][TABLE_COLUMNS].reset_index(drop=True)
        write_table(t, out[norm], out[f"{norm}_md"])
        tables[norm] = t
    return tables


__all__ = [
    "IMAGE_COLUMNS",
    "MASKS",
    "accuracy_table",
    "build_masks",
    "masked_pgd",
    "masked_pgd_chunk",
    "masked_pgd_tables",
]
