"""P2's question: do imperceptible perturbations change the regions that drive the decision?

Rule ``cam`` (:func:`cam`): for the attacked images of a chunk, Grad-CAM++ of the true class on
the clean image and of the predicted (adversarial) class on each attack's adversarial image —
the SSIM ball at the comparison ε (kept by ``attack_ssim``) and L∞ / L2 PGD at their matched budgets
(rerun with the seeds ``attack_ssim`` used; predictions are checked against its table).

Rule ``compare_maps`` (:func:`compare_maps`): per image and attack, three maps of the perturbation δ
(:data:`MAPS`, :func:`change_maps`) against the clean image's CAM:

- ``energy``: ‖δ‖² per pixel (channels summed) — where the perturbation's budget goes;
- ``window_ssim``: 1 − SSIM measured on the attack constraint's own windows (``ssim.window`` at
  ``ssim.stride``), each pixel the mean over the windows holding it;
- ``sliding_ssim``: 1 − SSIM of skimage's 7×7 sliding windows (channels averaged), the map P2's
  comparison used before: on disjoint windows it shows the block grid, not the perturbation.

Per map: Pearson and Spearman over pixels, IoU of the top-k % pixels of both maps, the pointing
game (is the map's maximum in the CAM's top-k %?), the share of the map's mass inside the CAM's
top-k % and Spearman with the clean image's local texture (7×7 standard deviation). Per image and
attack the **grid diagnostic** (:func:`grid_ratio`): mean 1 − SSIM of the windows of the
constraint's size aligned with its grid over that of the windows straddling it (1: no grid; the
disjoint 8×8 ball gives about 0.02). The summary compares the SSIM ball with each PGD baseline by a
paired bootstrap over images; P2's verdict uses one primary map and metric (``ssim.compare.primary``).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats

from .cam import gradcam_pp
from .data import load_split
from .errors import ConfigError
from .evaluate import predict
from .io import load_npz, save_npz, write_table
from .maps import iou, top_k_mask
from .models import build_model, freeze
from .runtime import model_device
from .ssim_ball import window_factors, window_index
from .ssim_study import mean_ssim, run_pgd
from .stats import MIN_IMAGES, boot_mean, decide, paired_diff_ci, wilson_ci

log = logging.getLogger("pixelrobust")

MAPS = ("energy", "window_ssim", "sliding_ssim")
MAP_LABELS = {
    "energy": "‖δ‖² per pixel",
    "window_ssim": "1 − SSIM, constraint windows",
    "sliding_ssim": "1 − SSIM, 7×7 sliding",
}
METRICS = ["pearson", "spearman", "iou_topk", "pointing_hit", "mass_in_topk"]
COMPARISON_COLUMNS = [
    "image_id",
    "attack",
    "map",
    *METRICS,
    "texture_spearman",
    "grid_ratio",
    "success",
]
# The model-free control of the same run (ours): the SSIM ball's feasible-set budget map, :func:`budget_map`.
# It is compared with the clean CAM like an attack and must be beaten by the SSIM ball like the PGD baselines.
BUDGET = "ssim_budget"
BUDGET_MAPS = (
    "energy",
    "window_ssim",
)  # the maps a budget exists for (sliding 7×7 SSIM is not what the ball bounds)
SUCCESS_OK, SUCCESS_DIFFERS = "success matched", "success differs"
SUMMARY_COLUMNS = [
    "metric",
    "map",
    "attack",
    "baseline",
    "n_images",
    "mean",
    "ci_low",
    "ci_high",
    "verdict",
    "primary",
]
TEXTURE_WINDOW = 7  # ours: local texture = standard deviation over 7×7 (skimage's SSIM window), channels averaged
GRID_OK, GRID_ARTEFACT, GRID_NONE = "no grid artefact", "grid artefact", "no straddling windows"
GRID_FLOOR = 1e-6  # ours: per-image grid ratios are clipped here before the geometric mean (a ratio of 0 has no log)
PAIRED = {
    "held": "SSIM ball more aligned with the CAM",
    "not held": "SSIM ball less aligned with the CAM",
    "inconclusive": "no clear difference",
    "too few images": f"too few images (< {MIN_IMAGES})",
}


# ---- maps of the perturbation and the grid diagnostic ---------------------------------------------


def window_dissimilarity(
    x: torch.Tensor, adv: torch.Tensor, size: int, k1: float = 0.01, k2: float = 0.03
) -> np.ndarray:
    """1 − SSIM of every sliding ``size``×``size`` window of two C×H×W images (uniform window, skimage's
    sample covariance, data range 1, channels averaged): an (H−size+1)×(W−size+1) array whose entry
    [r, c] belongs to the window with top-left pixel (r, c). The same factors as the SSIM ball's."""
    a, b = x.detach().cpu().double()[None], adv.detach().cpu().double()[None]
    n = size * size

    def box(t):
        return F.avg_pool2d(t, size, stride=1)

    mx, my = box(a), box(b)
    vx = (box(a * a) - mx * mx) * n / (n - 1)
    vy = (box(b * b) - my * my) * n / (n - 1)
    cxy = (box(a * b) - mx * my) * n / (n - 1)
    c1, c2 = k1**2, k2**2
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    cs = (2 * cxy + c2) / (vx + vy + c2)
    return (1 - lum * cs).mean(1)[0].numpy()


def grid_ratio(dissimilarity: np.ndarray, stride: int) -> float:
    """The grid diagnostic: mean 1 − SSIM of the windows aligned with the constraint's grid (top-left
    row and column ≡ 0 mod ``stride``: the constraint's own windows) over the mean of all others (which
    straddle its windows). About 1 for a perturbation that ignores the grid; far below 1 when the
    constraint holds on its windows only and the change lives on their seams. NaN for ``stride`` 1
    (every window is constrained) or no change at all."""
    if stride <= 1:
        return math.nan
    aligned = np.zeros(dissimilarity.shape, bool)
    aligned[::stride, ::stride] = True
    other = float(dissimilarity[~aligned].mean())
    return float(dissimilarity[aligned].mean()) / other if other > 0 else math.nan


def constraint_window_map(
    x: torch.Tensor, adv: torch.Tensor, size: int, stride: int, k1: float = 0.01, k2: float = 0.03
) -> np.ndarray:
    """1 − SSIM on the SSIM ball's own windows (channels averaged), spread to the pixels: each pixel
    the mean over the windows that hold it (H×W)."""
    H, W = x.shape[-2:]
    idx = window_index(H, W, size, stride)
    lum, cs = window_factors(x.detach().cpu()[None], adv.detach().cpu()[None], size, stride, k1, k2)
    d = (1 - lum * cs).mean(1)[0]  # per window
    acc = torch.zeros(H * W, dtype=torch.float64).index_add_(
        0, idx.flatten(), d.repeat_interleave(idx.shape[1])
    )
    count = torch.bincount(idx.flatten(), minlength=H * W).double()
    return (acc / count).view(H, W).numpy()


def budget_map(
    x: torch.Tensor,
    epsilon: float,
    size: int,
    stride: int,
    luminance: bool = True,
    k1: float = 0.01,
    k2: float = 0.03,
    name: str = "energy",
) -> np.ndarray:
    """The SSIM ball's **budget map** (model-free; ours): where the constraint itself lets a perturbation put
    its energy, from the ball's own radii at ``epsilon`` and the window layout, with no model or gradient.

    For ``name`` ``energy``: per window and channel the largest ‖δ_w‖² the window's set allows. With
    δ_w = Pδ_w + mean(δ_w)·1, ‖δ_w‖² = ‖Pδ_w‖² + n·mean(δ_w)², the structure ball ‖Pδ_w − a_w‖ ≤ r_w gives
    ‖Pδ_w‖ ≤ ‖a_w‖ + r_w and the luminance interval |mean(δ_w) − b_w| ≤ s_w gives |mean| ≤ |b_w| + s_w, so
    the largest energy is (‖a_w‖ + r_w)² + n(|b_w| + s_w)² (without ``luminance`` the mean is not bounded
    by the ball: the structure term only). Spread evenly over the window's n pixels, each pixel the mean
    over the windows holding it, channels summed: H×W. (The box 0 ≤ x+δ ≤ 1 is ignored.)
    For ``name`` ``window_ssim``: every constraint window may reach 1 − SSIM = 1 − (1 − ε)²: a constant map."""
    x = x.detach().cpu().double()
    C, H, W = x.shape
    if name == "window_ssim":
        return np.full((H, W), 1 - (1 - epsilon) ** 2)
    if name != "energy":
        raise ValueError(
            f"budget_map: no budget for map {name!r}; use one of {', '.join(BUDGET_MAPS)}"
        )
    e, n = float(epsilon), size * size
    idx = window_index(H, W, size, stride)
    xw = x.reshape(C, -1)[:, idx]  # C × windows × n
    mu = xw.mean(-1)
    nx2 = ((xw - mu[..., None]) ** 2).sum(-1)
    a = e / (1 - e) * nx2.sqrt()  # ‖a_w‖
    r = torch.sqrt(nx2 * (2 * e - e * e) / (1 - e) ** 2 + e * (n - 1) * k2**2 / (1 - e))
    cap = (a + r) ** 2
    if luminance:
        b = e / (1 - e) * mu.abs()
        s = torch.sqrt(mu * mu * (2 * e - e * e) / (1 - e) ** 2 + e * k1**2 / (1 - e))
        cap = cap + n * (b + s) ** 2
    per_pixel = (cap.sum(0) / n).repeat_interleave(
        n
    )  # channels summed, spread evenly over the window
    acc = torch.zeros(H * W, dtype=torch.float64).index_add_(0, idx.flatten(), per_pixel)
    count = torch.bincount(idx.flatten(), minlength=H * W).double()
    return (acc / count).view(H, W).numpy()


def local_texture(x: torch.Tensor, size: int = TEXTURE_WINDOW) -> np.ndarray:
    """Standard deviation of the clean image over the ``size``×``size`` window centred on each pixel
    (reflected borders), channels averaged: H×W."""
    a = x.detach().cpu().double()[None]
    pad = size // 2
    a = F.pad(a, (pad, size - 1 - pad, pad, size - 1 - pad), mode="reflect")
    m = F.avg_pool2d(a, size, stride=1)
    v = (F.avg_pool2d(a * a, size, stride=1) - m * m).clamp_min(0)
    return v.sqrt().mean(1)[0].numpy()


def change_maps(
    x: torch.Tensor,
    adv: torch.Tensor,
    *,
    size: int,
    stride: int,
    k1: float = 0.01,
    k2: float = 0.03,
) -> tuple[dict[str, np.ndarray], float]:
    """The three maps of :data:`MAPS` (H×W each) of the perturbation ``adv − x`` and its grid ratio."""
    delta = adv.detach().cpu().double() - x.detach().cpu().double()
    maps = {
        "energy": (delta**2).sum(0).numpy(),
        "window_ssim": constraint_window_map(x, adv, size, stride, k1, k2),
        "sliding_ssim": 1 - mean_ssim(x, adv, full=True)[1],
    }
    return maps, grid_ratio(window_dissimilarity(x, adv, size, k1, k2), stride)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return np.nan if np.ptp(a) == 0 or np.ptp(b) == 0 else float(stats.spearmanr(a, b)[0])


def compare_one(
    change: np.ndarray, cam: np.ndarray, k_percent: float, texture: np.ndarray | None = None
) -> dict:
    """Metrics between one change map (H×W, ≥ 0) and one CAM; with ``texture`` also the change map's
    Spearman with the local texture."""
    a, b = change.ravel().astype(np.float64), cam.ravel().astype(np.float64)
    flat = np.ptp(a) == 0 or np.ptp(b) == 0
    pearson = np.nan if flat else float(stats.pearsonr(a, b)[0])
    # top-k sets: at least one pixel, ties shuffled (‖δ‖² of L∞ PGD is nearly constant; maps.top_k_mask)
    ma = top_k_mask(change, k_percent, ties="shuffled", at_least_one=True)
    mb = top_k_mask(cam, k_percent, ties="shuffled", at_least_one=True)
    mass = np.clip(change, 0, None)
    total = float(mass.sum())
    out = {
        "pearson": pearson,
        "spearman": _spearman(a, b),
        "iou_topk": iou(ma, mb),
        "pointing_hit": bool(mb.ravel()[int(np.argmax(a))]),
        "mass_in_topk": float(mass[mb].sum() / total) if total > 0 else np.nan,
    }
    if texture is not None:
        out["texture_spearman"] = _spearman(a, texture.ravel().astype(np.float64))
    return out


def images_by_id(data_dir, start: int, stop: int, ids, what: str) -> torch.Tensor:
    """The test images ``start..stop`` named by ``ids``, in that order (``what`` names the file that
    listed them, for the error)."""
    split = load_split(data_dir, "test", start, stop)
    pos = {str(i): n for n, i in enumerate(split.ids)}
    ids = [str(i) for i in ids]
    missing = [i for i in ids if i not in pos]
    if missing:
        raise ValueError(
            f"{what} names images {missing[:3]} that are not in test images {start}..{stop}; rerun the rule "
            "that wrote it"
        )
    return split.images[[pos[i] for i in ids]] if ids else split.images[:0]


def cam(
    *,
    data,
    weights,
    attack_csv,
    attack_npz,
    matched,
    out: dict,
    spec: dict,
    bounds: tuple[int, int],
    pgd: dict,
    batch_size: int,
    seed: int,
    device,
) -> None:
    """Rule ``cam``: CAMs of the clean and adversarial images of test images ``bounds`` (start, stop),
    to ``out["npz"]``."""
    kept = load_npz(attack_npz)
    ids = [str(i) for i in kept["image_id"]]
    x = images_by_id(data, *bounds, ids, attack_npz)
    y = torch.as_tensor(kept["label"]).long()
    model = freeze(build_model(spec, weights, device))
    dev = model_device(model)
    table = pd.read_csv(attack_csv, dtype={"image_id": str})
    matched = pd.read_csv(matched)
    advs = {"ssim_ball": torch.from_numpy(kept["ssim_ball"])}
    if len(advs["ssim_ball"]) != len(ids):
        raise ValueError(
            f"{attack_npz}: {len(advs['ssim_ball'])} adversarial images for {len(ids)} ids; rerun attack_ssim"
        )
    budgets = {"ssim_ball": float(matched.ssim_epsilon.iloc[0])}
    for row in matched.itertuples():
        budgets[row.attack] = float(row.epsilon)
        norm = row.attack.removeprefix("pgd_")
        advs[row.attack] = run_pgd(
            model, x.to(dev), y.to(dev), pgd, norm, budgets[row.attack], seed, batch_size, ids
        ).cpu()
    saved = {
        "image_id": np.asarray(ids, dtype=str),
        "label": y.numpy(),
        "cam_clean": gradcam_pp(model, x, y, batch_size),
    }
    for attack, adv in advs.items():
        pred = (
            predict(model, adv, batch_size, dev).argmax(1)
            if len(adv)
            else torch.zeros(0, dtype=torch.long)
        )
        rec = table[
            (table.attack == attack) & np.isclose(table.epsilon, budgets[attack])
        ].set_index("image_id")
        if len(rec) and len(ids):
            differ = int((rec.loc[ids, "pred"].to_numpy() != pred.numpy()).sum())
            if differ:
                log.warning(
                    "%s: %d of %d predictions differ from attack_ssim's (nondeterministic kernels?)",
                    attack,
                    differ,
                    len(ids),
                )
        saved[f"adv_{attack}"] = adv.numpy().astype(np.float32)
        saved[f"pred_{attack}"] = pred.numpy()
        saved[f"cam_{attack}"] = gradcam_pp(model, adv, pred, batch_size)
    save_npz(out["npz"], **saved)


def compare_chunk(
    npz: dict,
    images: torch.Tensor,
    k_percent: float,
    *,
    size: int,
    stride: int,
    epsilon: float,
    luminance: bool = True,
    k1: float = 0.01,
    k2: float = 0.03,
) -> list[dict]:
    """Per image, attack and map of one ``cam`` file: the metrics of :func:`compare_one` against the
    **clean** image's CAM, the grid ratio and whether the attack fooled the model (prediction ≠ label);
    per image also the budget map (:func:`budget_map` at the comparison ``epsilon``) as attack :data:`BUDGET`."""
    rows = []
    attacks = [k.removeprefix("adv_") for k in npz if k.startswith("adv_")]
    for n, image_id in enumerate(npz["image_id"]):
        x = images[n]
        texture = local_texture(x)
        cam = npz["cam_clean"][n]
        for attack in attacks:
            adv = torch.from_numpy(npz[f"adv_{attack}"][n])
            maps, ratio = change_maps(x, adv, size=size, stride=stride, k1=k1, k2=k2)
            fooled = (
                bool(npz[f"pred_{attack}"][n] != npz["label"][n])
                if f"pred_{attack}" in npz
                else np.nan
            )
            for name in MAPS:
                rows.append(
                    {
                        "image_id": str(image_id),
                        "attack": attack,
                        "map": name,
                        **compare_one(maps[name], cam, k_percent, texture),
                        "grid_ratio": ratio,
                        "success": fooled,
                    }
                )
        for name in BUDGET_MAPS:
            m = budget_map(x, epsilon, size, stride, luminance, k1, k2, name)
            rows.append(
                {
                    "image_id": str(image_id),
                    "attack": BUDGET,
                    "map": name,
                    **compare_one(m, cam, k_percent, texture),
                    "grid_ratio": np.nan,
                    "success": np.nan,
                }
            )
    return rows


def check_primary(primary: dict) -> dict:
    """``ssim.compare.primary``: the map and metric P2's verdict uses, and the PGD baselines it must beat."""
    if primary.get("map") not in MAPS:
        raise ConfigError(
            f"ssim.compare.primary.map is {primary.get('map')!r}; use one of {', '.join(MAPS)}"
        )
    if primary.get("metric") not in METRICS:
        raise ConfigError(
            f"ssim.compare.primary.metric is {primary.get('metric')!r}; use one of {', '.join(METRICS)}"
        )
    if not primary.get("baselines"):
        raise ConfigError(
            "ssim.compare.primary.baselines is empty; name the PGD baselines (pgd_linf, pgd_l2) the SSIM ball is "
            "compared with"
        )
    return primary


def grid_verdict(mean: float, min_ratio: float) -> str:
    """The grid diagnostic's reading of a (geometric-mean) aligned / straddling ratio."""
    if np.isnan(mean):
        return GRID_NONE
    return GRID_ARTEFACT if mean < min_ratio else GRID_OK


def summarise(
    comparison: pd.DataFrame,
    n_boot: int,
    seed: int,
    *,
    primary: dict,
    grid_min_ratio: float,
    success_tolerance: float,
) -> pd.DataFrame:
    """The summary table: per map, metric and attack the mean with a bootstrap 95 % CI; per map and
    metric the paired difference SSIM ball − each PGD baseline with its CI and verdict (:func:`stats.decide`);
    per attack the grid diagnostic (geometric mean of the per-image ratio, ``grid artefact`` below
    ``grid_min_ratio``); per map and attack the Spearman with local texture; per attack the success rate
    (Wilson interval; a PGD baseline's verdict ``success differs`` when its rate is more than
    ``success_tolerance`` from the SSIM ball's). The budget map (:data:`BUDGET`) is a paired baseline like
    PGD. ``primary`` marks the rows P2's verdict reads (the listed baselines and the budget map)."""
    check_primary(primary)
    rng = np.random.default_rng(seed)
    rows = []
    data = comparison.astype({"pointing_hit": float})
    attacks = list(dict.fromkeys(data.attack))
    missing = [b for b in primary["baselines"] if b not in attacks]
    if missing or "ssim_ball" not in attacks:
        raise ValueError(
            f"ssim.compare.primary.baselines lists {missing or ['ssim_ball']} but the comparison has no rows for "
            f"them (attacks: {', '.join(attacks)}); add them to ssim.pgd or remove them from "
            "ssim.compare.primary.baselines, then rerun ssim_tables, cam and compare_maps"
        )
    if (
        primary["map"] in BUDGET_MAPS
        and not ((data.attack == BUDGET) & (data["map"] == primary["map"])).any()
    ):
        raise ValueError(
            f"the comparison has no budget-map rows ({BUDGET}) for the primary map {primary['map']}; rerun "
            "compare_maps"
        )
    maps = [m for m in MAPS if m in set(data["map"])]
    attacked = [a for a in attacks if a != BUDGET]

    def row(metric, name, attack, baseline, n, mean, lo, hi, verdict=""):
        is_primary = (
            name == primary["map"]
            and metric == primary["metric"]
            and (not baseline or baseline in primary["baselines"] or baseline == BUDGET)
        )
        return {
            "metric": metric,
            "map": name,
            "attack": attack,
            "baseline": baseline,
            "n_images": int(n),
            "mean": mean,
            "ci_low": lo,
            "ci_high": hi,
            "verdict": verdict,
            "primary": bool(is_primary),
        }

    one = data[data["map"] == maps[0]]
    for (
        attack
    ) in attacked:  # the grid diagnostic: a property of the perturbation, the same for every map
        r = one[one.attack == attack].grid_ratio.to_numpy(float)
        r = np.where(
            np.isfinite(r), np.clip(r, GRID_FLOOR, None), r
        )  # a ratio of 0 (no change on the grid) stays in
        m, lo, hi = (
            boot_mean(np.log(r), n_boot, rng) if np.isfinite(r).any() else (np.nan, np.nan, np.nan)
        )
        rows.append(
            row(
                "grid_ratio",
                "",
                attack,
                "",
                np.isfinite(r).sum(),
                math.exp(m) if np.isfinite(m) else np.nan,
                math.exp(lo) if np.isfinite(lo) else np.nan,
                math.exp(hi) if np.isfinite(hi) else np.nan,
                grid_verdict(math.exp(m) if np.isfinite(m) else np.nan, grid_min_ratio),
            )
        )
    rates = {}
    for (
        attack
    ) in attacked:  # success rates on the compared images: the comparison assumes matched success
        v = one[one.attack == attack].success.to_numpy(float) if "success" in one else np.array([])
        v = v[np.isfinite(v)]
        rates[attack] = float(v.mean()) if len(v) else np.nan
        lo, hi = wilson_ci(int(v.sum()), len(v))
        gap = abs(rates[attack] - rates.get("ssim_ball", np.nan))
        verdict = (
            ""
            if attack == "ssim_ball"
            else (SUCCESS_DIFFERS if not gap <= success_tolerance else SUCCESS_OK)
        )
        rows.append(row("success_rate", "", attack, "", len(v), rates[attack], lo, hi, verdict))
    for name in maps:
        d = data[data["map"] == name]
        for metric in [*METRICS, "texture_spearman"]:
            wide = d.pivot_table(
                index="image_id", columns="attack", values=metric, aggfunc="first", dropna=False
            )
            for attack in [a for a in attacks if a in wide or a != BUDGET]:
                v = wide[attack].to_numpy(float) if attack in wide else np.array([])
                m, lo, hi = boot_mean(v, n_boot, rng)
                rows.append(row(metric, name, attack, "", np.isfinite(v).sum(), m, lo, hi))
            if metric == "texture_spearman" or "ssim_ball" not in wide:
                continue
            for base in [a for a in attacks if a != "ssim_ball" and a in wide]:
                diff = (wide["ssim_ball"] - wide[base]).to_numpy(float)
                m, lo, hi = paired_diff_ci(
                    wide["ssim_ball"].to_numpy(float), wide[base].to_numpy(float), n_boot, rng
                )
                n = int(np.isfinite(diff).sum())
                rows.append(
                    row(metric, name, "ssim_ball", base, n, m, lo, hi, PAIRED[decide(lo, hi, n)])
                )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def compare_maps(
    *,
    data,
    cams: list[str],
    out: dict,
    bounds: list[tuple[int, int]],
    topk_percent: float,
    bootstrap: int,
    ball: dict,
    primary: dict,
    grid_min_ratio: float,
    success_tolerance: float,
    epsilon: float,
    seed: int,
) -> pd.DataFrame:
    """Rule ``compare_maps``: the ``cam`` chunk files ``cams`` (of the chunks ``bounds``) into
    ``ssim_cam_comparison.csv`` (``out["csv"]``) and ``ssim_cam_summary.csv``/``.md``. ``ball``
    holds the SSIM ball's window geometry (``size``, ``stride``, ``luminance``, ``k1``, ``k2``); ``epsilon``
    is the comparison ε the ``cam`` files' SSIM-ball adversarials were made at (for the budget map)."""
    check_primary(primary)
    if not 0 <= float(success_tolerance) <= 1:
        raise ConfigError(
            f"ssim.compare.success_tolerance is {success_tolerance!r}; use a rate difference in [0, 1] (e.g. 0.15)"
        )
    geom = {k: ball[k] for k in ("size", "stride", "luminance", "k1", "k2") if k in ball}
    rows = []
    for path, (start, stop) in zip(cams, bounds):
        npz = load_npz(path)
        rows += compare_chunk(
            npz,
            images_by_id(data, start, stop, npz["image_id"], path),
            topk_percent,
            epsilon=epsilon,
            **geom,
        )
    comparison = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if comparison.empty:
        raise ValueError("no attacked image to compare; raise ssim.n_images")
    write_table(comparison, out["csv"], float_format="%.6g")
    summary = summarise(
        comparison,
        bootstrap,
        seed,
        primary=primary,
        grid_min_ratio=grid_min_ratio,
        success_tolerance=success_tolerance,
    )
    write_table(summary, out["summary"], out["summary_md"], float_format="%.4g")
    return summary


__all__ = [
    "BUDGET",
    "BUDGET_MAPS",
    "COMPARISON_COLUMNS",
    "GRID_ARTEFACT",
    "GRID_FLOOR",
    "GRID_NONE",
    "GRID_OK",
    "MAPS",
    "MAP_LABELS",
    "METRICS",
    "SUCCESS_DIFFERS",
    "SUCCESS_OK",
    "SUMMARY_COLUMNS",
    "budget_map",
    "cam",
    "change_maps",
    "check_primary",
    "compare_chunk",
    "compare_maps",
    "compare_one",
    "constraint_window_map",
    "grid_ratio",
    "grid_verdict",
    "images_by_id",
    "local_texture",
    "summarise",
    "window_dissimilarity",
]
