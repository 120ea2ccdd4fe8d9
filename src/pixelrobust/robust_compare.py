"""Ours, beyond the papers: is an adversarially trained model vulnerable in the same places as a standard one?

For each configured pair (``robust_compare.pairs``: a standard and a robust model of the same dataset) this
module compares what the stages already saved, on the **same test images**, and runs no new attack:

* **P1** (``results/p1/onepixel/<model>/chunk-*.npz``): on the images both models classify correctly, the
  share each can be broken by one pixel (paired 0/1, exact interval) and the share of searched pixels that are
  vulnerable (paired bootstrap); the agreement of the two models' one-pixel drop maps and of their
  vulnerable-pixel sets, as excesses over the permutation null (descriptive: no untrained model's one-pixel maps);
  where the vulnerable pixels lie (share in the image centre against the centre's share of the searched pixels).
* **masked PGD** (``results/tables/masked_pgd_images.csv``): each model's ordering effect at each mask size
  (bottom-mask minus top-mask top-1 under PGD, descriptive) and the difference of the two orderings in units of
  each model's own attack strength (:func:`normalised_ordering`, bootstrap over images, descriptive).
* **gradient maps**: the two models' per-image input-gradient maps (``results/synthesis/<model>.npz``), decided
  against the **same-run reference**, the standard model against K untrained copies of its architecture
  (``robust_compare.untrained_copies`` seeded inits, :func:`untrained_copy`, :func:`reference_maps`: one backward
  pass per image and copy, computed here; per image the mean of the copies' agreements, :func:`mean_reference`);
  their mean maps (descriptive, with the untrained copies' as reference). The interval of the decided rows resamples
  the images and the copies (:func:`pixelrobust.stats.two_level_boot`).
* **synthesis**: Grad-CAM++ maps, decided as the input gradient; SSIM-ball δ maps, descriptive (an untrained
  model's would need an attack per image). The one-pixel drop map is P1's (the synthesis stores the same map).

Rows framed as a hypothesis (oriented so that positive is what it says) get a verdict by the one rule of
:mod:`pixelrobust.stats` (:func:`~pixelrobust.stats.decide`, :func:`~pixelrobust.stats.decide_all` for the two
agreement measures); the others are ``descriptive`` (numbers and a 95 % interval, no verdict).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as _st

from .cam import gradcam_pp
from .gradients import input_gradients
from .io import load_npz, save_npz, write_table
from .maps import iou, iou_matrix, top_k_mask
from .models import build_model
from .runtime import derive_seed, model_device
from .stats import (
    binding,
    boot_mean,
    boot_stat,
    decide,
    decide_all,
    paired_diff_ci,
    two_level_boot,
)
from .synthesis import LABELS as MAP_LABELS
from .synthesis import agreement_matrices

log = logging.getLogger("pixelrobust")

STAGES = ("onepixel", "masked_pgd", "gradients", "synthesis")
SECTIONS = {
    "onepixel": "P1 one-pixel",
    "masked_pgd": "masked PGD",
    "gradients": "gradient maps",
    "synthesis": "synthesis",
}
DESCRIPTIVE = "descriptive"
SYNTHESIS_MAPS = (
    "ssim_ball",
    "gradcam_pp",
)  # the input gradient is the gradient section's row; the one-pixel drop map is P1's (same map, compared there)
NULL = "the standard model's map of each image against the robust model's maps of the other images (permutation null)"
REFERENCE = (
    "the standard model against untrained copies of its architecture (seeded random inits, "
    "robust_compare.untrained_copies; per image the mean of the copies' agreements), same images: its excess over "
    "the permutation null"
)
MEAN_MAP_BIAS = (
    "a percentile interval that may sit below the estimate: a resample repeats some images and leaves others "
    "out, so its mean maps are noisier and agree less than the full sample's; read it as the spread, not as "
    "centred on the estimate"
)
TRAINED_BAR = (
    "what held means: the two models agree beyond an untrained network of the architecture, a bar any two "
    "trained classifiers of these images may pass (on the EhanW pair's Grad-CAM++ an independently trained "
    "standard ResNet-20 agreed with the standard model more than the robust one did, docs/robust.md); no trained "
    "reference is in the run, so the row cannot say the robust model agrees as much as another standard one"
)
CAVEAT = (
    "descriptive: no untrained model's maps of this kind in the run, and maps sharing only image content pass the "
    "permutation null, so no verdict"
)
TABLE_COLUMNS = [
    "dataset",
    "standard",
    "robust",
    "section",
    "comparison",
    "hypothesis",
    "statistic",
    "n_images",
    "standard_value",
    "robust_value",
    "observed",
    "control",
    "control_value",
    "effect",
    "ci_low",
    "ci_high",
    "verdict",
    "evidence",
]


def _row(
    section,
    comparison,
    statistic,
    n,
    *,
    hypothesis="",
    standard_value=np.nan,
    robust_value=np.nan,
    observed=np.nan,
    control="",
    control_value=np.nan,
    effect=np.nan,
    ci_low=np.nan,
    ci_high=np.nan,
    verdict=DESCRIPTIVE,
    evidence="",
) -> dict:
    return {
        "section": section,
        "comparison": comparison,
        "hypothesis": hypothesis,
        "statistic": statistic,
        "n_images": int(n),
        "standard_value": standard_value,
        "robust_value": robust_value,
        "observed": observed,
        "control": control,
        "control_value": control_value,
        "effect": effect,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "verdict": verdict,
        "evidence": evidence,
    }


def _f(v, spec=".3f") -> str:
    return "nan" if v is None or not np.isfinite(v) else format(float(v), spec)


# ---- agreement against the permutation null ----------------------------------------------------


def per_image_agreement(a: np.ndarray, b: np.ndarray, k_percent: float) -> pd.DataFrame:
    """Per image of two N×P arrays (row i: the standard model's and the robust model's map of image i on the
    same pixels): Spearman and top-k IoU of the image's own two maps and their means over ``a[i]`` against
    ``b[j]``, j ≠ i (the permutation null; NaN with one image). A flat map (every pixel equal) has no rank order
    and its top-k set is a fixed tie order, so an image where either map is flat gets NaN for **both** measures
    (both then drop the same images), and a flat ``b[j]`` is left out of the other images' null."""
    rho, ov = agreement_matrices(a, b, k_percent)
    n = len(a)
    flat_a = np.ptp(np.asarray(a, float), axis=1) == 0 if a.size else np.zeros(n, bool)
    flat_b = np.ptp(np.asarray(b, float), axis=1) == 0 if b.size else np.zeros(n, bool)
    bad = flat_a[:, None] | flat_b[None, :]
    rho, ov = np.where(bad, np.nan, rho), np.where(bad, np.nan, ov)
    off = ~np.eye(n, dtype=bool)
    rows = []
    for i in range(n):
        nr, no = rho[i][off[i]], ov[i][off[i]]
        rows.append(
            {
                "spearman": rho[i, i],
                "iou_topk": ov[i, i],
                "spearman_null": float(np.nanmean(nr)) if np.isfinite(nr).any() else np.nan,
                "iou_null": float(np.nanmean(no)) if np.isfinite(no).any() else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["spearman", "iou_topk", "spearman_null", "iou_null"])


def _excess(per_image: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per image: Spearman and top-k IoU of the image's own two maps minus their permutation null."""
    return (
        per_image.spearman.to_numpy(float) - per_image.spearman_null.to_numpy(float),
        per_image.iou_topk.to_numpy(float) - per_image.iou_null.to_numpy(float),
    )


def _mean(v) -> float:
    v = np.asarray(v, float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else np.nan


def _as_copies(reference, what: str = "reference") -> list | None:
    """``reference`` as the list of the untrained copies' entries (one per copy), refusing a single entry: since
    the reference is several untrained copies (``robust_compare.untrained_copies``), one copy's maps or table
    passed alone is an old single-seed input."""
    if reference is None:
        return None
    if isinstance(reference, (dict, pd.DataFrame, np.ndarray)) or not len(reference):
        raise TypeError(
            f"the untrained {what} must be a non-empty list with one entry per untrained copy "
            f"(robust_compare.untrained_copies), not {type(reference).__name__}{'' if len(reference) else ' (empty)'}; "
            "a single-seed reference of an older run: wrap it as [entry] or rerun robust_compare"
        )
    return list(reference)


def mean_reference(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The same-run reference per image over K untrained copies: for each image and measure, the mean over the
    copies of each copy's agreement with the standard model (its :func:`per_image_agreement` table) and of its
    permutation null. The null of an untrained network is the expected agreement over random inits, so the
    copies' **agreements** are averaged, not their maps (a mean of K maps is smoother than any network's map and
    would agree more with anything). A copy counts for an image and measure only where both its own agreement
    and its null are defined (a copy whose map of the image is flat drops out of that image's mean), so the mean
    excess over the null is the mean of the copies' excesses; an image no copy defines stays NaN (left out)."""
    tables = _as_copies(tables, "reference tables")
    sizes = {len(t) for t in tables}
    if len(sizes) != 1:
        raise ValueError(
            f"the untrained copies' reference tables cover {sorted(sizes)} images; every copy must be computed on "
            "the same images in the same order"
        )
    out = {}
    for own, null in (("spearman", "spearman_null"), ("iou_topk", "iou_null")):
        o = np.stack([t[own].to_numpy(float) for t in tables])  # K × N
        z = np.stack([t[null].to_numpy(float) for t in tables])
        ok = np.isfinite(o) & np.isfinite(z)
        count = ok.sum(0)
        for col, v in ((own, o), (null, z)):
            out[col] = np.where(
                count > 0, np.where(ok, v, 0.0).sum(0) / np.maximum(count, 1), np.nan
            )
    return pd.DataFrame(out, columns=["spearman", "iou_topk", "spearman_null", "iou_null"])


def _copy_excesses(tables: Sequence[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """Each untrained copy's per-image excess over its null, K × N (Spearman, top-k IoU; NaN where the copy's
    agreement or null is undefined)."""
    ex = [_excess(t) for t in tables]
    return np.stack([e[0] for e in ex]), np.stack([e[1] for e in ex])


def _versus(
    rex_i, iex_i, tables: Sequence[pd.DataFrame], n_boot: int, rng: np.random.Generator
) -> dict:
    """Per image the standard-robust excess minus the reference's (Spearman, top-k IoU; the reference is the mean
    over the untrained copies' ``tables``, :func:`mean_reference`), their means and two-level bootstrap intervals
    (images and copies resampled, :func:`two_level_boot`) over the images both measures define, and each
    measure's verdict."""
    reference = mean_reference(tables)
    ref_rex, ref_iex = _excess(reference)
    ok = np.isfinite(rex_i - ref_rex) & np.isfinite(
        iex_i - ref_iex
    )  # both measures on the same images
    n = int(ok.sum())
    c_r, c_i = _copy_excesses(tables)
    rd = two_level_boot(np.where(ok, rex_i, np.nan), c_r, n_boot, rng)
    idf = two_level_boot(np.where(ok, iex_i, np.nan), c_i, n_boot, rng)
    iv, rv = decide(idf[1], idf[2], n), decide(rd[1], rd[2], n)
    return {
        "ok": ok,
        "n": n,
        "rd": rd,
        "idf": idf,
        "iv": iv,
        "rv": rv,
        "verdict": decide_all([iv, rv]),
        "reference": reference,
        "ref_rex": ref_rex,
        "ref_iex": ref_iex,
    }


def _copies_evidence(rex_i, iex_i, tables, verdict: str, n_boot: int, seed: int) -> str:
    """The spread of the reference over its untrained copies: each copy's standard-untrained excess, the row's
    effects with one copy at a time (every copy on the same bootstrap resamples) and how many of those single-copy
    verdicts equal the averaged one."""
    if len(tables) == 1:
        return "reference: one untrained copy (robust_compare.untrained_copies 1)"
    one = [_versus(rex_i, iex_i, [t], n_boot, np.random.default_rng(seed)) for t in tables]
    ex_i = "/".join(_f(_mean(v["ref_iex"][v["ok"]]), "+.3f") for v in one)
    ex_r = "/".join(_f(_mean(v["ref_rex"][v["ok"]]), "+.3f") for v in one)

    def span(effects) -> str:
        e = np.asarray(effects, float)
        e = e[np.isfinite(e)]
        return f"{_f(e.min(), '+.3f')} to {_f(e.max(), '+.3f')}" if len(e) else "nan"

    def copy_se(effects) -> str:  # the averaged effect's standard error from the choice of copies
        e = np.asarray(effects, float)
        e = e[np.isfinite(e)]
        return _f(e.std(ddof=1) / np.sqrt(len(e)), ".3f") if len(e) > 1 else "nan"

    counts = pd.Series([v["verdict"] for v in one]).value_counts()
    same = int(counts.get(verdict, 0))
    return (
        f"reference: per image the mean over {len(tables)} untrained copies; each copy's standard-untrained excess "
        f"top-k IoU {ex_i}, Spearman {ex_r}; with one copy at a time the differences of excesses run "
        f"{span([v['idf'][0] for v in one])} (IoU) and {span([v['rd'][0] for v in one])} (Spearman), verdicts "
        + ", ".join(f"{k} {c}" for k, c in counts.items())
        + f": {same} of {len(tables)} single copies give the averaged verdict; the averaged effects' standard "
        f"error from the choice of copies (in the interval, which resamples images and copies): "
        f"{copy_se([v['idf'][0] for v in one])} (IoU), {copy_se([v['rd'][0] for v in one])} (Spearman)"
    )


def agreement_row(
    section: str,
    what: str,
    per_image: pd.DataFrame,
    k_percent: float,
    n_boot: int,
    rng: np.random.Generator,
    images: str,
    reference: Sequence[pd.DataFrame] | None = None,
) -> dict:
    """ "The two models' ``what`` agree beyond what the standard model shares with an untrained copy of its
    architecture".

    The permutation null alone (own image against other images' maps) is passed by any two maps that share only
    image content (an untrained network's gradient map, an edge map; R4's probes), so it is no control for
    "the two models agree". ``reference`` is the list, one per **untrained copy of the same architecture**
    (K seeded random inits), of the same per-image table for the standard model against that copy on the same
    images (row i = image i), computed in the same run; per image the copies' agreements are averaged
    (:func:`mean_reference`); images are the unit of the claim. Per measure (top-k
    IoU, Spearman) and image, the effect is the paired difference of excesses over the null,
    (own − null)[standard, robust] − mean over copies of (own − null)[standard, untrained], with a two-level
    bootstrap over images and copies (:func:`two_level_boot`: the choice of copies is in the interval); held
    means agreement beyond an untrained network, a bar any two trained classifiers may pass, and only if both
    measures are (intersection-union, :func:`~pixelrobust.stats.decide_all`). The
    evidence gives K and the spread over the copies (each copy's excess, the effects and verdicts with one copy at
    a time). Without a reference the row is descriptive (numbers and intervals of the excess over the null, no
    verdict)."""
    rex_i, iex_i = _excess(per_image)
    rho, ov = per_image.spearman.to_numpy(float), per_image.iou_topk.to_numpy(float)
    rn, on = per_image.spearman_null.to_numpy(float), per_image.iou_null.to_numpy(float)
    hyp = (
        f"the two models' {what} agree beyond the standard model's agreement with an untrained copy (a bar any "
        "two trained classifiers may pass: held does not say the robust model agrees as much as another "
        "standard one would)"
    )
    if reference is None:
        rex, iex = boot_mean(rex_i, n_boot, rng), boot_mean(iex_i, n_boot, rng)
        n = int((np.isfinite(rex_i) & np.isfinite(iex_i)).sum())
        return _row(
            section,
            f"{what}: agreement between the models",
            f"top-{k_percent:g} % IoU, same image minus other images' maps, bootstrap over images (Spearman in "
            "the evidence)",
            n,
            observed=_mean(ov),
            control=NULL,
            control_value=_mean(on),
            effect=iex[0],
            ci_low=iex[1],
            ci_high=iex[2],
            evidence=(
                f"{images}; top-{k_percent:g} % IoU {_f(_mean(ov))} vs {_f(_mean(on))} for other images' maps: "
                f"excess {_f(iex[0], '+.3f')} ({_f(iex[1], '+.3f')} to {_f(iex[2], '+.3f')}); Spearman "
                f"{_f(_mean(rho))} vs {_f(_mean(rn))}: excess {_f(rex[0], '+.3f')} ({_f(rex[1], '+.3f')} to "
                f"{_f(rex[2], '+.3f')}); {CAVEAT}"
            ),
        )
    tables = _as_copies(reference, "reference tables")
    for t in tables:
        if len(t) != len(per_image):
            raise ValueError(
                f"the untrained reference has {len(t)} images, the pair {len(per_image)}; both must be "
                "the same images in the same order"
            )
    v = _versus(rex_i, iex_i, tables, n_boot, rng)
    reference = v["reference"]
    ok, n, rd, idf, iv, rv = (v[k] for k in ("ok", "n", "rd", "idf", "iv", "rv"))
    ref_rex, ref_iex = v["ref_rex"], v["ref_iex"]
    spread = _copies_evidence(rex_i, iex_i, tables, v["verdict"], n_boot, int(rng.integers(2**32)))
    ref_ov, ref_on = reference.iou_topk.to_numpy(float), reference.iou_null.to_numpy(float)
    ref_rho, ref_rn = reference.spearman.to_numpy(float), reference.spearman_null.to_numpy(float)
    tests = [
        (
            iv,
            idf[1],
            idf[2],
            idf[0],
            f"top-{k_percent:g} % IoU",
            _mean(iex_i[ok]),
            _mean(ref_iex[ok]),
        ),
        (rv, rd[1], rd[2], rd[0], "Spearman's rho", _mean(rex_i[ok]), _mean(ref_rex[ok])),
    ]
    t = tests[binding([x[:3] for x in tests])]
    return _row(
        section,
        f"{what}: agreement between the models",
        f"{t[4]}: excess over other images' maps of the standard-robust pair minus that of the standard-untrained "
        "pair, paired bootstrap over images (the verdict also needs the other measure, in the evidence)",
        n,
        hypothesis=hyp,
        observed=float(t[5]),
        control=REFERENCE,
        control_value=float(t[6]),
        effect=float(t[3]),
        ci_low=float(t[1]),
        ci_high=float(t[2]),
        verdict=v["verdict"],
        evidence=(
            f"{images} ({n} with neither map flat); top-{k_percent:g} % IoU standard-robust {_f(_mean(ov[ok]))} vs "
            f"{_f(_mean(on[ok]))} for other images' maps, standard-untrained {_f(_mean(ref_ov[ok]))} vs "
            f"{_f(_mean(ref_on[ok]))}: difference of excesses {_f(idf[0], '+.3f')} ({_f(idf[1], '+.3f')} to "
            f"{_f(idf[2], '+.3f')}), {iv}; Spearman standard-robust {_f(_mean(rho[ok]))} vs {_f(_mean(rn[ok]))}, "
            f"standard-untrained {_f(_mean(ref_rho[ok]))} vs {_f(_mean(ref_rn[ok]))}: difference of excesses "
            f"{_f(rd[0], '+.3f')} ({_f(rd[1], '+.3f')} to {_f(rd[2], '+.3f')}), {rv}; {spread}; {TRAINED_BAR}"
        ),
    )


# ---- P1 ----------------------------------------------------------------------------------------


def load_p1(npzs: list[str]) -> dict[str, np.ndarray]:
    """One model's P1 chunk maps concatenated: ids, vulnerable, drop, searched (every image of the chunks)."""
    zs = [load_npz(p) for p in npzs]
    if not zs:
        raise ValueError("no P1 map files (results/p1/onepixel/<model>/chunk-*.npz) to compare")
    return {
        k: np.concatenate([np.asarray(z[k]) for z in zs])
        for k in ("ids", "vulnerable", "drop", "searched")
    }


def _common(ids_a, ids_b) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``ids_a`` and ``ids_b`` of the ids both hold, in ``ids_a``'s order."""
    where = {str(i): k for k, i in enumerate(ids_b)}
    ia = [k for k, i in enumerate(ids_a) if str(i) in where]
    return np.asarray(ia, int), np.asarray([where[str(ids_a[k])] for k in ia], int)


def centre_mask(h: int, w: int, border: float) -> np.ndarray:
    """The image centre: pixels at least ``round(border · side)`` pixels from every edge (ours)."""
    bh, bw = int(round(border * h)), int(round(border * w))
    m = np.zeros((h, w), bool)
    m[bh : h - bh, bw : w - bw] = True
    return m


def p1_rows(
    std: dict, rob: dict, *, k_percent: float, border: float, n_boot: int, rng: np.random.Generator
) -> tuple[list[dict], dict]:
    """P1's comparison rows and the two mean vulnerable-pixel maps (for the figure)."""
    sec = SECTIONS["onepixel"]
    H_W = int(
        np.prod(std["searched"].shape[1:])
    )  # pixels per image (explicit: a reshape of 0 images needs it)
    ia, ib = _common(std["ids"], rob["ids"])
    if len(ia) == 0:
        raise ValueError(
            "the two models' P1 maps share no test image; both must be searched on the same images "
            "(same dataset and onepixel.n_images)"
        )
    n_all = len(ia)
    sa, sb = std["searched"][ia], rob["searched"][ib]
    both = sa.reshape(len(ia), H_W).any(1) & sb.reshape(len(ib), H_W).any(
        1
    )  # searched = correctly classified
    ia, ib = ia[both], ib[both]
    n = len(ia)
    va, vb = std["vulnerable"][ia], rob["vulnerable"][ib]
    pix = std["searched"][ia] & rob["searched"][ib]
    brk_a = (va & pix).reshape(n, H_W).any(1).astype(float)
    brk_b = (vb & pix).reshape(n, H_W).any(1).astype(float)
    n_s = pix.reshape(n, H_W).sum(1).astype(float)
    share_a = np.where(n_s > 0, (va & pix).reshape(n, H_W).sum(1) / np.maximum(n_s, 1), np.nan)
    share_b = np.where(n_s > 0, (vb & pix).reshape(n, H_W).sum(1) / np.maximum(n_s, 1), np.nan)
    images = f"{n} of {n_all} test images both models classify correctly"
    rows = []
    eff, lo, hi = paired_diff_ci(brk_a, brk_b, n_boot, rng)
    rows.append(
        _row(
            sec,
            "breakable by one pixel",
            "share of images broken by one pixel, standard minus robust, paired "
            "over images (exact paired 0/1 interval)",
            n,
            hypothesis="the robust model can be broken by one pixel on fewer images",
            standard_value=float(brk_a.mean()) if n else np.nan,
            robust_value=float(brk_b.mean()) if n else np.nan,
            observed=float(brk_b.mean()) if n else np.nan,
            control="the standard model on the same images",
            control_value=float(brk_a.mean()) if n else np.nan,
            effect=eff,
            ci_low=lo,
            ci_high=hi,
            verdict=decide(lo, hi, n),
            evidence=f"{images}; broken: standard {int(brk_a.sum())}, robust {int(brk_b.sum())}, both "
            f"{int((brk_a * brk_b).sum())}",
        )
    )
    eff, lo, hi = paired_diff_ci(share_a, share_b, n_boot, rng)
    rows.append(
        _row(
            sec,
            "vulnerable pixels per image",
            "share of the searched pixels that are vulnerable, standard minus "
            "robust, paired bootstrap over images",
            n,
            hypothesis="the robust model is vulnerable at fewer pixels",
            standard_value=float(np.nanmean(share_a)) if n else np.nan,
            robust_value=float(np.nanmean(share_b)) if n else np.nan,
            observed=float(np.nanmean(share_b)) if n else np.nan,
            control="the standard model on the same images",
            control_value=float(np.nanmean(share_a)) if n else np.nan,
            effect=eff,
            ci_low=lo,
            ci_high=hi,
            verdict=decide(lo, hi, n),
            evidence=f"{images}; mean vulnerable pixels per image: standard "
            f"{_f(float((va & pix).reshape(n, H_W).sum(1).mean()) if n else np.nan, '.2f')}, robust "
            f"{_f(float((vb & pix).reshape(n, H_W).sum(1).mean()) if n else np.nan, '.2f')} of "
            f"{_f(float(n_s.mean()) if n else np.nan, '.0f')} searched",
        )
    )
    # the one-pixel drop maps on every image both classify correctly, on the pixels both searched (a fixed grid)
    common = pix.all(0) if n else np.zeros(std["searched"].shape[1:], bool)
    if n and common.any():
        da = std["drop"][ia][:, common].astype(np.float64)
        db = rob["drop"][ib][:, common].astype(np.float64)
        agree = per_image_agreement(np.nan_to_num(da), np.nan_to_num(db), k_percent)
        rows.append(
            agreement_row(sec, "one-pixel drop maps", agree, k_percent, n_boot, rng, images)
        )
    # the vulnerable sets on the images both break
    bb = (brk_a > 0) & (brk_b > 0)
    m = int(bb.sum())
    sets_a = (va & pix)[bb].reshape(m, H_W)
    sets_b = (vb & pix)[bb].reshape(m, H_W)
    ov = iou_matrix(sets_a, sets_b) if m else np.zeros((0, 0))
    own = np.diag(ov) if m else np.zeros(0)
    null = (
        np.array([ov[i][np.arange(m) != i].mean() for i in range(m)])
        if m > 1
        else np.full(m, np.nan)
    )
    ex = boot_mean(own - null, n_boot, rng)
    ne = int(np.isfinite(own - null).sum())
    rows.append(
        _row(
            sec,
            "vulnerable pixel sets: overlap between the models",
            "IoU of the two models' vulnerable pixel "
            "sets, same image minus other images' sets, bootstrap over images",
            ne,
            observed=float(own.mean()) if m else np.nan,
            control=NULL,
            control_value=float(np.nanmean(null)) if np.isfinite(null).any() else np.nan,
            effect=ex[0],
            ci_low=ex[1],
            ci_high=ex[2],
            evidence=f"{m} of the {n} images are broken by both models; IoU {_f(own.mean() if m else np.nan)} vs "
            f"{_f(np.nanmean(null) if np.isfinite(null).any() else np.nan)} for other images' sets; {CAVEAT}",
        )
    )
    # where: the share of each model's vulnerable pixels in the image centre, against the centre's share of the
    # searched pixels (what uniformly placed vulnerable pixels would give)
    h, w = std["searched"].shape[1:]
    centre = centre_mask(h, w, border)
    centre_share = {}
    for name, v, brk in (("standard", va, brk_a), ("robust", vb, brk_b)):
        keep = brk > 0
        vv, pp = (v & pix)[keep], pix[keep]
        share = (vv & centre).reshape(len(vv), H_W).sum(1) / np.maximum(
            vv.reshape(len(vv), H_W).sum(1), 1
        )
        base = (pp & centre).reshape(len(pp), H_W).sum(1) / np.maximum(
            pp.reshape(len(pp), H_W).sum(1), 1
        )
        centre_share[name] = pd.Series(share, index=np.flatnonzero(keep))
        ex = boot_mean(share - base, n_boot, rng)
        k = int(keep.sum())
        rows.append(
            _row(
                sec,
                f"centre share of the {name} model's vulnerable pixels",
                "share of the vulnerable pixels "
                f"in the centre (at least {border:g} of the side from every edge) minus the centre's share of the "
                "searched pixels, bootstrap over images",
                k,
                hypothesis=f"the {name} model's vulnerable pixels lie in the image centre beyond its share of the "
                "searched pixels",
                standard_value=float(share.mean()) if name == "standard" and k else np.nan,
                robust_value=float(share.mean()) if name == "robust" and k else np.nan,
                observed=float(share.mean()) if k else np.nan,
                control="the centre's share of the searched pixels (uniformly placed vulnerable pixels)",
                control_value=float(base.mean()) if k else np.nan,
                effect=ex[0],
                ci_low=ex[1],
                ci_high=ex[2],
                verdict=decide(ex[1], ex[2], k),
                evidence=f"the {k} of {n} images the {name} model can be broken on; border share "
                f"{_f(1 - share.mean() if k else np.nan)}",
            )
        )
    both_idx = np.flatnonzero(bb)
    eff, lo, hi = paired_diff_ci(
        centre_share["standard"].reindex(both_idx).to_numpy(float),
        centre_share["robust"].reindex(both_idx).to_numpy(float),
        n_boot,
        rng,
    )
    rows.append(
        _row(
            sec,
            "centre share: standard minus robust",
            "centre share of the vulnerable pixels, standard minus "
            "robust, paired bootstrap over the images both models break",
            m,
            standard_value=float(centre_share["standard"].reindex(both_idx).mean())
            if m
            else np.nan,
            robust_value=float(centre_share["robust"].reindex(both_idx).mean()) if m else np.nan,
            effect=eff,
            ci_low=lo,
            ci_high=hi,
            evidence=f"{m} images broken by both models",
        )
    )
    maps = {
        "p1_standard": va.mean(0).astype(np.float32) if n else np.zeros((h, w), np.float32),
        "p1_robust": vb.mean(0).astype(np.float32) if n else np.zeros((h, w), np.float32),
    }
    return rows, maps


# ---- masked PGD --------------------------------------------------------------------------------


def normalised_ordering(top: np.ndarray, bottom: np.ndarray, full: np.ndarray) -> float:
    """The ordering effect in units of the model's own attack strength: (mean bottom − mean top) / (mean bottom −
    mean full), the share of the gap between the bottom-gradient mask and the full-image attack (k 100 %) that
    the top-gradient mask closes (1: the top mask is as strong as attacking every pixel; 0: no better than the
    bottom mask). NaN when the full attack is no stronger than the bottom mask (nothing to close)."""
    gap = float(np.mean(bottom) - np.mean(full))
    return np.nan if gap <= 0 else float(np.mean(bottom) - np.mean(top)) / gap


def masked_pgd_rows(
    images: pd.DataFrame,
    standard: str,
    robust: str,
    *,
    max_k: float,
    n_boot: int,
    rng: np.random.Generator,
) -> list[dict]:
    """Per norm and mask size k in (0, ``max_k``]: each model's P3 ordering effect (bottom-mask minus top-mask
    top-1 under PGD, paired over the images both were attacked on, exact interval; descriptive: P3's claim is
    decided once, over k, in the claims table) and the difference of the two effects, standard minus robust,
    **normalised by each model's own attack strength** (:func:`normalised_ordering`, with the full-image attack
    k 100 % of the same run; bootstrap over images, descriptive). The raw effects mix location with attack
    strength: PGD at this ε leaves the robust model correct on more images, so its masks have less to separate."""
    sec = SECTIONS["masked_pgd"]
    rows = []
    for norm in ("linf", "l2"):
        d = images[
            (images.norm == norm)
            & images.model.isin([standard, robust])
            & images["mask"].isin(["top", "bottom"])
        ]
        if d.empty:
            continue
        missing = {standard, robust} - set(d.model)
        if missing:
            raise ValueError(
                f"masked_pgd_images.csv has no {norm} rows of {sorted(missing)}; add it to masked_pgd.models"
            )
        wide = d.pivot_table(
            index=["k_percent", "image_id"], columns=["model", "mask"], values="correct"
        )
        full = None
        if 100.0 in {float(x) for x in d.k_percent.unique()}:
            fw = wide.loc[100.0]
            full = {
                m: fw[[(m, "top"), (m, "bottom")]].mean(axis=1) for m in (standard, robust)
            }  # every pixel attacked: top and bottom masks are the same mask
        for k in sorted(float(x) for x in d.k_percent.unique()):
            if not (0 < k < 100 and k <= max_k):
                continue
            w = wide.loc[k].dropna()
            if full is not None:
                w = w[
                    w.index.isin(full[standard].dropna().index)
                    & w.index.isin(full[robust].dropna().index)
                ]
            n = len(w)
            cols, k100 = {}, {}
            for name, model in (("standard", standard), ("robust", robust)):
                top, bottom = (
                    w[(model, "top")].to_numpy(float),
                    w[(model, "bottom")].to_numpy(float),
                )
                f = full[model].reindex(w.index).to_numpy(float) if full is not None else None
                cols[name] = (top, bottom, f)
                k100[name] = float(f.mean()) if f is not None and n else np.nan
                eff, lo, hi = paired_diff_ci(bottom, top, n_boot, rng)
                rows.append(
                    _row(
                        sec,
                        f"{norm} ordering at k {k:g} %: {name} model",
                        "bottom-mask minus top-mask top-1 "
                        "under PGD, paired over images (exact paired 0/1 interval)",
                        n,
                        standard_value=eff if name == "standard" else np.nan,
                        robust_value=eff if name == "robust" else np.nan,
                        observed=float(top.mean()) if n else np.nan,
                        control="the bottom mask, same k and images",
                        control_value=float(bottom.mean()) if n else np.nan,
                        effect=eff,
                        ci_low=lo,
                        ci_high=hi,
                        evidence=f"{n} test images attacked for both models; top-1 under PGD: top mask "
                        f"{_f(top.mean() if n else np.nan, '.2f')}, bottom mask "
                        f"{_f(bottom.mean() if n else np.nan, '.2f')}, every pixel (k 100 %) "
                        f"{_f(k100[name], '.2f')}; descriptive (P3's ordering claim is decided over k in the "
                        "claims table)",
                    )
                )
            if full is None:
                rows.append(
                    _row(
                        sec,
                        f"{norm} ordering at k {k:g} %: standard minus robust",
                        "no full-image attack (k 100 %) in masked_pgd.k_percents: the effects cannot be put "
                        "in units of each model's attack strength",
                        n,
                        evidence="add 100 to masked_pgd.k_percents to compare the two models' orderings",
                    )
                )
                continue
            units = list(range(n))

            def diff(u, c=cols):
                u = np.asarray(u, int)
                return normalised_ordering(*(x[u] for x in c["standard"])) - normalised_ordering(
                    *(x[u] for x in c["robust"])
                )

            est, lo, hi = boot_stat(units, diff, n_boot, rng) if n else (np.nan, np.nan, np.nan)
            rows.append(
                _row(
                    sec,
                    f"{norm} ordering at k {k:g} %: standard minus robust",
                    "ordering effect in units of the model's own "
                    "attack strength, (bottom − top) / (bottom − every pixel) top-1, standard minus robust, "
                    "bootstrap over images",
                    n,
                    standard_value=normalised_ordering(*cols["standard"]) if n else np.nan,
                    robust_value=normalised_ordering(*cols["robust"]) if n else np.nan,
                    effect=est,
                    ci_low=lo,
                    ci_high=hi,
                    evidence=f"{n} test images attacked for both models (each with its own gradient masks); "
                    f"top-1 with every pixel attacked: standard {_f(k100['standard'], '.2f')}, robust "
                    f"{_f(k100['robust'], '.2f')}; a model whose bottom mask is at 1.00 or whose full attack "
                    "leaves many images correct has little room: read with those numbers",
                )
            )
    return rows


# ---- gradient maps and the synthesis -----------------------------------------------------------


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return np.nan if np.ptp(a) == 0 or np.ptp(b) == 0 else float(_st.spearmanr(a, b)[0])


def mean_map_rows(
    grad_std: dict | None,
    grad_rob: dict | None,
    per_image: tuple[np.ndarray, np.ndarray] | None,
    *,
    k_percent: float,
    n_boot: int,
    rng: np.random.Generator,
    untrained: Sequence[np.ndarray] | None = None,
) -> list[dict]:
    """Agreement of the two models' mean input-gradient maps (descriptive): the gradient stage's dataset maps, and
    the mean of the per-image maps of the paired synthesis images with a bootstrap interval over images.
    ``untrained``: one N×P array per untrained copy, its per-image maps of the same images (rows as
    ``per_image[0]``); the Spearman of the standard model's mean map with a copy's, averaged over the copies (as
    the agreement rows average the copies' agreements), is then the rows' reference (how much two mean maps agree
    through the images and the architecture alone), bootstrapped over images."""
    sec = SECTIONS["gradients"]
    rows = []
    ref = ref_text = None
    untrained = _as_copies(untrained, "input-gradient maps (mean-map reference)")
    if untrained is not None and per_image is not None and len(per_image[0]):
        a0 = per_image[0]
        us = [np.asarray(u, float) for u in untrained]
        if any(u.shape != a0.shape for u in us):
            raise ValueError(
                f"each untrained copy's maps must be N×P like the standard model's {a0.shape}, got "
                f"{[u.shape for u in us]}"
            )
        units = list(range(len(a0)))
        n0, k0 = a0.shape[0], len(us)
        stack = np.concatenate([a0[:, None], np.stack(us, 1)], 1).reshape(n0, -1)  # N × (1 + K)·P

        def mean_rho(u) -> float:
            """The mean over the copies of _spearman(a0[u].mean(0), copy[u].mean(0)), all at once."""
            w = np.bincount(np.asarray(u, int), minlength=n0) / len(u)
            m = (w @ stack).reshape(1 + k0, -1)  # the standard model's and each copy's mean map
            if (np.ptp(m, axis=1) == 0).any():
                return np.nan
            r = _st.rankdata(m, axis=1)
            r -= r.mean(1, keepdims=True)
            rho = (r[1:] @ r[0]) / np.sqrt((r[1:] ** 2).sum(1) * (r[0] ** 2).sum())
            return float(rho.mean())

        ref = boot_stat(units, mean_rho, n_boot, rng)
        each = "/".join(_f(_spearman(a0.mean(0), x.mean(0))) for x in us)
        ref_text = (
            f"reference: the standard model's mean per-image map against an untrained copy's on the {len(a0)} "
            f"paired synthesis images, Spearman {_f(ref[0])} ({_f(ref[1])} to {_f(ref[2])}), the mean over "
            f"{len(us)} untrained copies (each {each}; the same caveat: {MEAN_MAP_BIAS})"
        )
    ref_name = (
        "the standard model's mean per-image map against an untrained copy's, mean over the untrained copies "
        "(same images)"
    )
    if grad_std is not None and grad_rob is not None:
        a, b = (
            np.asarray(grad_std["dataset_map"], float),
            np.asarray(grad_rob["dataset_map"], float),
        )
        top_iou = iou(
            top_k_mask(a, k_percent, ties="shuffled", at_least_one=True),
            top_k_mask(b, k_percent, ties="shuffled", at_least_one=True),
        )
        n = int(grad_std.get("n_images", 0))
        rows.append(
            _row(
                sec,
                "dataset gradient maps (the masks' source): Spearman",
                "Spearman's rho of the two models' "
                "dataset maps (mean absolute input gradient over the gradient stage's images; one pair of maps, no interval)",
                n,
                observed=_spearman(a, b),
                control=ref_name if ref is not None else "",
                control_value=ref[0] if ref is not None else np.nan,
                evidence=f"top-{k_percent:g} % IoU of the two dataset maps {top_iou:.3f} (top-k sets at k {k_percent:g} %, ties shuffled; masked PGD's "
                f"own masks break ties in pixel order); {n} {str(grad_std.get('split', ''))} images; "
                + (
                    ref_text
                    or "no untrained reference in this run: a Spearman of mean maps is high for any two "
                    "maps of the same images, so read it against the per-image row"
                ),
            )
        )
    if per_image is not None and len(per_image[0]):
        a, b = per_image
        units = list(range(len(a)))
        est, lo, hi = boot_stat(units, lambda u: _spearman(a[u].mean(0), b[u].mean(0)), n_boot, rng)
        rows.append(
            _row(
                sec,
                "mean of the per-image gradient maps: Spearman",
                "Spearman's rho of the two models' mean "
                "per-image input-gradient maps, bootstrap over images",
                len(a),
                observed=est,
                control=ref_name if ref is not None else "",
                control_value=ref[0] if ref is not None else np.nan,
                ci_low=lo,
                ci_high=hi,
                evidence=f"{len(a)} paired synthesis images; 95 % interval of the Spearman {_f(lo)} to {_f(hi)} "
                f"({MEAN_MAP_BIAS}); " + (ref_text or "no untrained reference in this run"),
            )
        )
    return rows


def paired_maps(za: dict, zb: dict, key: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The two models' maps ``key`` on the images both synthesis files hold (N×P on the pixels both use)."""
    ia, ib = _common(za["image_id"], zb["image_id"])
    if key == "onepixel":
        pix = (
            (za["searched"][ia] & zb["searched"][ib]).all(0)
            if len(ia)
            else np.zeros(za["searched"].shape[1:], bool)
        )
    else:
        pix = np.ones(za[key].shape[1:], bool)
    a = np.nan_to_num(np.asarray(za[key], np.float64)[ia][:, pix])
    b = np.nan_to_num(np.asarray(zb[key], np.float64)[ib][:, pix])
    return (
        a,
        b,
        f"{len(ia)} images in both models' synthesis files ({len(za['image_id'])} and {len(zb['image_id'])})",
    )


def synthesis_rows(
    za: dict,
    zb: dict,
    *,
    maps,
    section: str,
    k_percent: float,
    n_boot: int,
    rng: np.random.Generator,
    reference: Sequence[dict] | None = None,
) -> list[dict]:
    """Per map type, the two models' agreement (:func:`agreement_row`); decided against the untrained copies
    where ``reference`` (one dict per untrained copy of the standard model: its maps in the standard synthesis
    file's image order) holds the map type, else descriptive."""
    rows = []
    for key in maps:
        a, b, images = paired_maps(za, zb, key)
        if len(a) == 0 or a.shape[1] == 0:
            rows.append(
                _row(
                    section,
                    f"{MAP_LABELS[key].removesuffix(' map')} maps: agreement between the models",
                    "no paired image",
                    0,
                    verdict=DESCRIPTIVE,
                    evidence=images,
                )
            )
            continue
        rows.append(
            agreement_row(
                section,
                f"{MAP_LABELS[key].removesuffix(' map')} maps",
                per_image_agreement(a, b, k_percent),
                k_percent,
                n_boot,
                rng,
                images,
                _reference_table(za, zb, reference, key, k_percent),
            )
        )
    return rows


# ---- the same-run reference: the standard model against an untrained copy of its architecture ------------------

REFERENCE_MAPS = (
    "input_gradient",
    "gradcam_pp",
)  # cheap per image (one backward pass); the others are attacks


def untrained_copy(spec: dict, seed: int, device="cpu"):
    """The standard model's architecture with a seeded random initialisation and no weights loaded, built the way
    :func:`pixelrobust.models.build_model` builds the trained one (same wrapper, normalisation, Grad-CAM++
    layer)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        return build_model(spec, None, device)
    finally:
        torch.random.set_rng_state(state)


def untrained_seeds(seed: int, standard: str, n_copies: int) -> list[int]:
    """The seeds of the standard model ``standard``'s ``n_copies`` untrained copies (ours): copy c gets
    :func:`~pixelrobust.runtime.derive_seed` of the job's seed, ``"untrained"``, the model's name and c, so a
    pair's copies depend on nothing but the job seed, the standard model and the copy (not on the number or order
    of the configured pairs), and the first K copies are the same whatever K."""
    check_untrained_copies(n_copies)
    return [derive_seed(int(seed), "untrained", str(standard), c) for c in range(n_copies)]


def check_untrained_copies(n_copies) -> int:
    """``robust_compare.untrained_copies`` as a positive integer, else a clear error."""
    if isinstance(n_copies, bool) or not isinstance(n_copies, (int, np.integer)) or n_copies < 1:
        raise ValueError(
            f"robust_compare.untrained_copies is {n_copies!r}: the number of untrained copies of the standard "
            "model averaged into the same-run reference must be an integer of at least 1 (default 30)"
        )
    return int(n_copies)


def reference_maps(
    model, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 128
) -> dict[str, np.ndarray]:
    """The maps of :data:`REFERENCE_MAPS` of ``model`` on ``images`` (N×C×H×W in [0, 1]) for ``labels``, as the
    synthesis computes them (:func:`pixelrobust.synthesis.image_maps`): |∂CE/∂x| averaged over channels, and
    Grad-CAM++ of the true class."""
    x, y = (
        torch.as_tensor(np.asarray(images, np.float32)),
        torch.as_tensor(np.asarray(labels)).long(),
    )
    device = model_device(model)
    grads = [
        input_gradients(model, x[s : s + batch_size].to(device), y[s : s + batch_size].to(device))
        .abs()
        .mean(1)
        .detach()
        .cpu()
        .numpy()
        for s in range(0, len(x), batch_size)
    ]
    empty = np.zeros((0,) + tuple(x.shape[-2:]), np.float32)
    return {
        "input_gradient": np.concatenate(grads).astype(np.float32) if grads else empty,
        "gradcam_pp": gradcam_pp(model, x, y, batch_size) if len(x) else empty,
    }


def _untrained_maps(za: dict, zb: dict, reference: Sequence[dict] | None, key: str) -> list | None:
    """Each untrained copy's ``key`` maps (N×P) on the images both synthesis files hold, in :func:`paired_maps`'
    order (None without a reference for ``key``)."""
    reference = _as_copies(reference, "reference maps")
    if reference is None or not any(key in r for r in reference):
        return None
    if not all(key in r for r in reference):
        raise ValueError(
            f"only some untrained copies have {key} maps; every copy needs the same maps"
        )
    ia, _ = _common(za["image_id"], zb["image_id"])
    out = []
    for r in reference:
        if len(r[key]) != len(za["image_id"]):
            raise ValueError(
                f"the untrained reference's {key} maps cover {len(r[key])} images, the standard model's "
                f"synthesis file {len(za['image_id'])}"
            )
        out.append(np.nan_to_num(np.asarray(r[key], np.float64)[ia].reshape(len(ia), -1)))
    return out


def _reference_table(
    za: dict, zb: dict, reference: Sequence[dict] | None, key: str, k_percent: float
):
    """Per untrained copy, the per-image agreement of the standard model's ``key`` maps with the copy's, on the
    images both synthesis files hold, in :func:`paired_maps`' order (None without a reference for ``key``)."""
    us = _untrained_maps(za, zb, reference, key)
    if us is None or not len(us[0]):
        return None
    ia, _ = _common(za["image_id"], zb["image_id"])
    a = np.nan_to_num(np.asarray(za[key], np.float64)[ia].reshape(len(ia), -1))
    return [per_image_agreement(a, u, k_percent) for u in us]


# ---- one pair, and the job -----------------------------------------------------------------------


def compare_pair(
    standard: str,
    robust: str,
    dataset: str,
    *,
    p1: tuple[dict, dict] | None = None,
    masked: pd.DataFrame | None = None,
    gradients: tuple[dict, dict] | None = None,
    synthesis: tuple[dict, dict] | None = None,
    reference: Sequence[dict] | None = None,
    k_percent: float,
    border: float,
    max_k: float,
    n_boot: int,
    seed: int,
) -> tuple[pd.DataFrame, dict]:
    """Every comparison row of one pair from the stages given (``None``: not compared), and the mean maps.
    ``reference``: one dict per untrained copy of the standard model's architecture (K seeded inits), its maps of
    :data:`REFERENCE_MAPS` on the standard model's synthesis images (its file's order; :func:`reference_maps`);
    the agreement rows of those map types are decided against the copies (per image the mean of their
    agreements), the others are descriptive."""
    reference = _as_copies(reference, "reference maps")
    rng = np.random.default_rng(seed)
    rows, maps = [], {}
    if p1 is not None:
        r, maps = p1_rows(*p1, k_percent=k_percent, border=border, n_boot=n_boot, rng=rng)
        rows += r
    if masked is not None:
        rows += masked_pgd_rows(masked, standard, robust, max_k=max_k, n_boot=n_boot, rng=rng)
    per_image = None
    if synthesis is not None:
        a, b, images = paired_maps(*synthesis, "input_gradient")
        per_image = (a, b)
        if len(a):
            rows.append(
                agreement_row(
                    SECTIONS["gradients"],
                    "per-image input-gradient maps",
                    per_image_agreement(a, b, k_percent),
                    k_percent,
                    n_boot,
                    rng,
                    images,
                    _reference_table(*synthesis, reference, "input_gradient", k_percent),
                )
            )
            shape = synthesis[0]["input_gradient"].shape[1:]
            maps["gradient_standard"] = a.mean(0).reshape(shape).astype(np.float32)
            maps["gradient_robust"] = b.mean(0).reshape(shape).astype(np.float32)
    untrained = (
        _untrained_maps(*synthesis, reference, "input_gradient") if per_image is not None else None
    )
    if gradients is not None or per_image is not None:
        rows += mean_map_rows(
            *(gradients or (None, None)),
            per_image,
            k_percent=k_percent,
            n_boot=n_boot,
            rng=rng,
            untrained=untrained,
        )
        if gradients is not None and "gradient_standard" not in maps:
            maps["gradient_standard"] = np.asarray(gradients[0]["dataset_map"], np.float32)
            maps["gradient_robust"] = np.asarray(gradients[1]["dataset_map"], np.float32)
    if synthesis is not None:
        rows += synthesis_rows(
            *synthesis,
            maps=SYNTHESIS_MAPS,
            section=SECTIONS["synthesis"],
            k_percent=k_percent,
            n_boot=n_boot,
            rng=rng,
            reference=reference,
        )
    table = pd.DataFrame(
        rows, columns=[c for c in TABLE_COLUMNS if c not in ("dataset", "standard", "robust")]
    )
    table.insert(0, "robust", robust)
    table.insert(0, "standard", standard)
    table.insert(0, "dataset", dataset)
    return table[TABLE_COLUMNS], maps


def pair_name(standard: str, robust: str) -> str:
    return f"{standard}__{robust}"


def robust_compare(
    *,
    inputs: dict,
    out: dict,
    pairs: list[dict],
    models: list[str],
    datasets: dict[str, str],
    specs: dict[str, dict] | None,
    stages: list[str],
    topk_percent: float,
    border: float,
    max_k: float,
    n_boot: int,
    seed: int,
    untrained_copies: int,
    device: str = "cpu",
) -> pd.DataFrame:
    """Rule ``robust_compare``: ``robust_compare.csv``/``.md`` and one npz of mean maps per pair (``out["maps"]``,
    a list of paths in the order of ``pairs``). ``inputs``: the rule's inputs by name, ``p1_<model>`` [chunk npz],
    ``gradients_<model>`` (npz), ``synthesis_<model>`` (npz) for each of ``models`` and ``masked_pgd_images``
    (csv), each where its stage is compared. With ``specs`` (the standard models' specs), the synthesis images'
    input-gradient and Grad-CAM++ maps of ``untrained_copies`` untrained copies of each standard model (seeds
    :func:`untrained_seeds`) are computed here (one backward pass per image and copy) as the agreement rows'
    same-run reference."""
    untrained_copies = check_untrained_copies(untrained_copies)
    inputs = {
        "onepixel": {m: list(inputs[f"p1_{m}"]) for m in models if f"p1_{m}" in inputs},
        "gradients": {m: inputs[f"gradients_{m}"] for m in models if f"gradients_{m}" in inputs},
        "synthesis": {m: inputs[f"synthesis_{m}"] for m in models if f"synthesis_{m}" in inputs},
        "masked_pgd_images": inputs.get("masked_pgd_images"),
    }
    masked = (
        pd.read_csv(inputs["masked_pgd_images"], dtype={"image_id": str})
        if "masked_pgd" in stages
        else None
    )

    def get(key, loader, s, r):
        return (loader(inputs[key][s]), loader(inputs[key][r])) if key in stages else None

    frames = []
    for i, pair in enumerate(pairs):
        s, r = pair["standard"], pair["robust"]
        synthesis = get("synthesis", load_npz, s, r)
        reference = None
        if synthesis is not None and specs and s in specs:
            seeds = untrained_seeds(seed, s, untrained_copies)
            reference = [
                reference_maps(
                    untrained_copy(specs[s], c, device),
                    synthesis[0]["image"],
                    synthesis[0]["label"],
                )
                for c in seeds
            ]
            log.info(
                "%s: reference maps of %d images from %d untrained copies (seeds %s)",
                s,
                len(synthesis[0]["image"]),
                len(seeds),
                seeds,
            )
        table, maps = compare_pair(
            s,
            r,
            datasets[s],
            p1=get("onepixel", load_p1, s, r),
            masked=masked,
            gradients=get("gradients", load_npz, s, r),
            synthesis=synthesis,
            reference=reference,
            k_percent=topk_percent,
            border=border,
            max_k=max_k,
            n_boot=n_boot,
            seed=derive_seed(seed, "bootstrap", s, r),
        )
        frames.append(table)
        log.info("%s vs %s: %d rows, %s", s, r, len(table), dict(table.verdict.value_counts()))
        save_npz(out["maps"][i], **maps)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TABLE_COLUMNS)
    write_table(table, out["csv"], out["md"])
    return table


__all__ = [
    "DESCRIPTIVE",
    "SECTIONS",
    "STAGES",
    "TABLE_COLUMNS",
    "agreement_row",
    "centre_mask",
    "compare_pair",
    "load_p1",
    "masked_pgd_rows",
    "mean_map_rows",
    "mean_reference",
    "p1_rows",
    "pair_name",
    "paired_maps",
    "normalised_ordering",
    "per_image_agreement",
    "reference_maps",
    "robust_compare",
    "synthesis_rows",
    "untrained_copy",
    "untrained_seeds",
]
