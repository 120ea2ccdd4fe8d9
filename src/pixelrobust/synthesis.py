"""Our synthesis beyond the papers: the four "where" maps of the same images side by side.

For one model and the images P1 searched (its correctly classified ones), four per-pixel maps:

- ``onepixel`` (P1): the exhaustive search's true-class probability drop of each searched pixel's
  best palette colour (``onepixel_search``'s ``drop`` map; defined on the searched pixels only);
- ``ssim_ball`` (P2): a map of the SSIM-ball perturbation δ at ``synthesis.epsilon``, the one P2's
  verdict uses (``ssim.compare.primary.map``; by default ‖δ‖² per pixel, where its budget goes);
- ``gradcam_pp``: Grad-CAM++ of the true class on the clean image;
- ``input_gradient`` (P3): |∂CE/∂x| of the image, averaged over channels (P3's per-pixel measure,
  here per image rather than over a dataset).

Every pair is compared per image by Spearman's rank correlation over pixels and by the IoU of the
top-k % pixels of both maps; pairs with the one-pixel map use only the pixels P1 searched (the
whole image on CIFAR, a grid on ImageNet), the others every pixel (ours). Maps share a centre and
texture bias whatever the image, so agreement is measured against a **permutation null**: each
image's map ``a`` against the map ``b`` of every *other* image of the same model (all N − 1
mismatched pairings, the exact mean over random derangements; :func:`agreement_matrices` computes
all N × N pairings at once). The table holds per model and pair the observed mean over images, the
null mean, and the excess (per image: its own agreement minus its mean agreement with the other
images' maps) with bootstrap 95 % intervals over images, beside the IoU two independent random
top-k sets would reach.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .cam import gradcam_pp
from .data import load_split
from .gradients import input_gradients
from .io import load_npz, save_npz, write_table
from .map_compare import MAPS as P2_MAPS
from .map_compare import change_maps
from .maps import chance_iou, iou, iou_matrix, top_k_mask
from .models import build_model
from .runtime import model_device
from .ssim_ball import SSIMBall
from .stats import boot_mean, bootstrap_ci

log = logging.getLogger("pixelrobust")

MAPS = ("onepixel", "ssim_ball", "gradcam_pp", "input_gradient")
LABELS = {
    "onepixel": "P1 one-pixel drop",
    "ssim_ball": "P2 SSIM-ball δ map",
    "gradcam_pp": "Grad-CAM++",
    "input_gradient": "P3 input gradient",
}
PAIRS = list(itertools.combinations(MAPS, 2))
TABLE_COLUMNS = [
    "dataset",
    "model",
    "map_a",
    "map_b",
    "spearman",
    "iou_topk",
    "ci_low",
    "ci_high",
    "iou_ci_low",
    "iou_ci_high",
    "chance_iou",
    "n_images",
    "n_pixels",
    "topk_percent",
    "spearman_null",
    "iou_null",
    "spearman_excess",
    "spearman_excess_ci_low",
    "spearman_excess_ci_high",
    "iou_excess",
    "iou_excess_ci_low",
    "iou_excess_ci_high",
    "null_pairs",
]
IMAGE_COLUMNS = [
    "dataset",
    "model",
    "image_id",
    "map_a",
    "map_b",
    "spearman",
    "iou_topk",
    "n_pixels",
    "spearman_null",
    "iou_null",
    "null_pairs",
]


def image_maps(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epsilon: float,
    ball: dict,
    batch_size: int,
    p2_map: str = "energy",
) -> dict[str, np.ndarray]:
    """The SSIM-ball change map (``p2_map``, one of :data:`pixelrobust.map_compare.MAPS`), Grad-CAM++ and
    input-gradient maps (each N×H×W) of ``images`` in [0, 1]."""
    if p2_map not in P2_MAPS:
        raise ValueError(
            f"the P2 map must be one of {', '.join(P2_MAPS)}, got {p2_map!r} (ssim.compare.primary.map)"
        )
    geom = {
        "size": ball.get("size", 8),
        "stride": ball.get("stride", 8),
        "k1": ball.get("k1", 0.01),
        "k2": ball.get("k2", 0.03),
    }
    device = model_device(model)
    change, grads, success = [], [], []
    for s in range(0, len(images), batch_size):
        x, y = images[s : s + batch_size].to(device), labels[s : s + batch_size].to(device)
        res = SSIMBall(model, epsilon, **ball).run(x, y)
        for clean, adv in zip(x.cpu(), res["adv"].cpu()):
            change.append(change_maps(clean, adv, **geom)[0][p2_map])
        success.append(res["success"].numpy())
        grads.append(input_gradients(model, x, y).abs().mean(1).detach().cpu().numpy())
    empty = np.zeros((0,) + tuple(images.shape[-2:]), np.float32)
    return {
        "ssim_ball": np.stack(change).astype(np.float32) if change else empty,
        "gradcam_pp": gradcam_pp(model, images, labels, batch_size),
        "input_gradient": np.concatenate(grads).astype(np.float32) if grads else empty,
        "ssim_success": np.concatenate(success) if success else np.zeros(0, bool),
    }


def compare_pair(a: np.ndarray, b: np.ndarray, pixels: np.ndarray, k_percent: float) -> dict:
    """Spearman and top-k IoU of two H×W maps over the pixels where ``pixels`` is True."""
    va, vb = a[pixels].astype(np.float64), b[pixels].astype(np.float64)
    if not (np.isfinite(va).all() and np.isfinite(vb).all()):
        raise FloatingPointError("a map holds NaN or inf on the compared pixels")
    flat = np.ptp(va) == 0 or np.ptp(vb) == 0
    rho = np.nan if flat else float(stats.spearmanr(va, vb)[0])
    ma = top_k_mask(va, k_percent, ties="shuffled", at_least_one=True)
    mb = top_k_mask(vb, k_percent, ties="shuffled", at_least_one=True)
    return {"spearman": rho, "iou_topk": iou(ma, mb), "n_pixels": int(pixels.sum())}


def _standard_ranks(v: np.ndarray) -> np.ndarray:
    """Rows of average ranks, centred and scaled so that a row's mean square is 1 (NaN rows for flat maps)."""
    r = stats.rankdata(v, axis=1)
    r = r - r.mean(1, keepdims=True)
    sd = np.sqrt((r * r).mean(1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, r / sd, np.nan)


def agreement_matrices(
    a: np.ndarray, b: np.ndarray, k_percent: float
) -> tuple[np.ndarray, np.ndarray]:
    """Spearman and top-k IoU of every map of ``a`` (N×P, one row per image) with every map of ``b``:
    two N×N matrices whose diagonals are the same-image values (:func:`compare_pair`'s) and whose
    off-diagonal entries are the mismatched pairings of the permutation null."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"agreement_matrices needs two N×P arrays of one shape, got {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise FloatingPointError("a map holds NaN or inf on the compared pixels")
    za, zb = _standard_ranks(a), _standard_ranks(b)
    rho = np.clip(za @ zb.T / a.shape[1], -1, 1)
    ma = np.stack([top_k_mask(v, k_percent, ties="shuffled", at_least_one=True) for v in a])
    mb = np.stack([top_k_mask(v, k_percent, ties="shuffled", at_least_one=True) for v in b])
    return rho, iou_matrix(ma, mb)


def compare_images(
    maps: dict[str, np.ndarray], searched: np.ndarray, k_percent: float
) -> pd.DataFrame:
    """Per image and pair of maps (all N×H×W; ``searched`` the pixels P1 searched): Spearman and top-k
    IoU of the image's own maps, and their means over the image's map ``a`` against the other images'
    maps ``b`` (``spearman_null``, ``iou_null``; among images P1 searched on the same pixels)."""
    n = len(searched)
    full = np.ones(searched.shape[1:], bool)
    rows = []
    for a, b in PAIRS:
        groups: dict[bytes, list[int]] = {}
        for i in range(n):
            pixels = searched[i] if "onepixel" in (a, b) else full
            groups.setdefault(np.packbits(pixels).tobytes(), []).append(i)
        for members in groups.values():
            pixels = searched[members[0]] if "onepixel" in (a, b) else full
            va = np.stack([maps[a][i][pixels] for i in members])
            vb = np.stack([maps[b][i][pixels] for i in members])
            rho, ov = agreement_matrices(va, vb, k_percent)
            m = len(members)
            off = ~np.eye(m, dtype=bool)
            for j, i in enumerate(members):
                null_rho = rho[j][off[j]]
                rows.append(
                    {
                        "image": i,
                        "map_a": a,
                        "map_b": b,
                        "spearman": rho[j, j],
                        "iou_topk": ov[j, j],
                        "n_pixels": int(pixels.sum()),
                        "spearman_null": float(np.nanmean(null_rho))
                        if np.isfinite(null_rho).any()
                        else np.nan,
                        "iou_null": float(ov[j][off[j]].mean()) if m > 1 else np.nan,
                        "null_pairs": m - 1,
                    }
                )
    order = {p: k for k, p in enumerate(PAIRS)}
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["_pair"] = [order[(a, b)] for a, b in zip(out.map_a, out.map_b)]
    return (
        out.sort_values(["image", "_pair"], kind="stable")
        .drop(columns="_pair")
        .reset_index(drop=True)
    )


def _nanmean(v: np.ndarray) -> float:
    return float(np.nanmean(v)) if np.isfinite(v).any() else np.nan


def summarise(per_image: pd.DataFrame, k_percent: float, n_boot: int, seed: int) -> pd.DataFrame:
    """Per model and pair: the observed mean Spearman and IoU over images with bootstrap 95 % intervals,
    the permutation null's means, and the excess (observed − null, per image) with its interval."""
    rng = np.random.default_rng(seed)
    rows = []
    for (ds, model, a, b), d in per_image.groupby(
        ["dataset", "model", "map_a", "map_b"], sort=False
    ):
        rho, ov = d.spearman.to_numpy(float), d.iou_topk.to_numpy(float)
        lo, hi = bootstrap_ci(rho, n_boot, rng)
        ilo, ihi = bootstrap_ci(ov, n_boot, rng)
        rho_null, iou_null = d.spearman_null.to_numpy(float), d.iou_null.to_numpy(float)
        rex = boot_mean(rho - rho_null, n_boot, rng)
        iex = boot_mean(ov - iou_null, n_boot, rng)
        # the images the verdict rests on: those with a finite excess (a NaN null or Spearman is dropped from
        # the intervals), the smaller count of the two, so the minimum-images gate sees what was resampled
        mr, mi = np.isfinite(rho - rho_null), np.isfinite(ov - iou_null)
        n_used = int(min(mr.sum(), mi.sum()))
        # (a model with a single image has no null at all: then its observed means are over every image)
        mr, mi = (mr if mr.any() else np.ones_like(mr)), (mi if mi.any() else np.ones_like(mi))
        # observed and null means over the images the excess is computed on, so observed - null = excess
        rows.append(
            {
                "dataset": ds,
                "model": model,
                "map_a": a,
                "map_b": b,
                "spearman": _nanmean(rho[mr]),
                "iou_topk": _nanmean(ov[mi]),
                "ci_low": lo,
                "ci_high": hi,
                "iou_ci_low": ilo,
                "iou_ci_high": ihi,
                "chance_iou": chance_iou(k_percent / 100, k_percent / 100),
                "n_images": n_used,
                "n_pixels": int(d.n_pixels.median()),
                "topk_percent": k_percent,
                "spearman_null": _nanmean(rho_null[mr]),
                "iou_null": _nanmean(iou_null[mi]),
                "spearman_excess": rex[0],
                "spearman_excess_ci_low": rex[1],
                "spearman_excess_ci_high": rex[2],
                "iou_excess": iex[0],
                "iou_excess_ci_low": iex[1],
                "iou_excess_ci_high": iex[2],
                "null_pairs": int(d.null_pairs.median()),
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


# ----------------------------------------------------------------------------------------------
# Job entry points
# ----------------------------------------------------------------------------------------------


def four_maps(
    *,
    data,
    weights,
    maps: list[str],
    out: dict,
    spec: dict,
    bounds: list[tuple[int, int]],
    n_images: int | None,
    epsilon: float,
    ball: dict,
    p2_map: str,
    batch_size: int,
    device,
) -> None:
    """Rule ``four_maps``: the four maps of the first ``n_images`` images P1 searched for one model (its
    one-pixel map files ``maps``, one per chunk of ``bounds``), to ``out["npz"]``."""
    if len(maps) != len(bounds):
        raise ValueError(f"{len(maps)} one-pixel map files for {len(bounds)} chunks")
    ids, imgs, labels, drop, searched = [], [], [], [], []
    for path, (start, stop) in zip(maps, bounds):
        z = load_npz(path)
        split = load_split(data, "test", start, stop)
        if [str(i) for i in z["ids"]] != split.ids:
            raise ValueError(
                f"{path} does not belong to test images {start}..{stop} of {data}; rerun onepixel_search"
            )
        keep = np.flatnonzero(
            z["searched"].reshape(len(z["searched"]), -1).any(1)
        )  # the correctly classified images
        if n_images is not None:
            keep = keep[: max(0, n_images - len(ids))]
        ids += [split.ids[i] for i in keep]
        imgs.append(split.images[keep])
        labels.append(split.labels[keep])
        drop.append(np.where(z["searched"][keep], z["drop"][keep], np.nan).astype(np.float32))
        searched.append(z["searched"][keep])
    if not ids:
        raise ValueError(
            f"no image with a one-pixel map for {spec['name']}: P1 found no correctly classified image; "
            "raise onepixel.n_images"
        )
    x, y = torch.cat(imgs), torch.cat(labels)
    model = build_model(spec, weights, device)
    log.info("%s: four maps of %d images", spec["name"], len(ids))
    four = image_maps(model, x, y, epsilon=epsilon, ball=ball, batch_size=batch_size, p2_map=p2_map)
    save_npz(
        out["npz"],
        image_id=np.asarray(ids, dtype=str),
        label=y.numpy(),
        image=x.numpy().astype(np.float32),
        onepixel=np.concatenate(drop),
        p2_map=np.asarray(p2_map),
        searched=np.concatenate(searched),
        **four,
    )


def load_maps(path) -> dict:
    z = load_npz(path)
    missing = [k for k in (*MAPS, "searched", "image_id") if k not in z]
    if missing:
        raise ValueError(f"{path} lacks {missing}; rerun the four_maps rule")
    return z


def synthesis_tables(
    *,
    maps: dict[str, str],
    out: dict,
    datasets: dict[str, str],
    topk_percent: float,
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """Rule ``synthesis_tables``: the four_maps files (``maps``: model -> file) into ``synthesis.csv``/``.md``
    and the per-image ``synthesis_images.csv``."""
    frames = []
    for model, path in maps.items():
        z = load_maps(path)
        d = compare_images(z, z["searched"], topk_percent)
        d.insert(0, "image_id", z["image_id"][d.pop("image").to_numpy()])
        d.insert(0, "model", model)
        d.insert(0, "dataset", datasets[model])
        frames.append(d)
    per_image = pd.concat(frames, ignore_index=True)[IMAGE_COLUMNS]
    table = summarise(per_image, topk_percent, n_boot, seed)
    write_table(per_image, out["images"], float_format="%.6g")
    write_table(table, out["csv"], out["md"])
    return table


__all__ = [
    "IMAGE_COLUMNS",
    "LABELS",
    "MAPS",
    "PAIRS",
    "TABLE_COLUMNS",
    "agreement_matrices",
    "compare_images",
    "compare_pair",
    "four_maps",
    "image_maps",
    "load_maps",
    "summarise",
    "synthesis_tables",
]
