"""Shared statistics of the verdicts: intervals, the minimum-images gate and the one verdict rule.

Every claim in ``results/tables/claims.csv`` is decided the same way (ours, docs/verdicts.md):

* the claim is turned into an **effect** oriented so that a positive value is what the claim says,
  measured *against a negative control from the same run* (an untrained model, maps of other images, a
  random region of the same size, the undefended model on the same inputs), with a 95 % interval;
* ``held`` when the interval lies above ``min_effect`` (by default 0: the claim beats its control);
* ``not held`` when the interval lies below ``min_effect`` (the effect, if any, is smaller than the
  smallest effect the claim needs: with ``min_effect`` 0 this means the control is significantly *better*);
* ``inconclusive`` otherwise ("no clear difference" is never "not held");
* ``too few images`` below :data:`MIN_IMAGES` units of resampling.

An inconclusive verdict carries :func:`detectable_effect`: how far from the threshold the true effect would have
had to be for this run to decide it (80 % power), so that "no clear difference" says how large a difference the
run could have seen.

Where several tests decide one claim, :func:`decide_all` applies the intersection-union rule: the claim
holds only if every test holds at the full level (no correction is needed for an "all of" claim), it is
not held if any test is not held, and inconclusive otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _st

MIN_IMAGES = 10  # ours: fewer units of resampling give numbers but no verdict
LEVEL = 0.95
POWER = 0.8  # ours: the power at which detectable_effect is quoted
VERDICTS = ("held", "not held", "inconclusive", "too few images")


# ---- intervals ---------------------------------------------------------------------------------


def bootstrap_ci(
    values: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (NaNs dropped; NaN below two values)."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return (np.nan, np.nan)
    means = rng.choice(v, size=(n_boot, len(v)), replace=True).mean(1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def boot_mean(
    values: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = LEVEL
) -> tuple[float, float, float]:
    """Mean with its percentile-bootstrap interval: ``(mean, low, high)``."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    return (float(v.mean()) if len(v) else np.nan, *bootstrap_ci(v, n_boot, rng, level))


def boot_stat(
    units: Sequence,
    stat: Callable[[Sequence], float],
    n_boot: int,
    rng: np.random.Generator,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """Any statistic of a list of resampling units (images), with a percentile bootstrap over the units."""
    units = list(units)
    if not units:
        return (np.nan, np.nan, np.nan)
    est = float(stat(units))
    if len(units) < 2:
        return (est, np.nan, np.nan)
    boots = np.array(
        [stat([units[i] for i in rng.integers(0, len(units), len(units))]) for _ in range(n_boot)],
        float,
    )
    boots = boots[~np.isnan(boots)]
    if not len(boots):
        return (est, np.nan, np.nan)
    return (
        est,
        float(np.quantile(boots, (1 - level) / 2)),
        float(np.quantile(boots, (1 + level) / 2)),
    )


def wilson_ci(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (NaN for n = 0)."""
    if n <= 0:
        return (np.nan, np.nan)
    z = float(_st.norm.ppf((1 + level) / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return float(lo), float(hi)


def newcombe_diff_ci(
    k1: int, n1: int, k2: int, n2: int, level: float = LEVEL
) -> tuple[float, float, float]:
    """Difference of two independent proportions ``k1/n1 - k2/n2`` with Newcombe's hybrid score interval
    (method 10), built from the two Wilson intervals: ``(difference, low, high)``."""
    if n1 <= 0 or n2 <= 0:
        return (np.nan, np.nan, np.nan)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_ci(k1, n1, level)
    l2, u2 = wilson_ci(k2, n2, level)
    d = p1 - p2
    lo = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return float(d), float(lo), float(hi)


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion ``k / n`` (NaN for n = 0)."""
    if n <= 0:
        return (np.nan, np.nan)
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(_st.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(_st.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def paired_binary_ci(
    a: np.ndarray, b: np.ndarray, level: float = LEVEL
) -> tuple[float, float, float]:
    """Difference of two paired 0/1 outcomes, mean(a) - mean(b), with an exact-conservative interval.

    Of n pairs, m are discordant and k of those have a = 1, b = 0; the difference is q(2π − 1) with q the share
    of discordant pairs and π the share of those in favour of a. Clopper-Pearson intervals for q (k of n) and
    for π (k of m; all of [0, 1] when m = 0), each at (1 + level)/2, bound the difference by the corners of that
    box (Bonferroni, so the coverage is at least ``level``). Against 0 it is the exact sign test on the
    discordant pairs at (1 + level)/2 (7 of 7 in one direction exclude 0, 6 of 6 do not); unlike the
    conditional McNemar interval it also bounds the effect's size, so a margin above 0 can be tested (no
    discordant pair among 20 gives about ±0.2, not [0, 0]). The percentile bootstrap is anti-conservative here
    when few pairs differ (4 of 4 in one direction passed it)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = len(a)
    if n == 0:
        return (np.nan, np.nan, np.nan)
    k = int(((a == 1) & (b == 0)).sum())
    m = k + int(((a == 0) & (b == 1)).sum())
    d = float(a.mean() - b.mean())
    inner = (1 + level) / 2
    qlo, qhi = clopper_pearson(m, n, inner)
    plo, phi = clopper_pearson(k, m, inner) if m else (0.0, 1.0)
    lo_s, hi_s = 2 * plo - 1, 2 * phi - 1
    lo = qlo * lo_s if lo_s >= 0 else qhi * lo_s
    hi = qhi * hi_s if hi_s >= 0 else qlo * hi_s
    return d, float(lo), float(hi)


def _binary(v: np.ndarray) -> bool:
    v = v[~np.isnan(v)]
    return bool(len(v)) and bool(np.isin(v, (0.0, 1.0)).all())


def paired_diff_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = LEVEL
) -> tuple[float, float, float]:
    """Mean of the paired differences ``a - b`` (same units, e.g. images) with a 95 % interval: exact
    (:func:`paired_binary_ci`) when both are 0/1 outcomes, else a percentile bootstrap over the pairs."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if _binary(a) and _binary(b):
        return paired_binary_ci(a, b, level)
    diff = a - b
    diff = diff[~np.isnan(diff)]
    if (
        len(diff) >= 2
        and np.all(diff == diff[0])
        and np.all((a[~np.isnan(a)] >= 0) & (a[~np.isnan(a)] <= 1))
        and np.all((b[~np.isnan(b)] >= 0) & (b[~np.isnan(b)] <= 1))
    ):
        # every pair differs by the same amount (e.g. identical rows): the bootstrap's zero-width interval says
        # nothing about the images not seen; bound the share of images that could differ as for 0/1 outcomes
        # (Clopper-Pearson upper end for none of n) and let each move the mean by at most 1 + |difference|
        q = clopper_pearson(0, len(diff), (1 + level) / 2)[1] * (1 + abs(float(diff[0])))
        return float(diff[0]), float(max(diff[0] - q, -1.0)), float(min(diff[0] + q, 1.0))
    return boot_mean(diff, n_boot, rng, level)


# ---- the verdict rule --------------------------------------------------------------------------


def decide(
    low: float, high: float, n: int, *, min_effect: float = 0.0, min_images: int = MIN_IMAGES
) -> str:
    """The one verdict rule for an effect oriented so that positive is what the claim says (module doc)."""
    if n < min_images:
        return "too few images"
    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return "inconclusive"
    if low > min_effect:
        return "held"
    if high < min_effect:
        return "not held"
    return "inconclusive"


def detectable_effect(low: float, high: float, level: float = LEVEL, power: float = POWER) -> float:
    """How far beyond the threshold a true effect would have to lie for an interval as wide as ``[low, high]`` to
    decide it with probability ``power`` (ours): ``(z_(1+level)/2 + z_power) · SE`` with the standard error read off
    the interval, ``SE = (high − low) / (2 z_(1+level)/2)``; at 95 % and 80 % power 1.43 times the half width. A
    normal approximation, for the percentile-bootstrap intervals (close to symmetric at the sizes that decide); the
    exact paired 0/1 interval has its own, :func:`detectable_paired_binary`. NaN when a bound is NaN or the interval
    has no width (a constant difference: no sampling spread to size)."""
    if low is None or high is None or np.isnan(low) or np.isnan(high) or not high > low:
        return float("nan")
    z = _st.norm.ppf((1 + level) / 2)
    return float((z + _st.norm.ppf(power)) * (high - low) / (2 * z))


def detectable_paired_binary(
    n: int, discordant: int, threshold: float = 0.0, level: float = LEVEL, power: float = POWER
) -> float:
    """:func:`detectable_effect` for :func:`paired_binary_ci`, exactly (ours): with the share of pairs that differ
    held at the observed ``discordant / n``, the smallest true effect ``q (2π − 1)`` at which the interval's lower
    end exceeds ``threshold`` (a ``held``) with probability ``power``, minus ``threshold``; the probability is summed
    over every outcome (discordant pairs binomial in n, those in favour binomial in the discordant). ``inf`` when
    even π = 1 (every differing pair in favour) does not reach that power: too few pairs differ for any effect to
    be decided; with none differing (a tie) that is always so. NaN for n = 0."""
    if n <= 0:
        return float("nan")
    q = discordant / n
    if q == 0:
        return float("inf")
    inner = (1 + level) / 2
    a = (1 - inner) / 2
    # the discordant counts with non-negligible probability (binomial tail below 1e-12 dropped)
    m = np.arange(n + 1)
    pm = _st.binom.pmf(m, n, q)
    m, pm = m[pm > 1e-12], pm[pm > 1e-12]
    k = np.arange(m.max() + 1)
    mm, kk = np.meshgrid(m, k, indexing="ij")
    valid = kk <= mm
    # the interval's lower end for each (m, k), as paired_binary_ci computes it
    qlo = np.where(m > 0, _st.beta.ppf(a, np.maximum(m, 1), n - m + 1), 0.0)[:, None]
    qhi = np.where(m < n, _st.beta.ppf(1 - a, m + 1, np.maximum(n - m, 1)), 1.0)[:, None]
    with np.errstate(invalid="ignore"):
        plo = np.where(kk > 0, _st.beta.ppf(a, np.maximum(kk, 1), np.maximum(mm - kk + 1, 1)), 0.0)
    plo = np.where(mm > 0, plo, 0.0)
    lo_s = 2 * plo - 1
    low = np.where(lo_s >= 0, qlo * lo_s, qhi * lo_s)
    held = valid & (low > threshold)

    def power_at(pi: float) -> float:
        pk = np.where(valid, _st.binom.pmf(kk, mm, pi), 0.0)
        return float((pm * (pk * held).sum(1)).sum())

    if power_at(1.0) < power:
        return float("inf")
    lo_pi, hi_pi = 0.5, 1.0
    for _ in range(40):
        mid = (lo_pi + hi_pi) / 2
        lo_pi, hi_pi = (mid, hi_pi) if power_at(mid) < power else (lo_pi, mid)
    return float(q * (2 * hi_pi - 1) - threshold)


def discordant(a: np.ndarray, b: np.ndarray) -> float:
    """The pairs whose outcomes differ when :func:`paired_diff_ci` takes the exact paired 0/1 interval (both sides
    0/1), else NaN (a bootstrap interval: :func:`detectable_effect` applies)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not (_binary(a) and _binary(b)):
        return float("nan")
    keep = ~(np.isnan(a) | np.isnan(b))
    return float((a[keep] != b[keep]).sum())


def detectable_paired(
    a: np.ndarray, b: np.ndarray, low: float, high: float, threshold: float = 0.0
) -> float:
    """The detectable distance beyond ``threshold`` for an effect from :func:`paired_diff_ci` of ``a`` and ``b``
    with interval ``[low, high]``: exact for paired 0/1 outcomes, the normal approximation otherwise."""
    m = discordant(a, b)
    if np.isnan(m):
        return detectable_effect(low, high)
    a, b = np.asarray(a, float), np.asarray(b, float)
    return detectable_paired_binary(int((~(np.isnan(a) | np.isnan(b))).sum()), int(m), threshold)


def decide_all(verdicts: Sequence[str]) -> str:
    """Intersection-union combination of several tests that must all hold for one claim."""
    verdicts = list(verdicts)
    if not verdicts or "too few images" in verdicts:
        return "too few images"
    if all(v == "held" for v in verdicts):
        return "held"
    if any(v == "not held" for v in verdicts):
        return "not held"
    return "inconclusive"


def binding(tests: Sequence[tuple[str, float, float]]) -> int:
    """Index of the test that decides a :func:`decide_all` claim, for the headline numbers of its row.

    ``tests`` holds ``(verdict, ci_low, ci_high)`` per test. If any test is ``not held``, the not-held
    one with the smallest ``ci_high`` (the clearest failure); otherwise, if any is ``inconclusive``, the
    inconclusive one with the smallest ``ci_low``; otherwise (all held, or too few images) the test with
    the smallest ``ci_low`` (the weakest). NaN bounds sort last."""
    tests = list(tests)
    if not tests:
        raise ValueError("binding: no tests")

    def smallest(candidates: list[int], pos: int) -> int:
        vals = [tests[i][pos] for i in candidates]
        keys = [np.inf if v is None or np.isnan(v) else float(v) for v in vals]
        return candidates[int(np.argmin(keys))]

    for verdict, pos in (("not held", 2), ("inconclusive", 1)):
        hit = [i for i, t in enumerate(tests) if t[0] == verdict]
        if hit:
            return smallest(hit, pos)
    return smallest(list(range(len(tests))), 1)


__all__ = [
    "LEVEL",
    "MIN_IMAGES",
    "POWER",
    "VERDICTS",
    "binding",
    "boot_mean",
    "boot_stat",
    "bootstrap_ci",
    "clopper_pearson",
    "decide",
    "decide_all",
    "detectable_effect",
    "detectable_paired",
    "detectable_paired_binary",
    "discordant",
    "newcombe_diff_ci",
    "paired_binary_ci",
    "paired_diff_ci",
    "two_level_boot",
    "wilson_ci",
]


def two_level_boot(
    own: np.ndarray, copies: np.ndarray, n_boot: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Mean over images of ``own[i] − mean over copies of copies[c, i]`` with a two-level percentile bootstrap
    (ours): each replicate draws the images with replacement **and** the K copies with replacement, and the
    reference of an image is the mean over the drawn copies that define it (NaN entries of ``copies``: a copy
    that does not define an image drops out for that image only), so the choice of the untrained
    copies is in the interval as well as that of the images. ``own``: N; ``copies``: K × N. Images where ``own``
    or every copy is undefined are left out; ``(estimate, low, high)``, NaN interval below two images. With one
    copy it is the images-only bootstrap of the per-image differences."""
    own = np.asarray(own, float)
    copies = np.atleast_2d(np.asarray(copies, float))
    ok_c = np.isfinite(copies)
    count = ok_c.sum(0)
    ref = np.where(count > 0, np.where(ok_c, copies, 0.0).sum(0) / np.maximum(count, 1), np.nan)
    keep = np.isfinite(own) & np.isfinite(ref)
    own, vals, ok_c = own[keep], np.where(ok_c, copies, 0.0)[:, keep], ok_c[:, keep].astype(float)
    n, k = len(own), len(copies)
    est = float((own - ref[keep]).mean()) if n else np.nan
    if n < 2:
        return est, np.nan, np.nan
    # per replicate: how often each copy is drawn (w, B × K) and the images drawn (ii, B × N)
    draws = rng.integers(0, k, (n_boot, k))
    w = np.stack([np.bincount(c, minlength=k) for c in draws]).astype(float)
    ii = rng.integers(0, n, (n_boot, n))
    den = w @ ok_c  # B × N: per replicate and image, the drawn copies that define it
    ref_b = np.where(den > 0, (w @ vals) / np.maximum(den, 1), np.nan)
    d = own[ii] - np.take_along_axis(ref_b, ii, axis=1)
    fin = np.isfinite(d)
    boots = np.where(fin.any(1), np.where(fin, d, 0.0).sum(1) / np.maximum(fin.sum(1), 1), np.nan)
    boots = boots[np.isfinite(boots)]
    if not len(boots):
        return est, np.nan, np.nan
    return (
        est,
        float(np.quantile(boots, (1 - LEVEL) / 2)),
        float(np.quantile(boots, (1 + LEVEL) / 2)),
    )
