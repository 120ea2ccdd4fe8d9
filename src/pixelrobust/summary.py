"""``results/SUMMARY.md``: claim by claim, did it hold in this replication? Built from the tables only.

Each claim gets a verdict — ``held``, ``not held``, ``inconclusive`` (the interval straddles the
threshold), ``too few images`` (fewer than :data:`MIN_IMAGES`) or ``not run`` (its stage is off in
the config) — with the numbers behind it. The criteria are ours and listed in docs/synthesis.md;
the verdicts also go to ``results/tables/claims.csv`` (one row per claim and model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .io import atomic_path, write_table
from .provenance import git_commit
from .report import FRONT_PAGE_HEADING
from .stats import (
    MIN_IMAGES,
    POWER,
    binding,
    decide,
    decide_all,
    detectable_effect,
    detectable_paired,
    detectable_paired_binary,
    paired_diff_ci,
)

# One row per claim and model. ``statistic`` names the effect (oriented so that positive is what the
# claim says), ``observed`` is the value of the thing tested, ``control`` names the negative control of
# the same run and ``control_value`` its value; ``effect`` with ``ci_low``/``ci_high`` (95 %) is what the
# verdict rule of :mod:`pixelrobust.stats` decides on, against ``threshold`` (0 unless the claim names a smallest
# effect that matters). ``detectable`` (inconclusive rows whose own interval straddles the threshold: the rows that
# more images could decide) is how far beyond the threshold the true effect would have had to lie for this run to
# hold it with 80 % power (stats.detectable_effect, or detectable_paired_binary for the exact paired 0/1 interval;
# inf: too few images differ for any effect to be held). For a claim of several tests it is the row's test's.
CLAIM_COLUMNS = [
    "paper",
    "claim",
    "dataset",
    "model",
    "verdict",
    "n_images",
    "statistic",
    "observed",
    "control",
    "control_value",
    "effect",
    "ci_low",
    "ci_high",
    "threshold",
    "detectable",
    "evidence",
]


def _row(
    paper,
    claim,
    dataset,
    model,
    verdict,
    n,
    evidence,
    *,
    statistic: str = "",
    observed: float = np.nan,
    control: str = "",
    control_value: float = np.nan,
    effect: float = np.nan,
    ci_low: float = np.nan,
    ci_high: float = np.nan,
    threshold: float = 0.0,
    detectable: float | None = None,
) -> dict:
    """One claims.csv row. ``detectable``: the row's own figure (exact intervals compute it where the data are);
    None: the normal approximation from the interval. Kept only where the verdict is inconclusive *because* the
    row's interval straddles ``threshold``; a row withheld for another reason (the grid diagnostic, no power of a
    transfer control, the other test of the claim) gets none: more images would not decide it."""
    straddles = (
        verdict == "inconclusive"
        and not (pd.isna(ci_low) or pd.isna(ci_high))
        and ci_low <= threshold <= ci_high
    )
    if not straddles:
        detectable = np.nan
    elif detectable is None:
        detectable = detectable_effect(ci_low, ci_high)
    return {
        "paper": paper,
        "claim": claim,
        "dataset": dataset,
        "model": model,
        "verdict": verdict,
        "n_images": int(n),
        "statistic": statistic,
        "observed": observed,
        "control": control,
        "control_value": control_value,
        "effect": effect,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "threshold": threshold,
        "detectable": detectable,
        "evidence": evidence,
    }


# ---- P1 ----------------------------------------------------------------------------------------


def _fmt(v: float, spec: str = ".2f") -> str:
    return "nan" if v is None or pd.isna(v) else format(float(v), spec)


# ours: the default semantic declaration (occlusion, positive) was chosen after the first 20 test images had been
# seen (docs/p1.md, docs/decisions.md), so its evidence says so; claim_rows' statistic starts with this.
P1_PILOT_DECLARATION = "positive within-image Spearman rho(occlusion,"


def p1_claims(claims: pd.DataFrame) -> list[dict]:
    """P1's three claims from ``onepixel_claims`` (effects against same-run controls, decided there by
    :func:`pixelrobust.stats.decide`; docs/p1.md): the primary segmentation's rows decide, the other
    SLIC segment counts (``onepixel.sensitivity_segments``) are quoted in the evidence."""
    rows = []
    for (model, claim), d in claims.groupby(["model", "claim"], sort=False):
        prim = d[d.primary.astype(bool)]
        if prim.empty:
            continue
        r = prim.iloc[0]
        ev = (
            f"{r.statistic}: {_fmt(r.observed)} vs {_fmt(r.control_value)} ({r.control}); effect {_fmt(r.effect, '+.3f')} "
            f"(95 % CI {_fmt(r.ci_low, '+.3f')} to {_fmt(r.ci_high, '+.3f')}), {int(r.n_segments)} SLIC segments"
        )
        if isinstance(r.secondary, str) and r.secondary:
            ev += (
                f"; {r.secondary} {_fmt(r.secondary_value)} (95 % CI {_fmt(r.secondary_ci_low)} to "
                f"{_fmt(r.secondary_ci_high)})"
            )
            if pd.notna(r.secondary_threshold):
                ev += f", must exceed {_fmt(r.secondary_threshold)}"
        if isinstance(r.reference, str) and r.reference:
            ev += f"; {r.reference} {_fmt(r.reference_value)}"
        if pd.notna(r.cost_share):
            ev += f"; cost {_fmt(r.cost_share)} of the whole-image evaluations"
        if int(r.n_skipped):
            ev += f"; {int(r.n_skipped)} attackable images skipped (fewer than 3 regions or constant values)"
        if str(r.statistic).startswith(P1_PILOT_DECLARATION):
            ev += (
                "; direction declared after a pilot on the first 20 images (test images 0-19 are in the sample: "
                "not a held-out test, docs/p1.md)"
            )
        others = d[~d.primary.astype(bool)]
        if len(others):
            ev += "; sensitivity: " + ", ".join(
                f"{int(o.n_segments)} segments {_fmt(o.effect, '+.3f')} [{_fmt(o.ci_low, '+.3f')}, {_fmt(o.ci_high, '+.3f')}] "
                f"{o.verdict}"
                for o in others.itertuples()
            )
        rows.append(
            _row(
                "P1",
                claim,
                r.dataset,
                model,
                r.verdict,
                int(r.n_images),
                ev,
                statistic=r.statistic,
                observed=r.observed,
                control=r.control,
                control_value=r.control_value,
                effect=r.effect,
                ci_low=r.ci_low,
                ci_high=r.ci_high,
                threshold=float(getattr(r, "threshold", 0.0)),
                detectable=getattr(r, "detectable", None),
            )
        )
    return rows


# ---- P2 ----------------------------------------------------------------------------------------


P2_CLAIM = "imperceptible (SSIM-ball) perturbations change the regions that drive the decision more than PGD's"
# ours: the choices P2's verdict rests on were fixed after a pilot on the first ImageNet test images (docs/p2.md)
P2_PILOT = (
    "choices fixed after a pilot on ImageNet test images 0-23, which are inside this run (window layout, "
    "comparison epsilon, primary map and metric, grid threshold, verdict rule; docs/p2.md)"
)


def p2_claims(ssim_summary: pd.DataFrame, model: str, dataset: str) -> list[dict]:
    """P2: on the primary map and metric (``ssim.compare.primary``, the rows marked ``primary``), the
    SSIM ball beats every listed PGD baseline *and* its own feasible-set budget map (the model-free control
    of the same run, :func:`pixelrobust.map_compare.budget_map`), each by a paired bootstrap over images,
    intersection-union over the tests. The verdict is withheld (``inconclusive``) when the SSIM ball's
    perturbation fails the grid diagnostic (its change lives on the seams of the constraint's windows); a PGD
    baseline whose success rate on the compared images differs from the SSIM ball's by more than
    ``ssim.compare.success_tolerance`` has its test counted as inconclusive (the model-free budget-map test,
    which no success rate affects, still decides). The headline effect is the test that decides
    (:func:`pixelrobust.stats.binding`); the sliding 7×7 1 − SSIM map is quoted as a sensitivity check."""
    # lazy: map_compare imports torch and skimage (about 2.5 s); the rest of summary reads tables only
    from .map_compare import BUDGET, GRID_ARTEFACT, SUCCESS_DIFFERS

    s = ssim_summary.copy()
    s["baseline"] = s.baseline.fillna("")
    s["map"] = s["map"].fillna("")
    s["verdict"] = s.verdict.fillna("")
    primary = s[s.primary.astype(str).str.lower() == "true"]
    paired = primary[primary.baseline != ""]
    if paired.empty:
        return [
            _row(
                "P2",
                P2_CLAIM,
                dataset,
                model,
                "too few images",
                0,
                "no paired comparison in ssim_cam_summary",
            )
        ]
    grid = s[(s.metric == "grid_ratio") & (s.attack == "ssim_ball")]
    grid_text = (
        f"grid diagnostic: SSIM-ball aligned/straddling 1 - SSIM ratio {grid['mean'].iloc[0]:.3g} "
        f"({grid.ci_low.iloc[0]:.3g}-{grid.ci_high.iloc[0]:.3g}), {grid.verdict.iloc[0]}"
        if len(grid)
        else "grid diagnostic missing"
    )
    controls = s[(s.metric == "grid_ratio") & (s.attack != "ssim_ball")]
    if len(controls):
        grid_text += "; " + ", ".join(f"{r.attack} {r.mean:.3g}" for r in controls.itertuples())
    success = s[s.metric == "success_rate"].set_index("attack")
    if success.empty:
        raise ValueError(
            "ssim_cam_summary has no success_rate rows (written before the success check); rerun compare_maps"
        )
    pgd = [b for b in paired.baseline if b != BUDGET]
    success_text = "success rates on the compared images: " + ", ".join(
        f"{a} {success.loc[a, 'mean']:.2f}" for a in ["ssim_ball", *pgd] if a in success.index
    )
    differs = [
        b for b in pgd if b not in success.index or success.loc[b, "verdict"] == SUCCESS_DIFFERS
    ]
    tests = [decide(r.ci_low, r.ci_high, int(r.n_images)) for r in paired.itertuples()]
    n = int(paired.n_images.min())
    withheld = []
    if decide_all(tests) != "too few images":
        if bool(len(grid)) and grid.verdict.iloc[0] == GRID_ARTEFACT:
            withheld.append("grid artefact")
            tests = ["inconclusive"] * len(
                tests
            )  # the perturbation measures the window grid: no test speaks
        if differs:
            withheld.append(
                f"success rate of {', '.join(differs)} differs from the SSIM ball's by more than the tolerance "
                "(those baselines' tests count as inconclusive; the model-free budget-map test still decides)"
            )
            tests = [
                "inconclusive" if r.baseline in differs else t
                for t, r in zip(tests, paired.itertuples())
            ]
    verdict = decide_all(tests)
    bind = paired.iloc[
        binding([(t, r.ci_low, r.ci_high) for t, r in zip(tests, paired.itertuples())])
    ]
    metric, name = bind.metric, bind["map"]
    means = primary[primary.baseline == ""].set_index("attack")["mean"]
    label = {
        BUDGET: "its budget map (model-free: each window's largest allowed energy at this epsilon and stride)"
    }
    detail = "; ".join(
        f"vs {label.get(r.baseline, r.baseline)}: {r.mean:+.3g} ({r.ci_low:+.3g} to {r.ci_high:+.3g}), {t}"
        for r, t in zip(paired.itertuples(), tests)
    )
    if BUDGET in means.index:
        detail += (
            f"; shares: SSIM ball {means.get('ssim_ball', np.nan):.3f}, budget map {means[BUDGET]:.3f}, "
            + ", ".join(f"{b} {means.get(b, np.nan):.3f}" for b in pgd)
        )
    sens = (
        s[(s["map"] == "sliding_ssim") & (s.metric == metric) & (s.baseline.isin(pgd))]
        if name != "sliding_ssim"
        else s[:0]
    )
    sens_text = (
        (
            "; sensitivity (sliding 7x7 1 - SSIM map): "
            + ", ".join(
                f"vs {r.baseline} {r.mean:+.3g} ({r.ci_low:+.3g} to {r.ci_high:+.3g}), "
                f"{decide(r.ci_low, r.ci_high, int(r.n_images))}"
                for r in sens.itertuples()
            )
        )
        if len(sens)
        else ""
    )
    evidence = (
        f"{metric} of the {name} map against the clean Grad-CAM++, SSIM ball minus control paired over images: {detail}; "
        f"{success_text}; {grid_text}{sens_text}"
        + (f"; {P2_PILOT}" if dataset == "imagenet" else "")
        + (f"; verdict withheld: {'; '.join(withheld)}" if withheld else "")
    )
    control = (
        f"{label[BUDGET]}, same images"
        if bind.baseline == BUDGET
        else f"{bind.baseline} at matched success (same run)"
    )
    return [
        _row(
            "P2",
            P2_CLAIM,
            dataset,
            model,
            verdict,
            n,
            evidence,
            statistic=f"{metric} of the {name} map with the clean Grad-CAM++, SSIM ball minus {bind.baseline}",
            observed=float(means.get("ssim_ball", np.nan)),
            control=control,
            control_value=float(means.get(bind.baseline, np.nan)),
            effect=float(bind["mean"]),
            ci_low=float(bind.ci_low),
            ci_high=float(bind.ci_high),
        )
    ]


# ---- P3 ----------------------------------------------------------------------------------------


NORM_LABELS = {"linf": "L-inf", "l2": "L2"}


def _masked_ks(images: pd.DataFrame, norm: str, max_k: float, claim: str, masks_needed) -> tuple:
    """The rows of ``norm``, the k the verdicts are decided on and the excluded k (:func:`p3_ordering`)."""
    if norm not in NORM_LABELS:
        raise ValueError(f"norm must be one of {', '.join(NORM_LABELS)}, got {norm!r}")
    d_all = images[images.norm == norm]
    ks_all = sorted(float(k) for k in d_all.k_percent.unique())
    ks = [k for k in ks_all if 0 < k < 100 and k <= max_k]
    if not any(0 < k < 100 for k in ks_all):
        raise ValueError(
            f"masked_pgd.k_percent {ks_all} has no mask size strictly between 0 and 100: {claim} compares "
            "two masks of the same size, and at k = 0 (no pixel) and k = 100 (every pixel) both are "
            "the same attack; add sizes such as 5, 10, 25"
        )
    if not ks:
        raise ValueError(
            f"masked_pgd.k_percent {ks_all} has no mask size in (0, masked_pgd.verdict_max_k = {max_k:g}], the "
            f"sizes {claim} is decided on; add sizes such as 5, 10, 25 or raise verdict_max_k"
        )
    masks = set(d_all["mask"])
    missing = [m for m in masks_needed if m not in masks]
    if missing:
        raise ValueError(
            f"masked_pgd.masks {sorted(masks)} lacks {' and '.join(repr(m) for m in missing)}, which {claim} "
            "compares; add them"
        )
    return d_all, ks, [k for k in ks_all if k not in ks]


def _excluded_note(excluded, max_k: float) -> str:
    same = [k for k in excluded if k in (0, 100)]
    big = [k for k in excluded if k not in (0, 100)]
    note = (
        f"; k = {', '.join(f'{k:g}' for k in same)} excluded (the same attack for every mask)"
        if same
        else ""
    )
    note += (
        f"; k = {', '.join(f'{k:g}' for k in big)} excluded (above masked_pgd.verdict_max_k {max_k:g}: not a "
        "minority of the pixels)"
        if big
        else ""
    )
    return note


def _paired_test(a: np.ndarray, b: np.ndarray, n: int, n_boot: int, rng) -> tuple:
    """One paired per-image test of ``a − b``: (effect, ci_low, ci_high, verdict, detectable). Identical values on
    every image are a tie, "(tied)" after the verdict (e.g. both masks at 0 under saturation, or the same mask): not
    a lack of images, more would not separate the two, so no detectable figure."""
    eff, lo, hi = paired_diff_ci(a, b, n_boot, rng)
    tied = bool((a == b).all())
    verdict = decide(lo, hi, n) + (" (tied)" if tied and n >= MIN_IMAGES else "")
    det = detectable_paired(a, b, lo, hi) if lo <= 0 <= hi and not tied else np.nan
    return eff, lo, hi, verdict, det


def _mask_pair(d: pd.DataFrame, ks, control: str, n_boot: int, rng, *, reference: str | None):
    """Per k, the paired per-image difference *control-mask correct − top-mask correct* (positive = the top
    mask leaves fewer images correct) with its exact interval and verdict, the ``reference`` mask's paired
    difference with the top mask (evidence only) and the cross-entropy difference top − control; then the
    intersection–union verdict over k and the k that limits it."""
    wide = d.pivot_table(index=["k_percent", "image_id"], columns="mask", values="correct")
    losses = d.pivot_table(index=["k_percent", "image_id"], columns="mask", values="loss")
    n = int(d.image_id.nunique())
    per_k = []
    for k in ks:
        w = wide.loc[k]
        top, other = w["top"].to_numpy(float), w[control].to_numpy(float)
        eff, lo, hi, verdict, det = _paired_test(other, top, n, n_boot, rng)
        ref = w[reference].to_numpy(float) if reference is not None and reference in w else None
        r_eff = paired_diff_ci(ref, top, n_boot, rng) if ref is not None else (np.nan,) * 3
        ce = losses.loc[k]
        ce_eff = paired_diff_ci(ce["top"].to_numpy(float), ce[control].to_numpy(float), n_boot, rng)
        both = ~(
            np.isnan(top) | np.isnan(other)
        )  # the means over the pairs the effect is computed on
        per_k.append(
            {
                "k": k,
                "top": top[both].mean(),
                "other": other[both].mean(),
                "ref": np.nanmean(ref) if ref is not None else np.nan,
                "effect": eff,
                "lo": lo,
                "hi": hi,
                "verdict": verdict,
                "detectable": det,
                "vs_ref": r_eff,
                "loss": ce_eff,
            }
        )
    verdict = decide_all([r["verdict"].removesuffix(" (tied)") for r in per_k])
    limit = per_k[
        binding([(r["verdict"].removesuffix(" (tied)"), r["lo"], r["hi"]) for r in per_k])
    ]
    return n, per_k, verdict, limit


def _mask_pair_row(
    claim, ds, model, pair, detail: str, max_k: float, *, statistic, control
) -> dict:
    """The claim row of a :func:`_mask_pair` comparison (``pair``: its return value): observed = the top mask's
    top-1 and control = the other mask's, at the k that limits the verdict."""
    n, per_k, verdict, limit = pair
    return _row(
        "P3",
        claim,
        ds,
        model,
        verdict,
        n,
        f"per-image top-1 under attack, paired over {n} images (95 %, exact paired 0/1 interval), intersection-union "
        f"over the {len(per_k)} k in (0, {max_k:g}]: {detail}",
        statistic=statistic,
        observed=float(limit["top"]),
        control=control,
        control_value=float(limit["other"]),
        effect=float(limit["effect"]),
        ci_low=float(limit["lo"]),
        ci_high=float(limit["hi"]),
        detectable=limit["detectable"],
    )


def p3_ordering(
    images: pd.DataFrame, norm: str, *, n_boot: int, seed: int, max_k: float = 25
) -> list[dict]:
    """P3: PGD on the top-gradient pixels hurts more than on the bottom ones, at every mask size k.

    ``images``: ``masked_pgd_images.csv`` (one row per model, norm, mask, k and image). Per k the effect
    is the paired per-image difference *bottom-mask correct − top-mask correct* (positive = the claim),
    its mean with a bootstrap interval over images, decided by :func:`stats.decide`; the claim is
    :func:`stats.decide_all` over k (intersection–union: held only if every k is held; no correction for
    multiplicity is needed for an "all of" claim). k = 0 (no pixel perturbed) and k = 100 (every pixel)
    are the same attack whatever the mask, so the two masks tie there by construction: excluded. So is every
    k above ``max_k`` (ours, ``masked_pgd.verdict_max_k``, 25): the claim is about a minority of pixels, and a
    "top" mask of half the image or more is not that (above 50 % the top and bottom masks even share pixels);
    those k stay in the table and figures, and in the evidence as excluded. A k
    at which both masks leave exactly the same images correct (every paired difference 0, e.g. both at
    0 % under saturation) is a tie: inconclusive at that k (a tie is no loss, nor evidence for the
    order), so the claim is at most inconclusive. The row's ``observed`` is the top mask's top-1 and its
    ``control`` the bottom mask's (the claim's comparison), at the k that limits the verdict, so ``effect`` =
    ``control_value`` − ``observed``; the random mask of the same size, on the same images, is the same-run
    reference in the evidence (its top-1 and its paired difference with the top mask, per k).
    The evidence also gives, per k, the paired difference of the attacked images' cross-entropy (top −
    bottom), which still separates the masks where top-1 is near 0 under both (not part of the verdict).
    Whether the order is more than the image's geometry is :func:`p3_beyond_geometry`'s row.
    """
    d_all, ks, excluded = _masked_ks(images, norm, max_k, "P3's ordering", ("top", "bottom"))
    rows = []
    for (ds, model), d in d_all.groupby(["dataset", "model"], sort=False):
        n, per_k, verdict, limit = _mask_pair(
            d, ks, "bottom", n_boot, np.random.default_rng(seed), reference="random"
        )
        detail = "; ".join(
            f"k {r['k']:g} %: top {r['top']:.2f} / random {r['ref']:.2f} / bottom {r['other']:.2f}, bottom - top "
            f"{r['effect']:+.3f} ({r['lo']:.3f} to {r['hi']:.3f}) {r['verdict']}"
            + (
                f", random - top {r['vs_ref'][0]:+.3f} ({r['vs_ref'][1]:.3f} to {r['vs_ref'][2]:.3f})"
                if not np.isnan(r["vs_ref"][0])
                else ""
            )
            + f", cross-entropy top - bottom {r['loss'][0]:+.3g} ({r['loss'][1]:.3g} to {r['loss'][2]:.3g})"
            for r in per_k
        )
        rows.append(
            _mask_pair_row(
                f"ordering: {NORM_LABELS[norm]} PGD on top-gradient pixels beats bottom-gradient pixels",
                ds,
                model,
                (n, per_k, verdict, limit),
                detail + _excluded_note(excluded, max_k),
                max_k,
                statistic="bottom-mask minus top-mask top-1 under PGD, paired over images, at the k that limits the "
                f"verdict (k {limit['k']:g} %; effect = control_value - observed: the claim is that the top mask "
                "leaves fewer images correct)",
                control=f"bottom mask, same k and images (k {limit['k']:g} %)",
            )
        )
    return rows


def _share(control_gap: float, claim_gap: float) -> str:
    """``control_gap / claim_gap`` as a percentage (the part of the ordering a mask reproduces), or "n/a"."""
    return f"{100 * control_gap / claim_gap:.0f} %" if claim_gap > 0 else "n/a"


GEOMETRY_CONTROLS = {  # the data-free masks that rival the top mask (bottom_arch, the weakest by construction, is no rival)
    "centre": "the centre disc (the k % of pixels nearest the centre)",
    "top_arch": "the architecture map's top mask (all-ones weights and input)",
    "random": "the random mask (uniform pixels, no data)",
}


def p3_beyond_geometry(
    images: pd.DataFrame, norm: str, *, n_boot: int, seed: int, max_k: float = 25
) -> list[dict]:
    """Ours, a control on P3's ordering: is the dataset gradient map more than geometry? PGD on its top pixels raises
    the attacked images' cross-entropy more than PGD on the same number of pixels chosen without data, at every k in
    (0, ``max_k``], against each data-free mask of the run that rivals it: ``centre`` (the pixels nearest the image
    centre, :func:`pixelrobust.gradients.centre_mask`), ``top_arch`` (the top of the architecture-induced map: padding,
    strides and the stride lattice, no data) and ``random`` (uniform pixels: spread without data). ``bottom_arch``,
    the weakest by construction, is left out. A run without ``top_arch`` or ``random`` tests the others (the evidence
    names the masks).

    Per control and k the effect is the paired per-image difference of the cross-entropy after the attack, *top mask −
    control mask* (positive = the data map's pixels matter more), its mean with a percentile bootstrap interval over
    images, decided by :func:`stats.decide`; the claim is :func:`stats.decide_all` over every (control, k): it must
    beat each data-free mask at every k (a referee, session s35, found the centre disc alone beaten by data-free masks
    on MobileNetV2 at 224 under L∞: the random and the architecture masks beat it at k ≥ 10 %, so beating the disc
    there says the disc is a weak region, not that the data help). Cross-entropy, not top-1 as in :func:`p3_ordering`: under
    these strong masks top-1 reaches 0 by k 25 % and stops measuring; the cross-entropy keeps separating masks past
    the decision boundary (it has no ceiling: at k 25 % it measures how far past the boundary PGD goes, not whether
    images flip; at k 1 % many images keep a loss of exactly 0 under both masks: ties). Identical per-image values are
    a tie: inconclusive. The evidence gives, per k, top-1 under the top, centre, ``top_arch``, random and bottom
    masks, and per control the cross-entropy difference with the share of images whose loss is higher under the top
    mask, the share of the ordering (top − bottom cross-entropy) the centre disc reproduces, and random − centre (a
    spread-out mask without data against the disc). No row for a run whose ``masked_pgd.masks`` lacks ``centre``.
    """
    if not (images["mask"] == "centre").any():
        return []
    d_all, ks, excluded = _masked_ks(images, norm, max_k, "the geometry control", ("top", "centre"))
    controls = [c for c in GEOMETRY_CONTROLS if c in set(d_all["mask"])]
    rows = []
    for (ds, model), d in d_all.groupby(["dataset", "model"], sort=False):
        rng = np.random.default_rng(seed)
        wide = d.pivot_table(index=["k_percent", "image_id"], columns="mask", values="correct")
        losses = d.pivot_table(index=["k_percent", "image_id"], columns="mask", values="loss")
        n = int(d.image_id.nunique())
        tests, texts = [], []
        for k in ks:
            ce, w = losses.loc[k], wide.loc[k]
            top = ce["top"].to_numpy(float)
            acc = " / ".join(
                f"{m} {np.nanmean(w[m]):.2f}"
                for m in ("top", "centre", "top_arch", "random", "bottom")
                if m in w
            )
            parts = []
            for c in controls:
                other = ce[c].to_numpy(float)
                eff, lo, hi, verdict, det = _paired_test(top, other, n, n_boot, rng)
                tests.append(
                    {
                        "k": k,
                        "control": c,
                        "top": float(np.nanmean(top)),
                        "other": float(np.nanmean(other)),
                        "effect": eff,
                        "lo": lo,
                        "hi": hi,
                        "verdict": verdict,
                        "detectable": det,
                    }
                )
                ok = ~(np.isnan(top) | np.isnan(other))
                parts.append(
                    f"top - {c} {eff:+.3g} ({lo:.3g} to {hi:.3g}) {verdict}, higher under top on "
                    f"{(top[ok] > other[ok]).mean():.0%} of images, equal on {(top[ok] == other[ok]).mean():.0%}"
                )
            extra = ""
            if "bottom" in ce:
                cb = float(np.nanmean(ce["bottom"]))
                extra += (
                    f"; the centre disc reproduces "
                    f"{_share(np.nanmean(ce['centre']) - cb, np.nanmean(top) - cb)} of the ordering (top - bottom)"
                )
            if "random" in ce:
                r_eff = paired_diff_ci(
                    ce["random"].to_numpy(float), ce["centre"].to_numpy(float), n_boot, rng
                )
                extra += f"; random - centre {r_eff[0]:+.3g} ({r_eff[1]:.3g} to {r_eff[2]:.3g})"
            texts.append(f"k {k:g} %: top-1 {acc}; cross-entropy " + ", ".join(parts) + extra)
        verdict = decide_all([t["verdict"].removesuffix(" (tied)") for t in tests])
        limit = tests[
            binding([(t["verdict"].removesuffix(" (tied)"), t["lo"], t["hi"]) for t in tests])
        ]
        names = " and ".join(controls)
        rows.append(
            _row(
                "P3",
                f"beyond geometry (ours): {NORM_LABELS[norm]} PGD on top-gradient pixels raises the attacked "
                "cross-entropy more than data-free masks",
                ds,
                model,
                verdict,
                n,
                f"per-image cross-entropy after the attack, paired over {n} images (95 % bootstrap), "
                f"intersection-union over the data-free masks ({names}) and the {len(ks)} k in (0, {max_k:g}] "
                "(the shares of the ordering have no interval): "
                + "; ".join(texts)
                + _excluded_note(excluded, max_k),
                statistic=f"top-mask minus {limit['control']}-mask cross-entropy of the attacked image, paired over "
                f"images, at the mask and k that limit the verdict (k {limit['k']:g} %; effect = observed - "
                "control_value: held means the data map's pixels matter more than every data-free mask's)",
                observed=limit["top"],
                control=f"{GEOMETRY_CONTROLS[limit['control']]}, same k and images (k {limit['k']:g} %)",
                control_value=limit["other"],
                effect=float(limit["effect"]),
                ci_low=float(limit["lo"]),
                ci_high=float(limit["hi"]),
                detectable=limit["detectable"],
            )
        )
    return rows


IOU_CONTROLS = ("untrained", "fill_only")


def p3_iou(
    sweep: pd.DataFrame,
    images: pd.DataFrame,
    *,
    margin: float,
    n_boot: int,
    seed: int,
    ceiling: float = 0.9,
) -> list[dict]:
    """P3: the trained PRM moves the top-gradient pixels onto its lattice, beyond an untrained PRM, at a λ that
    keeps accuracy.

    ``sweep``: ``prm_lambda_sweep_detail.csv`` (rows per ``prm`` — ``trained``, ``untrained``, ``fill_only`` for
    residual PRMs — and λ, with ``clean_top1``); ``images``: ``prm_lambda_sweep_images.csv`` (per-image IoU of each
    image's top-k gradient pixels with the lattice). λ* is the largest swept λ in (0, 1) whose trained top-1 is at
    least ``clean_top1 − margin`` (ours, ``prm.sweep.accuracy_margin``) *and* at which every control's mean
    per-image IoU is at most ``ceiling`` (ours, ``prm.sweep.control_iou_ceiling``): where a control is already
    near 1 the trained PRM can beat it by at most 1 − its IoU, so the test is saturated there whatever the PRM
    learnt (at λ 0.999 the fill-only map's per-image IoU is 1.000). λ* is chosen from the trained top-1 and the
    controls' IoU only, never the trained IoU. λ = 1 is never λ*: there the IoU is 1 for any PRM by construction
    (the input reaches the classifier only through the lattice); λ = 0 neither (no PRM).
    Effect per control: mean over the images present for both of IoU(trained) − IoU(control) at λ*, paired
    bootstrap over those images (``n`` = their number); the claim is :func:`stats.decide_all` over the controls
    (it must beat each). No λ within the margin, or every such λ saturated: inconclusive, with the reason.
    """
    rows = []
    for (ds, model), d in sweep.groupby(["dataset", "model"], sort=False):
        if "prm" not in d or not (set(IOU_CONTROLS) & set(d.prm)):
            raise ValueError(
                f"the λ sweep of {model} has no untrained control (prm column); rerun prm_sweep "
                "(snakemake --forcerun prm_sweep)"
            )
        controls = [c for c in IOU_CONTROLS if c in set(d.prm)]
        rng = np.random.default_rng(seed)
        tr = d[d.prm == "trained"].sort_values("lambda")
        clean, n_sweep = float(d.clean_top1.iloc[0]), int(d.n_images.iloc[0])
        chance = float(d.chance_iou.iloc[0])
        ok = tr[(tr["lambda"] > 0) & (tr["lambda"] < 1) & (tr.top1 >= clean - margin - 1e-9)]
        claim = "the trained PRM moves the top-gradient pixels onto its lattice beyond an untrained PRM, within the accuracy margin"
        curve = (
            f"trained dataset-map IoU {tr.iou.iloc[0]:.2f} at lambda {tr['lambda'].iloc[0]:g} -> {tr.iou.iloc[-1]:.2f} at "
            f"{tr['lambda'].iloc[-1]:g} (chance {chance:.2f}), top-1 {tr.top1.iloc[0]:.2f} -> {tr.top1.iloc[-1]:.2f}; "
            "lambda = 1 excluded (IoU 1 for any PRM there)"
        )
        mine = images[images.model == model]

        def control_means(lam: float, mine=mine, controls=controls) -> dict:
            at = mine[np.isclose(mine["lambda"], lam)]
            return {c: float(at[at.prm == c].iou.mean()) for c in controls}

        # the controls' mean per-image IoU at each acceptable λ (never the trained PRM's): saturated ones are skipped
        sat = {float(lam): control_means(float(lam)) for lam in ok["lambda"]}
        unsat = ok[
            [
                not any(np.isnan(v) or v > ceiling for v in sat[float(lam)].values())
                for lam in ok["lambda"]
            ]
        ]
        empty = dict(
            statistic="per-image IoU, trained minus control PRM, at lambda*",
            observed=np.nan,
            control=" / ".join(controls),
        )
        if ok.empty or unsat.empty:
            if ok.empty:
                why = f"no lambda in (0, 1) keeps the trained PRM's top-1 within {margin:g} of clean {clean:.3f}"
            else:
                why = (
                    f"every lambda in (0, 1) that keeps the trained PRM's top-1 within {margin:g} of clean {clean:.3f} "
                    f"has a control with mean per-image IoU above the ceiling {ceiling:g} (saturated: "
                    + ", ".join(
                        f"lambda {lam:g}: " + "/".join(f"{c} {v:.3f}" for c, v in m.items())
                        for lam, m in sat.items()
                    )
                    + ")"
                )
            rows.append(
                _row(
                    "P3",
                    claim,
                    ds,
                    model,
                    "too few images" if n_sweep < MIN_IMAGES else "inconclusive",
                    n_sweep,
                    f"{why}; {curve}",
                    **empty,
                )
            )
            continue
        row = unsat.iloc[-1]
        lam = float(row["lambda"])
        skipped = [f"{x:g}" for x in ok["lambda"] if x > lam]
        at = mine[np.isclose(mine["lambda"], lam)]
        trained = at[at.prm == "trained"].set_index("image_id").iou
        res = {}
        for c in controls:
            pair = pd.concat(
                {"t": trained, "c": at[at.prm == c].set_index("image_id").iou}, axis=1
            ).dropna()
            n_c = len(pair)
            eff, lo, hi = paired_diff_ci(
                pair.t.to_numpy(float), pair.c.to_numpy(float), n_boot, rng
            )
            res[c] = {
                "eff": eff,
                "lo": lo,
                "hi": hi,
                "t": float(pair.t.mean()),
                "c": float(pair.c.mean()),
                "n": n_c,
                "verdict": decide(lo, hi, n_c),
            }
        verdict = decide_all([r["verdict"] for r in res.values()])
        hardest = controls[
            binding([(res[c]["verdict"], res[c]["lo"], res[c]["hi"]) for c in controls])
        ]
        h = res[hardest]
        parts = ", ".join(
            f"trained - {c} {r['eff']:+.3f} ({r['lo']:.3f} to {r['hi']:.3f}) over {r['n']} images {r['verdict']}"
            for c, r in res.items()
        )
        note = (
            f"; lambda {', '.join(skipped)} within the margin but skipped: a control's mean per-image IoU above the "
            f"ceiling {ceiling:g} (saturated)"
            if skipped
            else ""
        )
        rows.append(
            _row(
                "P3",
                claim,
                ds,
                model,
                verdict,
                h["n"],
                f"lambda* {lam:g}, the largest lambda < 1 with trained top-1 {row.top1:.3f} >= clean {clean:.3f} - {margin:g} and "
                f"every control's mean per-image IoU <= {ceiling:g}{note}; "
                f"per-image IoU of the top-k gradient pixels with the lattice at lambda*: trained {trained.mean():.3f}, "
                + ", ".join(f"{c} {r['c']:.3f}" for c, r in res.items())
                + f"; paired over the images present for both (of {n_sweep} swept; 95 % bootstrap), must beat every control: "
                f"{parts}; {curve}",
                statistic=f"per-image IoU with the lattice, trained minus {hardest} PRM, at lambda* {lam:g} (effect = observed - "
                "control_value, both over the paired images)",
                observed=h["t"],
                control=f"{hardest} PRM, same images and lambda",
                control_value=h["c"],
                effect=float(h["eff"]),
                ci_low=float(h["lo"]),
                ci_high=float(h["hi"]),
            )
        )
    return rows


def attack_inert(cell: pd.DataFrame, attack: str, protocol: str, margin: float) -> str:
    """Ours (a referee's finding on the reference run): the reason the test against ``prm_shift_only`` has no power,
    or "". When the attack removes at most ``margin`` of the clean top-1 of both the stochastic PRM and the shift-only
    randomisation (each against its own clean top-1, same protocol), the difference of their top-1 under attack only
    restates the difference of their clean top-1 (the PRM's clean cost): it says nothing about defence, and a PRM
    that costs clean accuracy could never be held. Empty when a row it needs is missing."""
    keys = [
        (d, a, protocol) for d in ("stochastic_prm", "prm_shift_only") for a in ("clean", attack)
    ]
    if any(k not in cell.index for k in keys):
        return ""
    top = {k: float(cell.loc[k].top1) for k in keys}
    drop_prm = (
        top[("stochastic_prm", "clean", protocol)] - top[("stochastic_prm", attack, protocol)]
    )
    drop_shift = (
        top[("prm_shift_only", "clean", protocol)] - top[("prm_shift_only", attack, protocol)]
    )
    if drop_prm > margin or drop_shift > margin:
        return ""
    return (
        f"attack inert: it removed {drop_prm:+.2f} of the PRM's clean top-1 and {drop_shift:+.2f} of the shift-only "
        f"randomisation's (margin {margin:g}), so the test against prm_shift_only only restates their clean top-1 "
        "difference (the PRM's clean cost) and counts as inconclusive"
    )


def p3_defense(
    defense: pd.DataFrame, min_effect: float = 0.05, eot_samples: int | None = None
) -> list[dict]:
    """P3: the stochastic PRM defends, one claim per (model, attack, protocol) (ours: per attack, not a mean of ratios).

    Two tests, both must hold (intersection-union, :func:`pixelrobust.stats.decide_all`), each a paired
    interval over images from ``defense.csv`` (exact for 0/1 scores, else a bootstrap:
    :func:`pixelrobust.stats.paired_diff_ci`) decided with margin ``min_effect`` (ours,
    ``defense_eval.min_effect``: held when the interval lies above it, not held when below):

    * against the undefended reference on the same images: gray-box ``transfer_none`` (the classifier on the
      very images crafted on the PRM stand-in, so what transfer loses does not count as defence); adaptive
      ``none`` under the same attack;
    * against ``prm_shift_only`` (λ = 0, the same draws of passes and shifts) under the same attack and
      protocol: the gain is not what a random shift alone gives (a randomised defence recovers images that a
      minimal-perturbation attack crafted through EOT leaves just past the averaged boundary).

    Gray-box, when the attack did not transfer (the classifier's clean top-1 lies inside ``transfer_none``'s
    Wilson interval, or the room between the PRM's clean top-1 and ``transfer_none``'s is at most the margin)
    the first test can only restate the clean cost: it counts as ``inconclusive`` (no power, with that reason)
    and the shift-only test still decides (so the claim is at best inconclusive, and not held if that test is). Adaptive, a top-1 above the gray-box one is flagged (the adaptive attack is weaker
    than transfer). Each row is its own claim at 95 % (no family-wise correction; read them one by one).
    ``eot_samples`` (``defense_eval.eot_samples``), when given, is named in the adaptive rows' evidence (few
    draws weaken the attack on the randomised defences, docs/decisions.md).
    """
    rows = []
    if defense is None or "effect" not in defense:
        return rows
    for (ds, model), d in defense.groupby(["dataset", "model"], sort=False):
        cell = d.set_index(["defense", "attack", "protocol"])
        for r in d[(d.defense == "stochastic_prm") & (d.attack != "clean")].itertuples():
            n = int(r.n_images)
            clean = (
                cell.loc[("stochastic_prm", "clean", r.protocol)]
                if ("stochastic_prm", "clean", r.protocol) in cell.index
                else None
            )
            cost = (
                ""
                if clean is None
                else (
                    f"; clean top-1 {clean.top1:.2f} against {clean.reference_top1:.2f} undefended "
                    f"(cost {-clean.effect:+.2f}, {-clean.effect_high:+.2f} to {-clean.effect_low:+.2f})"
                )
            )
            shift = (
                cell.loc[("prm_shift_only", r.attack, r.protocol)]
                if ("prm_shift_only", r.attack, r.protocol) in cell.index
                else None
            )
            sh = (
                getattr(r, "shift_effect", np.nan),
                getattr(r, "shift_effect_low", np.nan),
                getattr(r, "shift_effect_high", np.nan),
            )
            v_ref = decide(r.effect_low, r.effect_high, n, min_effect=min_effect)
            v_shift = decide(sh[1], sh[2], n, min_effect=min_effect)
            inert = attack_inert(cell, r.attack, r.protocol, min_effect)
            if inert and v_shift != "too few images":
                v_shift = "inconclusive"
            tests = [
                (
                    v_ref,
                    r.effect_low,
                    r.effect_high,
                    r.effect,
                    f"top-1 minus {r.reference}'s on the same images",
                    r.reference,
                    r.reference_top1,
                ),
                (
                    v_shift,
                    sh[1],
                    sh[2],
                    sh[0],
                    "top-1 minus the shift-only randomisation's (lambda 0, same draws)",
                    "prm_shift_only",
                    np.nan if shift is None else shift.top1,
                ),
            ]
            verdict = decide_all([v_ref, v_shift])
            notes = [inert] if inert else []
            ref_no_power = False
            if shift is None or np.isnan(sh[1]):
                notes.append(
                    "shift-only control missing (a table from before it was run): that test is undecided"
                )
            if r.protocol == "graybox":
                white = cell.top1.get(("none", r.attack, "graybox"), np.nan)
                on_cls = cell.top1.get(("prm_on_classifier", r.attack, "graybox"), np.nan)
                notes.append(
                    f"undefended on images crafted on it {white:.2f}"
                    + (
                        ""
                        if np.isnan(on_cls)
                        else f"; the stochastic PRM on those images {on_cls:.2f} (the baselines' protocol, another null)"
                    )
                )
                if ("transfer_none", r.attack, "graybox") in cell.index:
                    tr = cell.loc[("transfer_none", r.attack, "graybox")]
                    room = (
                        r.clean_top1 - tr.top1
                    )  # the most the PRM can gain on images it keeps clean
                    ref_no_power = (
                        tr.ci_high >= tr.clean_top1 or room <= min_effect
                    ) and verdict != "too few images"
                    if ref_no_power:
                        # only the test against transfer_none loses its power; the shift-only test, on the same
                        # PRM-crafted images, still decides (a "not held" there is not hidden)
                        v_ref = "inconclusive"
                        tests[0] = (v_ref, *tests[0][1:])
                        verdict = decide_all([v_ref, v_shift])
                        notes.append(
                            f"no power against transfer_none: the attack barely transferred from the PRM stand-in "
                            f"(transfer_none {tr.top1:.2f}, {tr.ci_low:.2f}-{tr.ci_high:.2f}, against the clean "
                            f"{tr.clean_top1:.2f}; room left below the PRM's clean top-1 {room:+.2f}, margin "
                            f"{min_effect:g}), so that test can only restate the clean cost and counts as inconclusive"
                        )
            else:
                if eot_samples:
                    notes.append(f"EOT {eot_samples} draws per attack step")
                gray = cell.top1.get(("stochastic_prm", r.attack, "graybox"), np.nan)
                if gray == gray and r.top1 > gray:
                    notes.append(
                        f"adaptive top-1 above the gray-box {gray:.2f}: the adaptive attack is weaker than transfer "
                        "here, so this row underestimates the attack"
                    )
            which = binding([x[:3] for x in tests])
            t = tests[which]
            # the exact detectable effect where the row's test used the exact paired 0/1 interval; none for a test
            # withheld for lack of power against transfer_none (more images would not give it power)
            disc = getattr(r, ("effect_discordant", "shift_discordant")[which], np.nan)
            withheld = (which == 0 and ref_no_power) or (which == 1 and bool(inert))
            det = (
                np.nan
                if withheld
                else None
                if pd.isna(disc)
                else detectable_paired_binary(n, int(disc), min_effect)
            )
            rows.append(
                _row(
                    "P3",
                    f"the stochastic PRM defends against {r.attack} ({r.protocol}{', EOT' if r.protocol == 'adaptive' else ''})",
                    ds,
                    model,
                    verdict,
                    r.n_images,
                    f"top-1 {r.top1:.2f} ({r.ci_low:.2f}-{r.ci_high:.2f}, {r.n_images} images x {r.draws} draws); against "
                    f"{r.reference} {r.reference_top1:.2f}: {r.effect:+.2f} ({r.effect_low:+.2f} to {r.effect_high:+.2f}), {v_ref}; "
                    f"against prm_shift_only {tests[1][6]:.2f}: {sh[0]:+.2f} ({sh[1]:+.2f} to {sh[2]:+.2f}), {v_shift}; margin "
                    f"{min_effect:g}" + "".join(f"; {x}" for x in notes) + cost,
                    statistic=t[4] + " (the verdict also needs the other test, in the evidence)",
                    observed=float(r.top1),
                    control=t[5],
                    control_value=float(t[6]),
                    effect=float(t[3]),
                    ci_low=float(t[1]),
                    ci_high=float(t[2]),
                    threshold=float(min_effect),
                    detectable=det,
                )
            )
    return rows


# ---- synthesis ---------------------------------------------------------------------------------


def synthesis_findings(table: pd.DataFrame) -> list[dict]:
    """Ours: do two maps agree beyond chance? Beyond the permutation null (the same maps of *other* images
    of the model): held when the excess over the null is positive for both the top-k IoU and Spearman's
    rho (intersection-union), with bootstrap intervals over images. The row's effect is the test that
    decides (:func:`pixelrobust.stats.binding`)."""
    rows = []
    for r in table.itertuples():
        n = int(r.n_images)
        iou_v = decide(r.iou_excess_ci_low, r.iou_excess_ci_high, n)
        rho_v = decide(r.spearman_excess_ci_low, r.spearman_excess_ci_high, n)
        tests = [  # (verdict, low, high, effect, statistic, observed, control value)
            (
                iou_v,
                r.iou_excess_ci_low,
                r.iou_excess_ci_high,
                r.iou_excess,
                f"top-{r.topk_percent:g} % IoU, same image minus other images' maps (the verdict also needs Spearman's excess, "
                "in the evidence)",
                r.iou_topk,
                r.iou_null,
            ),
            (
                rho_v,
                r.spearman_excess_ci_low,
                r.spearman_excess_ci_high,
                r.spearman_excess,
                f"Spearman's rho, same image minus other images' maps (the verdict also needs the top-{r.topk_percent:g} % "
                "IoU excess, in the evidence)",
                r.spearman,
                r.spearman_null,
            ),
        ]
        t = tests[binding([x[:3] for x in tests])]
        rows.append(
            _row(
                "Synthesis",
                f"{r.map_a} and {r.map_b} maps agree beyond chance",
                r.dataset,
                r.model,
                decide_all([iou_v, rho_v]),
                n,
                f"top-{r.topk_percent:g} % IoU {r.iou_topk:.3f} vs {r.iou_null:.3f} for other images' maps: excess "
                f"{r.iou_excess:+.3f} ({r.iou_excess_ci_low:+.3f} to {r.iou_excess_ci_high:+.3f}), {iou_v}; Spearman "
                f"{r.spearman:.3f} vs {r.spearman_null:.3f}: excess {r.spearman_excess:+.3f} "
                f"({r.spearman_excess_ci_low:+.3f} to {r.spearman_excess_ci_high:+.3f}), {rho_v}; "
                f"uniform random sets {r.chance_iou:.3f}",
                statistic=t[4],
                observed=float(t[5]),
                control="maps of the other images of the model (permutation null)",
                control_value=float(t[6]),
                effect=float(t[3]),
                ci_low=float(t[1]),
                ci_high=float(t[2]),
            )
        )
    return rows


# ---- the document ------------------------------------------------------------------------------


def _read(path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path else None


def claims_table(
    inputs: dict,
    *,
    ssim_model: str | None,
    ssim_dataset: str | None,
    n_boot: int,
    seed: int,
    iou_margin: float = 0.05,
    iou_ceiling: float = 0.9,
    ordering_max_k: float = 25,
    defense_margin: float = 0.05,
    exclude_models=(),
    eot_samples: int | None = None,
) -> pd.DataFrame:
    """Every claim's verdict from the tables in ``inputs`` (missing keys: that stage did not run). Rows of
    ``exclude_models`` (the adversarially trained models of ``robust_compare.pairs``: the papers' claims are about
    standard models; those models are compared in the robust-vs-standard section, docs/robust.md) are left out."""
    rows = []
    if inputs.get("onepixel_summary"):
        rows += p1_claims(_read(inputs["onepixel_claims"]))
    if inputs.get("ssim_cam_summary"):
        rows += p2_claims(_read(inputs["ssim_cam_summary"]), ssim_model, ssim_dataset)
    if inputs.get("masked_pgd_images"):
        masked = _read(inputs["masked_pgd_images"])
        for claim in (p3_ordering, p3_beyond_geometry):
            for norm in NORM_LABELS:
                if (masked.norm == norm).any():
                    rows += claim(masked, norm, n_boot=n_boot, seed=seed, max_k=ordering_max_k)
    if inputs.get("prm_lambda_sweep_detail"):
        rows += p3_iou(
            _read(inputs["prm_lambda_sweep_detail"]),
            _read(inputs["prm_lambda_sweep_images"]),
            margin=iou_margin,
            n_boot=n_boot,
            seed=seed,
            ceiling=iou_ceiling,
        )
    if inputs.get("defense"):
        rows += p3_defense(
            _read(inputs["defense"]), min_effect=defense_margin, eot_samples=eot_samples
        )
    if inputs.get("synthesis"):
        rows += synthesis_findings(_read(inputs["synthesis"]))
    table = pd.DataFrame(rows, columns=CLAIM_COLUMNS)
    return table[~table.model.isin(list(exclude_models))].reset_index(drop=True)


STAGES = {
    "P1": ("onepixel_summary", "onepixel.models"),
    "P2": ("ssim_cam_summary", "ssim.model"),
    "P3": ("masked_pgd", "masked_pgd.models"),
    "Synthesis": ("synthesis", "synthesis.models"),
}
TITLES = {
    "P1": "P1, regions and one-pixel attacks (Wang et al. 2021)",
    "P2": "P2, the perceptual (SSIM) ball (Pochimireddy et al. 2021)",
    "P3": "P3, input gradients and the PRM (Hwang et al. 2019)",
    "Synthesis": 'Synthesis (ours): the four "where" maps on the same images',
}


def _num(v) -> str:
    return (
        "-"
        if v is None or (isinstance(v, float) and np.isnan(v))
        else f"{v:.3g}"
        if isinstance(v, float)
        else str(v)
    )


def _control(name, value) -> str:
    if not isinstance(name, str) or not name:
        return "**none**"
    return f"{name}: {_num(value)}" if not (isinstance(value, float) and np.isnan(value)) else name


def _effect(effect, lo, hi, threshold=0.0, detectable=np.nan) -> str:
    """The effect cell: estimate and interval; an underpowered row adds the effect the run could have held."""
    if isinstance(effect, float) and np.isnan(effect):
        return "-"
    text = f"{effect:+.3g} ({_num(lo)} to {_num(hi)})"
    if (
        detectable is None
        or (isinstance(detectable, str) and not detectable)
        or pd.isna(detectable)
    ):
        return text
    threshold = (
        0.0 if threshold is None or threshold == "" or pd.isna(threshold) else float(threshold)
    )
    if np.isinf(float(detectable)):
        return f"{text}; underpowered: too few images differ for any effect to be held"
    return (
        f"{text}; underpowered: held needs a true effect ≥ {float(threshold) + float(detectable):+.2g} "
        f"({POWER * 100:.0f} % power)"
    )


ROBUST_TITLE = "Robust vs standard (ours)"
ROBUST_NOTE = (
    "Ours, not a claim of any of the three papers: an adversarially trained model beside a standard one of the "
    "same dataset, compared on the same test images from the stages' saved outputs (docs/robust.md). Rows framed "
    "as a hypothesis get a verdict by the same rule (held / not held / inconclusive / too few images); the others "
    "are descriptive (numbers and a 95 % interval). Not counted in the claim tally above, and the pairs' adversarially "
    "trained models are left out of that tally (the papers' claims are about standard models). Six verdict "
    "rows per pair, each at 95 % with no multiplicity correction: read one held row among many with that in mind."
)


def robust_section(table: pd.DataFrame | None) -> list[str]:
    """SUMMARY.md's "Robust vs standard (ours)" section from ``robust_compare.csv`` (empty when not configured)."""
    if table is None:
        return []
    lines = [f"## {ROBUST_TITLE}", "", ROBUST_NOTE, ""]
    for (ds, s, r), d in table.groupby(["dataset", "standard", "robust"], sort=False):
        lines += [
            f"### {s} (standard) vs {r} (robust), {ds}",
            "",
            "| section | comparison | hypothesis | verdict | images | standard | robust | observed | control | "
            "effect (95 % CI) | evidence |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {x.section} | {x.comparison} | {x.hypothesis if isinstance(x.hypothesis, str) and x.hypothesis else '-'} | "
            f"**{x.verdict}** | {x.n_images} | {_num(x.standard_value)} | {_num(x.robust_value)} | {_num(x.observed)} | "
            f"{_control(x.control, x.control_value) if isinstance(x.control, str) and x.control else '-'} | "
            f"{_effect(x.effect, x.ci_low, x.ci_high)} | {x.evidence if isinstance(x.evidence, str) else ''} |"
            for x in d.itertuples()
        ]
        lines.append("")
    return lines


def render(
    claims: pd.DataFrame,
    inputs: dict,
    *,
    config_sha256: str,
    configfiles: list[str],
    config_yaml: str,
    git_commit: str,
    clean_accuracy: pd.DataFrame | None = None,
    robust: pd.DataFrame | None = None,
    absent: dict[str, list[str]] | None = None,
) -> str:
    """SUMMARY.md's text. ``absent``: per section, what the config leaves out (:func:`left_out`)."""
    counts = claims.verdict.value_counts()
    lines = [
        "# pixelrobust: did the claims hold?",
        "",
        "Generated from `results/tables/` by the `summary` rule. Every claim is tested as an *effect* against a "
        "negative control computed in the same run (column *control*), with a 95 % interval: **held** when the "
        "interval lies above the claim's threshold (by default: beats the control), **not held** when it lies "
        "below, **inconclusive** when it straddles it (no clear difference). Rule and criteria (ours): "
        "docs/verdicts.md and docs/synthesis.md. "
        f"Verdicts need at least {MIN_IMAGES} images; below that the numbers are shown without one. An "
        "inconclusive row whose interval straddles its threshold is underpowered, not negative: its effect cell "
        f"names the smallest true effect this run would have held with {POWER * 100:.0f} % power (`threshold` + `detectable` "
        "in claims.csv); an inconclusive row without it was withheld for the reason its evidence gives.",
        "",
        "Sources: of P1 and P2 only the abstracts could be read, of P3 a blog summary and the authors' code; no "
        "result number of any of the three papers was available, so none is compared here. The claims are tested "
        "as we reconstructed them (docs/sources.md).",
        "",
        "| verdict | claims |",
        "|---|---|",
    ]
    lines += [
        f"| {v} | {int(counts.get(v, 0))} |"
        for v in ("held", "not held", "inconclusive", "too few images")
    ]
    lines += [
        "",
        f"Config sha256 `{config_sha256}` from {', '.join(f'`{c}`' for c in configfiles) or 'the defaults'}; "
        f"git commit `{git_commit}`. The full config is at the end.",
        "",
    ]
    if clean_accuracy is not None:
        lines += ["## Models", "", "| model | dataset | images | top-1 |", "|---|---|---|---|"]
        lines += [
            f"| {r.model} | {r.dataset} | {r.n_images} | {r.top1:.4f} |"
            for r in clean_accuracy.itertuples()
        ]
        lines.append("")
    for paper, title in TITLES.items():
        lines += [f"## {title}", ""]
        if (absent or {}).get(paper):
            lines += [
                f"Left out by this config: {'; '.join(absent[paper])}. The claim rows of what it leaves out are "
                "absent, not failed (a config that lists them runs them).",
                "",
            ]
        rows = claims[claims.paper == paper]
        if rows.empty:
            key, setting = STAGES[paper]
            lines += [
                f"Not run: `{setting}` is empty in this config."
                if not inputs.get(key)
                else "No claim could be evaluated.",
                "",
            ]
            continue
        for claim, d in rows.groupby("claim", sort=False):
            lines += [
                f"### {claim}",
                "",
                "| dataset | model | verdict | images | statistic | observed | control | effect (95 % CI) | evidence |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {r.dataset} | {r.model} | **{r.verdict}** | {r.n_images} | {r.statistic or '-'} | {_num(r.observed)} | "
                f"{_control(r.control, r.control_value)} | {_effect(r.effect, r.ci_low, r.ci_high, r.threshold, r.detectable)} | {r.evidence} |"
                for r in d.itertuples()
            ]
            lines.append("")
    lines += robust_section(robust)
    lines += ["## Config", "", "```yaml", config_yaml.rstrip(), "```", ""]
    return "\n".join(lines)


_RST_SPECIAL = str.maketrans({c: "\\" + c for c in "\\*`_|[]<>:"})


def _rst(text) -> str:
    """``text`` as literal reStructuredText inline content (markup characters escaped, one line).

    Every cell starts with an escaped space, which renders as nothing and stops docutils from reading
    the start of the text as a list item, an enumeration ("A.", "(i)", "1."), a section underline
    ("====") or a directive."""
    s = " ".join(str(text).split()).translate(_RST_SPECIAL)
    return "\\ " + s if s else "\\ "


def _rst_table(header: list[str], rows: list[list], widths: list[int] | None = None) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1"]
    if widths:
        lines.append("   :widths: " + " ".join(str(w) for w in widths))
    lines.append("")
    for row in [header, *rows]:
        lines += [f"   {'*' if i == 0 else ' '} - {_rst(v)}" for i, v in enumerate(row)]
    return lines + [""]


def front_page(
    claims: pd.DataFrame,
    *,
    config_sha256: str,
    configfiles: list[str],
    git_commit: str,
    clean_accuracy: pd.DataFrame | None = None,
    robust: pd.DataFrame | None = None,
) -> str:
    """The HTML report's front page (reStructuredText): the verdict table of SUMMARY.md, the models, the commit.

    ``workflow/report/workflow.rst`` includes it, so the report opens on what SUMMARY.md concludes."""
    counts = claims.verdict.value_counts()
    tally = ", ".join(
        f"{int(counts.get(v, 0))} {v}"
        for v in ("held", "not held", "inconclusive", "too few images")
    )
    lines = [
        FRONT_PAGE_HEADING,
        "-" * len(FRONT_PAGE_HEADING),
        "",
        _rst(
            f"{len(claims)} claim rows: {tally}. Each verdict is an effect against a negative control of the "
            "same run with a 95 % interval (docs/verdicts.md); the evidence for each row is in SUMMARY.md "
            "(category Synthesis) and claims.csv."
        ),
        "",
    ]
    rows = [
        [
            r.paper,
            r.claim,
            r.dataset,
            r.model,
            r.verdict,
            r.n_images,
            _effect(r.effect, r.ci_low, r.ci_high, r.threshold, r.detectable),
            _control(r.control, r.control_value).replace("**", ""),
        ]
        for r in claims.itertuples()
    ]
    if rows:  # a list-table needs a body row
        lines += _rst_table(
            [
                "paper",
                "claim",
                "dataset",
                "model",
                "verdict",
                "images",
                "effect (95 % CI)",
                "control",
            ],
            rows,
            [4, 30, 7, 12, 8, 5, 14, 20],
        )
    if clean_accuracy is not None and len(clean_accuracy):
        lines += ["Models", "------", ""]
        lines += _rst_table(
            ["model", "dataset", "images", "top-1"],
            [
                [r.model, r.dataset, r.n_images, f"{r.top1:.4f}"]
                for r in clean_accuracy.itertuples()
            ],
        )
    if robust is not None and len(robust):
        lines += [ROBUST_TITLE, "-" * len(ROBUST_TITLE), "", _rst(ROBUST_NOTE), ""]
        lines += _rst_table(
            [
                "standard",
                "robust",
                "section",
                "comparison",
                "verdict",
                "images",
                "effect (95 % CI)",
            ],
            [
                [
                    r.standard,
                    r.robust,
                    r.section,
                    r.comparison,
                    r.verdict,
                    r.n_images,
                    _effect(r.effect, r.ci_low, r.ci_high),
                ]
                for r in robust.itertuples()
            ],
            [12, 12, 8, 30, 8, 5, 14],
        )
    lines += [
        "Run",
        "---",
        "",
        _rst(
            f"git commit {git_commit}; config sha256 {config_sha256} from "
            f"{', '.join(configfiles) or 'the defaults'} (the full config is at the end of SUMMARY.md)."
        ),
        "",
    ]
    return "\n".join(lines)


# SUMMARY section -> the stage model lists whose left-out models lose that section's claim rows
LEFT_OUT_KEYS = {
    "P1": ["onepixel.models"],
    "P3": ["masked_pgd.models", "prm.models", "defense_eval.models"],
    "Synthesis": ["synthesis.models"],
}
STAGE_NAMES = {
    "onepixel": "the one-pixel search",
    "masked_pgd": "masked PGD",
    "prm": "the PRM",
    "defense_eval": "the defence table",
    "synthesis": "the synthesis",
}


def left_out(config: dict) -> dict[str, list[str]]:
    """Per SUMMARY section, what this config leaves out, as facts about this config alone: for each stage
    whose model list names some of the models the config defines (the robust pairs' robust models aside, they
    are not the papers' models), the models it runs and those it does not; and the defence table's attacks
    (those with settings) that ``defense_eval.attacks`` does not name. Their claim rows are absent, not
    failed, and SUMMARY says so (e.g. the CPU-sized default). An empty list is a stage that is off: "Not run"
    says that."""
    robust = set(robust_models(config))
    models = [m for m in config.get("models") or {} if m not in robust]
    out: dict[str, list[str]] = {}
    for paper, keys in LEFT_OUT_KEYS.items():
        for key in keys:
            section, field = key.split(".")
            listed = (config.get(section) or {}).get(field) or []
            missing = [m for m in models if m not in listed]
            if listed and missing:
                out.setdefault(paper, []).append(
                    f"it runs {STAGE_NAMES[section]} (`{key}`) on {', '.join(listed)}, not on "
                    f"{', '.join(missing)} (models it defines)"
                )
    de = config.get("defense_eval") or {}
    if de.get("models"):
        attacks = de.get("attacks") or []
        missing = [a for a in de.get("attack_settings") or {} if a not in attacks]
        if missing:
            out.setdefault("P3", []).append(
                f"the defence table (`defense_eval.attacks`) runs {', '.join(attacks)}, not "
                f"{', '.join(missing)} (attacks with settings in `defense_eval.attack_settings`)"
            )
    return out


def robust_models(config: dict) -> list[str]:
    """The adversarially trained models of ``robust_compare.pairs`` (left out of the claim tally)."""
    return [p["robust"] for p in (config.get("robust_compare") or {}).get("pairs", [])]


def summary(
    *,
    inputs: dict,
    out: dict,
    config: dict,
    config_sha256: str,
    configfiles: list[str],
    ssim_dataset: str | None,
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """Rule ``summary``: ``results/SUMMARY.md`` (``out["md"]``), ``results/tables/claims.csv``
    (``out["claims"]``) and the report's front page (``out["front"]``) from the tables ``inputs`` (the rule's
    inputs by name)."""
    claims = claims_table(
        inputs,
        ssim_model=config["ssim"]["model"],
        ssim_dataset=ssim_dataset,
        n_boot=n_boot,
        seed=seed,
        iou_margin=config["prm"]["sweep"]["accuracy_margin"],
        iou_ceiling=config["prm"]["sweep"]["control_iou_ceiling"],
        ordering_max_k=config["masked_pgd"]["verdict_max_k"],
        defense_margin=config["defense_eval"]["min_effect"],
        exclude_models=robust_models(config),
        eot_samples=config["defense_eval"].get("eot_samples"),
    )
    write_table(claims, out["claims"])
    commit = git_commit()
    robust = _read(inputs.get("robust_compare"))
    text = render(
        claims,
        inputs,
        config_sha256=config_sha256,
        configfiles=configfiles,
        config_yaml=yaml.safe_dump(config, sort_keys=False),
        git_commit=commit,
        clean_accuracy=_read(inputs.get("clean_accuracy")),
        robust=robust,
        absent=left_out(config),
    )
    with atomic_path(out["md"], suffix=".md") as tmp:
        Path(tmp).write_text(text)
    if out.get("front"):
        page = front_page(
            claims,
            config_sha256=config_sha256,
            configfiles=configfiles,
            git_commit=commit,
            clean_accuracy=_read(inputs.get("clean_accuracy")),
            robust=robust,
        )
        with atomic_path(out["front"], suffix=".rst") as tmp:
            Path(tmp).write_text(page)
    return claims


__all__ = [
    "CLAIM_COLUMNS",
    "MIN_IMAGES",
    "attack_inert",
    "claims_table",
    "front_page",
    "left_out",
    "p1_claims",
    "p2_claims",
    "p3_defense",
    "p3_iou",
    "p3_ordering",
    "p3_beyond_geometry",
    "render",
    "robust_models",
    "robust_section",
    "summary",
    "synthesis_findings",
]
