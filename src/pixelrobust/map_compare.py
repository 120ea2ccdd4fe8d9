"""P2's question: do imperceptible perturbations change the regions that drive the decision?

Rule ``cam`` (:func:`run_cam`): for the attacked images of a chunk, Grad-CAM++ of the true class on
the clean image and of the predicted (adversarial) class on each attack's adversarial image —
the SSIM ball at the comparison ε (kept by ``attack_ssim``) and L∞ / L2 PGD at their matched budgets
(rerun with the seeds ``attack_ssim`` used; predictions are checked against its table).
Rule ``compare_maps`` (:func:`compare_maps`): per image and attack, the SSIM change map
1 − SSIM(clean, adversarial) (skimage, 7×7, channels averaged) against the clean image's CAM:
Pearson and Spearman correlation over pixels, IoU of the top-k % pixels of both maps, the pointing
game (is the change map's maximum in the CAM's top-k %?) and the share of ‖δ‖² inside the CAM's
top-k %. The summary compares the SSIM ball with each PGD baseline by a paired bootstrap.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .cam import gradcam_pp
from .gradients import iou
from .ssim_study import mean_ssim, run_pgd

log = logging.getLogger("pixelrobust")

COMPARISON_COLUMNS = ["image_id", "attack", "pearson", "spearman", "iou_topk", "pointing_hit", "energy_in_topk"]
METRICS = COMPARISON_COLUMNS[2:]
MIN_VERDICT_IMAGES = 10  # ours: fewer paired images give no verdict
SUMMARY_COLUMNS = ["metric", "attack", "baseline", "n_images", "mean", "ci_low", "ci_high", "verdict"]


def topk_mask(m: np.ndarray, k_percent: float) -> np.ndarray:
    """The k % largest entries of a map (at least one pixel; ties broken by position)."""
    flat = m.ravel()
    n = max(1, int(round(flat.size * k_percent / 100)))
    mask = np.zeros(flat.size, bool)
    mask[np.argsort(-flat, kind="stable")[:n]] = True
    return mask.reshape(m.shape)


def compare_one(change: np.ndarray, cam: np.ndarray, energy: np.ndarray, k_percent: float) -> dict:
    """Metrics between one change map and one CAM (both H×W); ``energy`` is ‖δ‖² per pixel."""
    a, b = change.ravel().astype(np.float64), cam.ravel().astype(np.float64)
    flat = np.ptp(a) == 0 or np.ptp(b) == 0
    pearson = np.nan if flat else float(stats.pearsonr(a, b)[0])
    spearman = np.nan if flat else float(stats.spearmanr(a, b)[0])
    ma, mb = topk_mask(change, k_percent), topk_mask(cam, k_percent)
    overlap = iou(ma, mb)
    hit = bool(mb.ravel()[int(np.argmax(a))])
    total = float(energy.sum())
    share = float(energy[mb].sum() / total) if total > 0 else np.nan
    return {"pearson": pearson, "spearman": spearman, "iou_topk": overlap, "pointing_hit": hit, "energy_in_topk": share}


def images_by_id(data_dir, start: int, stop: int, ids, what: str) -> torch.Tensor:
    """The test images ``start..stop`` named by ``ids``, in that order (``what`` names the file that
    listed them, for the error)."""
    from .data import load_split

    split = load_split(data_dir, "test", start, stop)
    pos = {str(i): n for n, i in enumerate(split.ids)}
    ids = [str(i) for i in ids]
    missing = [i for i in ids if i not in pos]
    if missing:
        raise ValueError(f"{what} names images {missing[:3]} that are not in test images {start}..{stop}; rerun the rule "
                         "that wrote it")
    return split.images[[pos[i] for i in ids]] if ids else split.images[:0]


def run_cam(spec: dict, weights, data_dir, start: int, stop: int, attack_csv, attack_npz, matched_csv, out_npz, *, pgd: dict,
            seed: int, batch_size: int, device) -> None:
    """Rule ``cam``: CAMs of the clean and adversarial images of one chunk."""
    from .evaluate import predict
    from .io import load_npz, save_npz
    from .models import build_model
    from .runtime import model_device

    kept = load_npz(attack_npz)
    ids = [str(i) for i in kept["image_id"]]
    x = images_by_id(data_dir, start, stop, ids, attack_npz)
    y = torch.as_tensor(kept["label"]).long()
    model = build_model(spec, weights, device)
    for p in model.parameters():
        p.requires_grad_(False)
    dev = model_device(model)
    table = pd.read_csv(attack_csv, dtype={"image_id": str})
    matched = pd.read_csv(matched_csv)
    advs = {"ssim_ball": torch.from_numpy(kept["ssim_ball"])}
    if len(advs["ssim_ball"]) != len(ids):
        raise ValueError(f"{attack_npz}: {len(advs['ssim_ball'])} adversarial images for {len(ids)} ids; rerun attack_ssim")
    budgets = {"ssim_ball": float(matched.ssim_epsilon.iloc[0])}
    for row in matched.itertuples():
        budgets[row.attack] = float(row.epsilon)
        norm = row.attack.removeprefix("pgd_")
        advs[row.attack] = run_pgd(model, x.to(dev), y.to(dev), pgd, norm, budgets[row.attack], seed, batch_size).cpu()
    out = {"image_id": np.asarray(ids, dtype=str), "label": y.numpy(), "cam_clean": gradcam_pp(model, x, y, batch_size)}
    for attack, adv in advs.items():
        pred = predict(model, adv, batch_size, dev).argmax(1) if len(adv) else torch.zeros(0, dtype=torch.long)
        rec = table[(table.attack == attack) & np.isclose(table.epsilon, budgets[attack])].set_index("image_id")
        if len(rec) and len(ids):
            differ = int((rec.loc[ids, "pred"].to_numpy() != pred.numpy()).sum())
            if differ:
                log.warning("%s: %d of %d predictions differ from attack_ssim's (nondeterministic kernels?)", attack, differ, len(ids))
        out[f"adv_{attack}"] = adv.numpy().astype(np.float32)
        out[f"pred_{attack}"] = pred.numpy()
        out[f"cam_{attack}"] = gradcam_pp(model, adv, pred, batch_size)
    save_npz(out_npz, **out)


def compare_chunk(npz: dict, images: torch.Tensor, k_percent: float) -> list[dict]:
    rows = []
    attacks = [k.removeprefix("adv_") for k in npz if k.startswith("adv_")]
    for n, image_id in enumerate(npz["image_id"]):
        x = images[n]
        for attack in attacks:
            adv = torch.from_numpy(npz[f"adv_{attack}"][n])
            _, smap = mean_ssim(x, adv, full=True)
            energy = ((adv - x).double() ** 2).sum(0).numpy()
            rows.append({"image_id": str(image_id), "attack": attack,
                         **compare_one(1 - smap, npz["cam_clean"][n], energy, k_percent)})
    return rows


def bootstrap_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float]:
    v = values[~np.isnan(values)]
    if len(v) < 2:
        return (np.nan, np.nan)
    means = rng.choice(v, size=(n_boot, len(v)), replace=True).mean(1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def summarise(comparison: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per metric: each attack's mean with a bootstrap 95 % CI, and the paired difference
    SSIM ball − PGD with its CI and a verdict (more / less aligned, or no clear difference)."""
    rng = np.random.default_rng(seed)
    rows = []
    data = comparison.astype({"pointing_hit": float})
    attacks = list(dict.fromkeys(data.attack))
    for metric in METRICS:
        wide = data.pivot_table(index="image_id", columns="attack", values=metric, aggfunc="first")
        for attack in attacks:
            v = wide[attack].to_numpy(float)
            lo, hi = bootstrap_ci(v, n_boot, rng)
            rows.append({"metric": metric, "attack": attack, "baseline": "", "n_images": int((~np.isnan(v)).sum()),
                         "mean": float(np.nanmean(v)) if (~np.isnan(v)).any() else np.nan, "ci_low": lo, "ci_high": hi, "verdict": ""})
        if "ssim_ball" not in wide:
            continue
        for base in [a for a in attacks if a != "ssim_ball"]:
            diff = (wide["ssim_ball"] - wide[base]).to_numpy(float)
            lo, hi = bootstrap_ci(diff, n_boot, rng)
            verdict = ("SSIM ball more aligned with the CAM" if lo > 0 else "SSIM ball less aligned with the CAM" if hi < 0
                       else "no clear difference")
            rows.append({"metric": metric, "attack": "ssim_ball", "baseline": base, "n_images": int((~np.isnan(diff)).sum()),
                         "mean": float(np.nanmean(diff)) if (~np.isnan(diff)).any() else np.nan, "ci_low": lo, "ci_high": hi,
                         "verdict": verdict if len(diff[~np.isnan(diff)]) >= MIN_VERDICT_IMAGES
                         else f"too few images (< {MIN_VERDICT_IMAGES})"})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def compare_maps(cam_npzs: list[str], bounds: list[tuple[int, int]], data_dir, out: dict, *, k_percent: float, n_boot: int,
                 seed: int) -> pd.DataFrame:
    """Rule ``compare_maps``: ``ssim_cam_comparison.csv`` and ``ssim_cam_summary.csv``/``.md``."""
    from .io import load_npz, write_table

    rows = []
    for path, (start, stop) in zip(cam_npzs, bounds):
        npz = load_npz(path)
        rows += compare_chunk(npz, images_by_id(data_dir, start, stop, npz["image_id"], path), k_percent)
    comparison = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if comparison.empty:
        raise ValueError("no attacked image to compare; raise ssim.n_images")
    write_table(comparison, out["csv"], float_format="%.6g")
    summary = summarise(comparison, n_boot, seed)
    write_table(summary, out["summary"], out["summary_md"], float_format="%.4f")
    return summary


__all__ = ["COMPARISON_COLUMNS", "METRICS", "bootstrap_ci", "compare_maps", "compare_one", "images_by_id", "run_cam", "summarise", "topk_mask"]
