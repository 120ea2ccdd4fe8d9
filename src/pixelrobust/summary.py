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
from scipy import stats

MIN_IMAGES = 10  # ours: fewer images give numbers but no verdict
CLAIM_COLUMNS = ["paper", "claim", "dataset", "model", "verdict", "n_images", "evidence"]


def _boot_mean(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean with its 95 % percentile-bootstrap interval (NaN interval below two values)."""
    from .map_compare import bootstrap_ci

    v = np.asarray(values, float)
    return (float(v.mean()) if len(v) else np.nan, *bootstrap_ci(v, n_boot, rng))


def _threshold_verdict(lo: float, hi: float, n: int, *, below: bool, threshold: float) -> str:
    """``held`` if the interval lies on the claimed side of ``threshold``, ``not held`` if on the other."""
    if n < MIN_IMAGES:
        return "too few images"
    if np.isnan(lo):
        return "inconclusive"
    if below:
        return "held" if hi < threshold else "not held" if lo > threshold else "inconclusive"
    return "held" if lo > threshold else "not held" if hi < threshold else "inconclusive"


def _row(paper, claim, dataset, model, verdict, n, evidence) -> dict:
    return {"paper": paper, "claim": claim, "dataset": dataset, "model": model, "verdict": verdict, "n_images": int(n),
            "evidence": evidence}


# ---- P1 ----------------------------------------------------------------------------------------


def region_counts(regions: pd.DataFrame) -> pd.DataFrame:
    """Per image: regions searched (R) and regions holding a vulnerable pixel (v)."""
    r = regions[regions.n_searched > 0]
    return r.groupby(["dataset", "model", "image_id"], sort=False).agg(
        R=("region_id", "size"), v=("n_vulnerable", lambda s: int((s > 0).sum()))).reset_index()


def search_share(R: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Expected share of an image's regions searched, in random order and each whole, until one holds a
    vulnerable pixel: the first of v marked among R sits at position (R + 1) / (v + 1) on average."""
    return (R + 1) / (v + 1) / R


def p1_claims(summary: pd.DataFrame, regions: pd.DataFrame, n_boot: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    counts = region_counts(regions)
    for s in summary.itertuples():
        c = counts[(counts.model == s.model) & (counts.v > 0)]
        found = f"exhaustive success {s.exhaustive_success:.2f} of {s.n_images} images"
        share, lo, hi = _boot_mean(search_share(c.R.to_numpy(float), c.v.to_numpy(float)), n_boot, rng)
        multi, mlo, mhi = _boot_mean((c.v >= 2).to_numpy(float), n_boot, rng)
        if len(c):
            some = (f"region by region in random order, an attackable image needs {share:.2f} of its regions searched on "
                    f"average (95 % CI {lo:.2f}-{hi:.2f}; whole-image search: 1); {found}")
            scattered = (f"{multi:.2f} of attackable images have vulnerable pixels in >= 2 regions (95 % CI {mlo:.2f}-"
                         f"{mhi:.2f}); median {s.median_vulnerable_pixels:g} vulnerable pixels per image")
        else:
            some = scattered = f"no attackable image: {found}"
        rows.append(_row("P1", "searching only some pixels is enough", s.dataset, s.model,
                         _threshold_verdict(lo, hi, len(c), below=True, threshold=0.5), len(c), some))
        rows.append(_row("P1", "vulnerable points are scattered over several regions", s.dataset, s.model,
                         _threshold_verdict(mlo, mhi, len(c), below=False, threshold=0.5), len(c), scattered))
        parts, sig = [], []
        for score in ("occlusion", "cam"):
            rho, clo, chi = (getattr(s, f"spearman_{score}{x}") for x in ("", "_ci_low", "_ci_high"))
            parts.append(f"Spearman rho(vulnerable share, {score}) = {rho:.2f} (95 % CI {clo:.2f} to {chi:.2f})")
            sig.append(not np.isnan(clo) and (clo > 0 or chi < 0))
        n = int(s.n_images)
        verdict = "too few images" if n < MIN_IMAGES else "held" if any(sig) else "not held"
        rows.append(_row("P1", "a region's robustness varies with its semantic content", s.dataset, s.model, verdict, n,
                         "; ".join(parts)))
    return rows


# ---- P2 ----------------------------------------------------------------------------------------


def p2_claims(ssim_summary: pd.DataFrame, model: str, dataset: str) -> list[dict]:
    """P2: the SSIM ball's change maps are more aligned with Grad-CAM++ than PGD's (paired bootstrap)."""
    paired = ssim_summary[ssim_summary.baseline.fillna("") != ""]
    if paired.empty:
        return [_row("P2", "imperceptible (SSIM-ball) perturbations change the regions that drive the decision more than "
                     "PGD's", dataset, model, "too few images", 0, "no paired comparison in ssim_cam_summary")]
    n = int(paired.n_images.min())
    verdicts = paired.verdict.tolist()
    more = sum(v.startswith("SSIM ball more") for v in verdicts)
    less = sum(v.startswith("SSIM ball less") for v in verdicts)
    if n < MIN_IMAGES:
        verdict = "too few images"
    else:
        verdict = "held" if more > len(verdicts) / 2 else "not held" if more == 0 else "inconclusive"
    evidence = "; ".join(f"{r.metric} vs {r.baseline}: {r.mean:+.2f} ({r.ci_low:+.2f} to {r.ci_high:+.2f})"
                         for r in paired.itertuples())
    return [_row("P2", "imperceptible (SSIM-ball) perturbations change the regions that drive the decision more than PGD's",
                 dataset, model, verdict, n,
                 f"SSIM ball - PGD paired differences, more aligned on {more}, less on {less} of {len(verdicts)}: {evidence}")]


# ---- P3 ----------------------------------------------------------------------------------------


def p3_ordering(masked: pd.DataFrame, norm: str) -> list[dict]:
    """P3: PGD on the top-gradient pixels hurts more than on the bottom ones, at every k < 100 %."""
    rows = []
    for (ds, model), d in masked.groupby(["dataset", "model"], sort=False):
        t = d.pivot_table(index="k_percent", columns="mask", values="top1")
        t = t[t.index < 100]
        wins = int((t["top"] < t["bottom"]).sum())
        n = int(d.n_images.iloc[0])
        verdict = "too few images" if n < MIN_IMAGES else "held" if wins == len(t) else "not held"
        detail = ", ".join(f"k {k:g} %: top {r.top:.2f} / random {r.random:.2f} / bottom {r.bottom:.2f}"
                           if "random" in t else f"k {k:g} %: top {r.top:.2f} / bottom {r.bottom:.2f}"
                           for k, r in t.iterrows())
        rows.append(_row("P3", f"ordering: {norm} PGD on top-gradient pixels beats bottom-gradient pixels", ds, model, verdict, n,
                         f"top-1 under attack, top < bottom at {wins} of {len(t)} k: {detail}"))
    return rows


def p3_iou(sweep: pd.DataFrame, detail: pd.DataFrame) -> list[dict]:
    """P3: the IoU of the PRM output's top-gradient pixels with the read lattice rises with λ above chance."""
    rows = []
    for (ds, model), d in sweep.groupby(["dataset", "model"], sort=False):
        d = d.sort_values("lambda")
        det = detail[detail.model == model]
        chance = float(det.chance_iou.iloc[0])
        n = int(det.n_images.iloc[0])
        rho = float(stats.spearmanr(d["lambda"], d.iou)[0]) if d.iou.nunique() > 1 else np.nan
        top = float(d.iou.iloc[-1])
        ok = top > chance and rho > 0
        verdict = "too few images" if n < MIN_IMAGES else "held" if ok else "not held"
        rows.append(_row("P3", "IoU of the top-gradient pixels with the PRM lattice rises with lambda above chance", ds, model,
                         verdict, n, f"IoU {d.iou.iloc[0]:.2f} at lambda {d['lambda'].iloc[0]:g} -> {top:.2f} at "
                         f"{d['lambda'].iloc[-1]:g} (chance {chance:.2f}, Spearman rho {rho:.2f}); top-1 "
                         f"{d.top1.iloc[0]:.2f} -> {d.top1.iloc[-1]:.2f}"))
    return rows


def p3_defense(defense: pd.DataFrame) -> list[dict]:
    """P3: the stochastic PRM recovers most of what gray-box attacks take (mean defence rate >= 0.5)."""
    rows = []
    for (ds, model), d in defense.groupby(["dataset", "model"], sort=False):
        n = int(d.n_images.iloc[0])
        rates = {}
        for proto in ("graybox", "adaptive"):
            p = d[(d.protocol == proto) & (d.attack != "clean") & (d.defense != "none")]
            rates[proto] = p.groupby("defense", sort=False).defense_rate.mean()
        gray = rates["graybox"]
        if "stochastic_prm" not in gray or np.isnan(gray["stochastic_prm"]):
            continue
        prm = float(gray["stochastic_prm"])
        verdict = "too few images" if n < MIN_IMAGES else "held" if prm >= 0.5 else "not held"
        others = ", ".join(f"{k} {v:.2f}" for k, v in gray.items() if k != "stochastic_prm")
        adaptive = rates["adaptive"].get("stochastic_prm", np.nan)
        rows.append(_row("P3", "the stochastic PRM defends against gray-box attacks (mean defence rate >= 0.5)", ds, model,
                         verdict, n, f"mean gray-box defence rate over 5 attacks: stochastic PRM {prm:.2f} (others: {others}); "
                         f"adaptive (EOT, ours): {adaptive:.2f}"))
    return rows


# ---- synthesis ---------------------------------------------------------------------------------


def synthesis_findings(table: pd.DataFrame) -> list[dict]:
    """Ours: do two maps agree beyond chance (top-k IoU interval above the random-set IoU)?"""
    rows = []
    for r in table.itertuples():
        n = int(r.n_images)
        if n < MIN_IMAGES:
            verdict = "too few images"
        elif np.isnan(r.iou_ci_low):
            verdict = "inconclusive"
        else:
            verdict = "held" if r.iou_ci_low > r.chance_iou else "not held" if r.iou_ci_high < r.chance_iou else "inconclusive"
        rows.append(_row("Synthesis", f"{r.map_a} and {r.map_b} maps agree beyond chance", r.dataset, r.model, verdict, n,
                         f"top-{r.topk_percent:g} % IoU {r.iou_topk:.2f} ({r.iou_ci_low:.2f}-{r.iou_ci_high:.2f}; chance "
                         f"{r.chance_iou:.2f}); Spearman {r.spearman:.2f} ({r.ci_low:.2f} to {r.ci_high:.2f})"))
    return rows


# ---- the document ------------------------------------------------------------------------------


def _read(path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path else None


def claims_table(inputs: dict, *, ssim_model: str | None, ssim_dataset: str | None, n_boot: int, seed: int) -> pd.DataFrame:
    """Every claim's verdict from the tables in ``inputs`` (missing keys: that stage did not run)."""
    rows = []
    if inputs.get("onepixel_summary"):
        rows += p1_claims(_read(inputs["onepixel_summary"]), _read(inputs["onepixel_regions"]), n_boot, seed)
    if inputs.get("ssim_cam_summary"):
        rows += p2_claims(_read(inputs["ssim_cam_summary"]), ssim_model, ssim_dataset)
    for key, norm in (("masked_pgd", "L-inf"), ("masked_pgd_l2", "L2")):
        if inputs.get(key):
            rows += p3_ordering(_read(inputs[key]), norm)
    if inputs.get("prm_lambda_sweep"):
        rows += p3_iou(_read(inputs["prm_lambda_sweep"]), _read(inputs["prm_lambda_sweep_detail"]))
    if inputs.get("defense"):
        rows += p3_defense(_read(inputs["defense"]))
    if inputs.get("synthesis"):
        rows += synthesis_findings(_read(inputs["synthesis"]))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


STAGES = {"P1": ("onepixel_summary", "onepixel.models"), "P2": ("ssim_cam_summary", "ssim.model"),
          "P3": ("masked_pgd", "masked_pgd.models"), "Synthesis": ("synthesis", "synthesis.models")}
TITLES = {"P1": "P1, regions and one-pixel attacks (Wang et al. 2021)",
          "P2": "P2, the perceptual (SSIM) ball (Pochimireddy et al. 2021)",
          "P3": "P3, input gradients and the PRM (Hwang et al. 2019)",
          "Synthesis": "Synthesis (ours): the four \"where\" maps on the same images"}


def render(claims: pd.DataFrame, inputs: dict, *, config_sha256: str, configfiles: list[str], config_yaml: str,
           git_commit: str, clean_accuracy: pd.DataFrame | None = None) -> str:
    counts = claims.verdict.value_counts()
    lines = ["# pixelrobust: did the claims hold?", "",
             "Generated from `results/tables/` by the `summary` rule; verdict criteria (ours) in docs/synthesis.md. "
             f"Verdicts need at least {MIN_IMAGES} images; below that the numbers are shown without one.", "",
             "| verdict | claims |", "|---|---|"]
    lines += [f"| {v} | {int(counts.get(v, 0))} |" for v in ("held", "not held", "inconclusive", "too few images")]
    lines += ["", f"Config sha256 `{config_sha256}` from {', '.join(f'`{c}`' for c in configfiles) or 'the defaults'}; "
              f"git commit `{git_commit}`. The full config is at the end.", ""]
    if clean_accuracy is not None:
        lines += ["## Models", "", "| model | dataset | images | top-1 |", "|---|---|---|---|"]
        lines += [f"| {r.model} | {r.dataset} | {r.n_images} | {r.top1:.4f} |" for r in clean_accuracy.itertuples()]
        lines.append("")
    for paper, title in TITLES.items():
        lines += [f"## {title}", ""]
        rows = claims[claims.paper == paper]
        if rows.empty:
            key, setting = STAGES[paper]
            lines += [f"Not run: `{setting}` is empty in this config." if not inputs.get(key) else "No claim could be evaluated.", ""]
            continue
        for claim, d in rows.groupby("claim", sort=False):
            lines += [f"### {claim}", "", "| dataset | model | verdict | images | evidence |", "|---|---|---|---|---|"]
            lines += [f"| {r.dataset} | {r.model} | **{r.verdict}** | {r.n_images} | {r.evidence} |" for r in d.itertuples()]
            lines.append("")
    lines += ["## Config", "", "```yaml", config_yaml.rstrip(), "```", ""]
    return "\n".join(lines)


def run_summary(inputs: dict, out: dict, *, config: dict, config_sha256: str, configfiles: list[str],
                ssim_dataset: str | None, n_boot: int, seed: int) -> pd.DataFrame:
    """Rule ``summary``: ``results/SUMMARY.md`` and ``results/tables/claims.csv``."""
    import yaml

    from .io import atomic_path, write_table
    from .provenance import git_commit

    claims = claims_table(inputs, ssim_model=config["ssim"]["model"], ssim_dataset=ssim_dataset, n_boot=n_boot, seed=seed)
    write_table(claims, out["claims"])
    text = render(claims, inputs, config_sha256=config_sha256, configfiles=configfiles,
                  config_yaml=yaml.safe_dump(config, sort_keys=False), git_commit=git_commit(),
                  clean_accuracy=_read(inputs.get("clean_accuracy")))
    with atomic_path(out["md"], suffix=".md") as tmp:
        Path(tmp).write_text(text)
    return claims


__all__ = ["CLAIM_COLUMNS", "MIN_IMAGES", "claims_table", "p1_claims", "p2_claims", "p3_defense", "p3_iou", "p3_ordering",
           "region_counts", "render", "run_summary", "search_share", "synthesis_findings"]
