"""Our synthesis beyond the papers: the four "where" maps of the same images side by side.

For one model and the images P1 searched (its correctly classified ones), four per-pixel maps:

- ``onepixel`` (P1): the exhaustive search's true-class probability drop of each searched pixel's
  best palette colour (``onepixel_search``'s ``drop`` map; defined on the searched pixels only);
- ``ssim_ball`` (P2): 1 − SSIM(clean, adversarial) (skimage, 7×7, channels averaged) of the
  SSIM-ball attack at ``synthesis.epsilon`` — the change map P2's comparison uses;
- ``gradcam_pp``: Grad-CAM++ of the true class on the clean image;
- ``input_gradient`` (P3): |∂CE/∂x| of the image, averaged over channels (P3's per-pixel measure,
  here per image rather than over a dataset).

Every pair is compared per image by Spearman's rank correlation over pixels and by the IoU of the
top-k % pixels of both maps; pairs with the one-pixel map use only the pixels P1 searched (the
whole image on CIFAR, a grid on ImageNet), the others every pixel (ours). The table holds per model
and pair the mean over images with bootstrap 95 % intervals (over images) and the IoU two random
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
from .gradients import chance_iou as mask_chance_iou, input_gradients, iou
from .map_compare import bootstrap_ci, topk_mask
from .ssim_ball import SSIMBall
from .ssim_study import mean_ssim

log = logging.getLogger("pixelrobust")

MAPS = ("onepixel", "ssim_ball", "gradcam_pp", "input_gradient")
LABELS = {"onepixel": "P1 one-pixel drop", "ssim_ball": "P2 SSIM-ball change", "gradcam_pp": "Grad-CAM++",
          "input_gradient": "P3 input gradient"}
PAIRS = list(itertools.combinations(MAPS, 2))
TABLE_COLUMNS = ["dataset", "model", "map_a", "map_b", "spearman", "iou_topk", "ci_low", "ci_high",
                 "iou_ci_low", "iou_ci_high", "chance_iou", "n_images", "n_pixels", "topk_percent"]
IMAGE_COLUMNS = ["dataset", "model", "image_id", "map_a", "map_b", "spearman", "iou_topk", "n_pixels"]


def chance_iou(k_percent: float) -> float:
    """Expected IoU of two independent random top-k % sets (q / (2 − q) for q = k / 100)."""
    return mask_chance_iou(k_percent / 100, k_percent / 100)


def image_maps(model, images: torch.Tensor, labels: torch.Tensor, *, epsilon: float, ball: dict,
               batch_size: int) -> dict[str, np.ndarray]:
    """The SSIM-ball change, Grad-CAM++ and input-gradient maps (each N×H×W) of ``images`` in [0, 1]."""
    from .runtime import model_device

    device = model_device(model)
    change, grads, success = [], [], []
    for s in range(0, len(images), batch_size):
        x, y = images[s : s + batch_size].to(device), labels[s : s + batch_size].to(device)
        res = SSIMBall(model, epsilon, **ball).run(x, y)
        for clean, adv in zip(x.cpu(), res["adv"].cpu()):
            change.append(1 - mean_ssim(clean, adv, full=True)[1])
        success.append(res["success"].numpy())
        grads.append(input_gradients(model, x, y).abs().mean(1).detach().cpu().numpy())
    empty = np.zeros((0,) + tuple(images.shape[-2:]), np.float32)
    return {"ssim_ball": np.stack(change).astype(np.float32) if change else empty,
            "gradcam_pp": gradcam_pp(model, images, labels, batch_size),
            "input_gradient": np.concatenate(grads).astype(np.float32) if grads else empty,
            "ssim_success": np.concatenate(success) if success else np.zeros(0, bool)}


def compare_pair(a: np.ndarray, b: np.ndarray, pixels: np.ndarray, k_percent: float) -> dict:
    """Spearman and top-k IoU of two H×W maps over the pixels where ``pixels`` is True."""
    va, vb = a[pixels].astype(np.float64), b[pixels].astype(np.float64)
    if not (np.isfinite(va).all() and np.isfinite(vb).all()):
        raise FloatingPointError("a map holds NaN or inf on the compared pixels")
    flat = np.ptp(va) == 0 or np.ptp(vb) == 0
    rho = np.nan if flat else float(stats.spearmanr(va, vb)[0])
    ma, mb = topk_mask(va, k_percent), topk_mask(vb, k_percent)
    return {"spearman": rho, "iou_topk": iou(ma, mb), "n_pixels": int(pixels.sum())}


def compare_images(maps: dict[str, np.ndarray], searched: np.ndarray, k_percent: float) -> pd.DataFrame:
    """Per image and pair of maps (all N×H×W; ``searched`` the pixels P1 searched), the two metrics."""
    rows = []
    full = np.ones(searched.shape[1:], bool)
    for n in range(len(searched)):
        for a, b in PAIRS:
            pixels = searched[n] if "onepixel" in (a, b) else full
            rows.append({"image": n, "map_a": a, "map_b": b, **compare_pair(maps[a][n], maps[b][n], pixels, k_percent)})
    return pd.DataFrame(rows)


def summarise(per_image: pd.DataFrame, k_percent: float, n_boot: int, seed: int) -> pd.DataFrame:
    """Per model and pair: mean Spearman and IoU over images with bootstrap 95 % intervals."""
    rng = np.random.default_rng(seed)
    rows = []
    for (ds, model, a, b), d in per_image.groupby(["dataset", "model", "map_a", "map_b"], sort=False):
        rho, iou = d.spearman.to_numpy(float), d.iou_topk.to_numpy(float)
        lo, hi = bootstrap_ci(rho, n_boot, rng)
        ilo, ihi = bootstrap_ci(iou, n_boot, rng)
        rows.append({"dataset": ds, "model": model, "map_a": a, "map_b": b,
                     "spearman": float(np.nanmean(rho)) if np.isfinite(rho).any() else np.nan,
                     "iou_topk": float(iou.mean()), "ci_low": lo, "ci_high": hi, "iou_ci_low": ilo, "iou_ci_high": ihi,
                     "chance_iou": chance_iou(k_percent), "n_images": len(d), "n_pixels": int(d.n_pixels.median()),
                     "topk_percent": k_percent})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


# ----------------------------------------------------------------------------------------------
# Job entry points
# ----------------------------------------------------------------------------------------------


def run_maps(spec: dict, weights, data_dir, onepixel_npzs: list[str], bounds: list[tuple[int, int]], out_npz, *,
             n_images: int | None, epsilon: float, ball: dict, batch_size: int, device) -> None:
    """Rule ``four_maps``: the four maps of the first ``n_images`` images P1 searched for one model."""
    from .data import load_split
    from .io import load_npz, save_npz
    from .models import build_model

    if len(onepixel_npzs) != len(bounds):
        raise ValueError(f"{len(onepixel_npzs)} one-pixel map files for {len(bounds)} chunks")
    ids, imgs, labels, drop, searched = [], [], [], [], []
    for path, (start, stop) in zip(onepixel_npzs, bounds):
        z = load_npz(path)
        split = load_split(data_dir, "test", start, stop)
        if [str(i) for i in z["ids"]] != split.ids:
            raise ValueError(f"{path} does not belong to test images {start}..{stop} of {data_dir}; rerun onepixel_search")
        keep = np.flatnonzero(z["searched"].reshape(len(z["searched"]), -1).any(1))  # the correctly classified images
        if n_images is not None:
            keep = keep[: max(0, n_images - len(ids))]
        ids += [split.ids[i] for i in keep]
        imgs.append(split.images[keep])
        labels.append(split.labels[keep])
        drop.append(np.where(z["searched"][keep], z["drop"][keep], np.nan).astype(np.float32))
        searched.append(z["searched"][keep])
    if not ids:
        raise ValueError(f"no image with a one-pixel map for {spec['name']}: P1 found no correctly classified image; "
                         "raise onepixel.n_images")
    x, y = torch.cat(imgs), torch.cat(labels)
    model = build_model(spec, weights, device)
    log.info("%s: four maps of %d images", spec["name"], len(ids))
    maps = image_maps(model, x, y, epsilon=epsilon, ball=ball, batch_size=batch_size)
    save_npz(out_npz, image_id=np.asarray(ids, dtype=str), label=y.numpy(), image=x.numpy().astype(np.float32),
             onepixel=np.concatenate(drop),
             searched=np.concatenate(searched), **maps)


def load_maps(path) -> dict:
    from .io import load_npz

    z = load_npz(path)
    missing = [k for k in (*MAPS, "searched", "image_id") if k not in z]
    if missing:
        raise ValueError(f"{path} lacks {missing}; rerun the four_maps rule")
    return z


def run_tables(npzs: dict[str, str], datasets: dict[str, str], out: dict, *, k_percent: float, n_boot: int,
               seed: int) -> pd.DataFrame:
    """Rule ``synthesis_tables``: ``synthesis.csv``/``.md`` and the per-image ``synthesis_images.csv``."""
    from .io import write_table

    frames = []
    for model, path in npzs.items():
        z = load_maps(path)
        d = compare_images(z, z["searched"], k_percent)
        d.insert(0, "image_id", z["image_id"][d.pop("image").to_numpy()])
        d.insert(0, "model", model)
        d.insert(0, "dataset", datasets[model])
        frames.append(d)
    per_image = pd.concat(frames, ignore_index=True)[IMAGE_COLUMNS]
    table = summarise(per_image, k_percent, n_boot, seed)
    write_table(per_image, out["images"], float_format="%.6g")
    write_table(table, out["csv"], out["md"])
    return table


__all__ = ["IMAGE_COLUMNS", "LABELS", "MAPS", "PAIRS", "TABLE_COLUMNS", "chance_iou", "compare_images", "compare_pair",
           "image_maps", "load_maps", "run_maps", "run_tables", "summarise"]
