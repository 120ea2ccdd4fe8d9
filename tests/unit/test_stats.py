"""The shared statistics of the verdicts (pixelrobust.stats): intervals from first principles or published examples."""

import numpy as np
import pytest

from pixelrobust import stats


def test_wilson_interval_closed_forms():
    z2 = 1.959963984540054**2
    # k = 0: the lower end is 0 and the upper end is z² / (n + z²) (the score interval's closed form)
    lo, hi = stats.wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(z2 / (10 + z2), abs=1e-12)
    # k = n mirrors k = 0
    lo, hi = stats.wilson_ci(10, 10)
    assert hi == 1.0 and lo == pytest.approx(10 / (10 + z2), abs=1e-12)
    # symmetric around 1/2 for k = n/2, and narrower than the Wald interval's 1.96 * sqrt(p(1-p)/n) plus the correction
    lo, hi = stats.wilson_ci(50, 100)
    assert (lo + hi) / 2 == pytest.approx(0.5) and hi - lo < 2 * 1.96 * 0.05
    assert np.isnan(stats.wilson_ci(0, 0)).all()


def test_newcombe_difference_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10 (hybrid score):
    # (a) 56/70 - 48/80: 0.0524 to 0.3339; (b) 9/10 - 3/10: 0.1705 to 0.8090
    d, lo, hi = stats.newcombe_diff_ci(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert lo == pytest.approx(0.0524, abs=5e-4) and hi == pytest.approx(0.3339, abs=5e-4)
    d, lo, hi = stats.newcombe_diff_ci(9, 10, 3, 10)
    assert d == pytest.approx(0.6)
    assert lo == pytest.approx(0.1705, abs=5e-4) and hi == pytest.approx(0.8090, abs=5e-4)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, 20)
    large = rng.normal(1.0, 1.0, 2000)
    m, lo, hi = stats.boot_mean(small, 2000, np.random.default_rng(1))
    assert lo < m < hi and m == pytest.approx(small.mean())
    # the bootstrap SE of a mean is about sd / sqrt(n): width about 2 * 1.96 * sd / sqrt(n)
    assert hi - lo == pytest.approx(2 * 1.96 * small.std() / np.sqrt(20), rel=0.25)
    _, llo, lhi = stats.boot_mean(large, 2000, np.random.default_rng(1))
    assert lhi - llo < (hi - lo) / 5
    assert np.isnan(stats.bootstrap_ci(np.array([1.0]), 100, rng)).all()


def test_boot_stat_resamples_units_not_elements():
    # two units of very different sizes: resampling units gives a mean of unit means in [min, max] of the unit means
    units = [np.zeros(100), np.ones(2)]
    est, lo, hi = stats.boot_stat(
        units, lambda us: float(np.mean([u.mean() for u in us])), 500, np.random.default_rng(0)
    )
    assert est == 0.5 and lo == 0.0 and hi == 1.0


@pytest.mark.parametrize(
    "lo,hi,n,expected",
    [
        (0.1, 0.3, 20, "held"),
        (-0.3, -0.1, 20, "not held"),
        (-0.1, 0.3, 20, "inconclusive"),
        (0.1, 0.3, 5, "too few images"),
        (np.nan, np.nan, 20, "inconclusive"),
    ],
)
def test_decide(lo, hi, n, expected):
    assert stats.decide(lo, hi, n) == expected


def test_decide_with_a_minimum_effect():
    # an effect surely above 0 but surely below the smallest effect the claim needs is not held
    assert stats.decide(0.01, 0.04, 20, min_effect=0.05) == "not held"
    assert stats.decide(0.06, 0.2, 20, min_effect=0.05) == "held"
    assert stats.decide(0.01, 0.2, 20, min_effect=0.05) == "inconclusive"


def test_decide_all_is_intersection_union():
    assert stats.decide_all(["held", "held"]) == "held"
    assert stats.decide_all(["held", "inconclusive"]) == "inconclusive"
    assert stats.decide_all(["held", "not held", "inconclusive"]) == "not held"
    assert stats.decide_all(["held", "too few images"]) == "too few images"
    assert stats.decide_all([]) == "too few images"


def test_binding_is_the_test_that_decides():
    # the referee's case: a held test with the lowest ci_low must not headline a "not held" claim
    tests = [
        ("held", 0.01, 0.3),
        ("not held", -0.6, -0.1),
        ("not held", -0.3, -0.05),
        ("inconclusive", -0.9, 0.9),
    ]
    assert stats.decide_all([t[0] for t in tests]) == "not held"
    assert stats.binding(tests) == 1  # the not-held test with the smallest ci_high
    # no failure: an inconclusive test (the one with the smallest ci_low) decides, not the weaker held one
    assert (
        stats.binding(
            [("held", -0.5, 0.9), ("inconclusive", -0.1, 0.2), ("inconclusive", -0.2, 0.1)]
        )
        == 2
    )
    # all held: the weakest (smallest ci_low); NaN bounds sort last
    assert stats.binding([("held", 0.3, 0.5), ("held", 0.1, 0.9), ("held", np.nan, np.nan)]) == 1
    with pytest.raises(ValueError):
        stats.binding([])


def test_clopper_pearson_closed_forms():
    # k = 0: upper end 1 - (alpha/2)^(1/n); k = n: lower end (alpha/2)^(1/n)
    assert stats.clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10)))
    assert stats.clopper_pearson(10, 10) == (pytest.approx(0.025 ** (1 / 10)), 1.0)
    lo, hi = stats.clopper_pearson(5, 10)
    assert lo == pytest.approx(1 - hi) and lo < 0.5 < hi


@pytest.mark.parametrize("k,held", [(4, False), (6, False), (7, True), (9, True)])
def test_paired_binary_interval_excludes_0_as_the_exact_sign_test(k, held):
    # k images better under a and none worse, the rest tied: the interval excludes 0 exactly when the two-sided
    # exact sign test rejects at the inner level 97.5 % (p = 2 * 0.5^k: 0.031 for 6, 0.016 for 7), whatever n is
    for n in (10, 20, 100):
        a = np.r_[np.ones(k), np.zeros(n - k)]
        b = np.zeros(n)
        d, lo, hi = stats.paired_diff_ci(a, b, 2000, np.random.default_rng(0))
        assert d == pytest.approx(k / n)
        assert (lo > 0) is held
        assert stats.decide(lo, hi, n) == ("held" if held else "inconclusive")


def test_paired_binary_interval_is_the_corner_of_two_clopper_pearson_intervals():
    a = np.r_[np.ones(10), np.zeros(2), np.ones(8)]
    b = np.r_[np.zeros(10), np.ones(2), np.ones(8)]
    d, lo, hi = stats.paired_binary_ci(a, b)
    # 12 of 20 pairs discordant, 10 of those for a; each interval at 97.5 %, the difference q(2 pi - 1) at the corners
    qlo, qhi = stats.clopper_pearson(12, 20, 0.975)
    plo, phi = stats.clopper_pearson(10, 12, 0.975)
    corners = [q * (2 * p - 1) for q in (qlo, qhi) for p in (plo, phi)]
    assert d == pytest.approx(8 / 20)
    assert lo == pytest.approx(min(corners)) and hi == pytest.approx(max(corners))
    assert plo < 0.5 and lo == pytest.approx(
        qhi * (2 * plo - 1)
    )  # here the low corner takes the larger share


def test_paired_binary_interval_bounds_the_effect_when_nothing_differs():
    # all 20 pairs tied (e.g. both at 0 % under a saturated attack): the effect is not known to be 0; the share of
    # pairs that could differ is up to the Clopper-Pearson upper end for 0 of 20, so the interval is about +-0.2 and
    # a margin of 0.05 can be neither passed nor ruled out (inconclusive, never "not held" by construction)
    d, lo, hi = stats.paired_binary_ci(np.zeros(20), np.zeros(20))
    q = 1 - 0.0125 ** (1 / 20)
    assert d == 0.0 and lo == pytest.approx(-q) and hi == pytest.approx(q)
    assert stats.decide(lo, hi, 20, min_effect=0.05) == "inconclusive"
    # with many pairs, ties do rule a margin out
    d, lo, hi = stats.paired_binary_ci(np.zeros(400), np.zeros(400))
    assert stats.decide(lo, hi, 400, min_effect=0.05) == "not held"


def test_paired_binary_interval_covers_a_true_effect_above_a_margin():
    # the conditional (McNemar) interval ignores the uncertainty of the discordant share and failed this: a true
    # paired effect of 0.06 with n = 100 must not read "not held" against a 0.05 margin more than 2.5 % of the time
    rng = np.random.default_rng(0)
    not_held = 0
    for _ in range(400):
        u = rng.uniform(size=100)
        a, b = (
            (u < 0.08).astype(float),
            ((u >= 0.08) & (u < 0.10)).astype(float),
        )  # P(a only) 0.08, P(b only) 0.02
        _, lo, hi = stats.paired_binary_ci(a, b)
        not_held += stats.decide(lo, hi, 100, min_effect=0.05) == "not held"
    assert not_held / 400 <= 0.025


def test_paired_diff_ci_bootstraps_fractional_scores():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, 40), rng.uniform(0, 1, 40)
    d, lo, hi = stats.paired_diff_ci(a, b, 1000, np.random.default_rng(1))
    assert d == pytest.approx((a - b).mean()) and lo < d < hi


def test_paired_fractional_scores_that_never_differ_get_a_bound_not_a_point():
    # two draws per image, identical rows (the same randomisation twice): the bootstrap would say [0, 0]
    a = np.array([0.5, 1.0, 0.0, 0.5] * 5)
    d, lo, hi = stats.paired_diff_ci(a, a.copy(), 1000, np.random.default_rng(0))
    q = 1 - 0.0125 ** (1 / 20)
    assert d == 0.0 and (lo, hi) == (pytest.approx(-q), pytest.approx(q))
    assert stats.decide(lo, hi, 20, min_effect=0.05) == "inconclusive"


# ---- added for mutation testing (docs/development.md, "Mutation testing"): each pins a property that a surviving
# mutant of stats.py broke; the expected values come from closed forms, not from a run

Z95 = 1.959963984540054  # the 97.5 % normal quantile
Z50 = 0.6744897501960817  # the 75 % normal quantile


def _se(v):
    return v.std() / np.sqrt(
        len(v)
    )  # the bootstrap distribution of a mean has sd std(ddof=0) / sqrt(n)


def test_bootstrap_percentiles_are_the_two_tails_of_the_level():
    # a normal sample of 400: the bootstrap means are close to normal, so each end lies z * se from the mean,
    # z = 1.96 at 95 % and 0.674 at 50 % (a wrong tail, e.g. the 10 % or 1.7 % quantile, moves one end by >= 8 %)
    v = np.random.default_rng(0).normal(0.0, 1.0, 400)
    se = _se(v)
    for level, z in ((0.95, Z95), (0.5, Z50)):
        m, lo, hi = stats.boot_mean(v, 20000, np.random.default_rng(1), level)
        assert m - lo == pytest.approx(z * se, rel=0.04) and hi - m == pytest.approx(
            z * se, rel=0.04
        )
        d, dlo, dhi = stats.paired_diff_ci(
            v, np.zeros_like(v), 20000, np.random.default_rng(1), level
        )
        assert d - dlo == pytest.approx(z * se, rel=0.04) and dhi - d == pytest.approx(
            z * se, rel=0.04
        )
    units = list(v[:100])
    se = _se(v[:100])
    for level, z in ((0.95, Z95), (0.5, Z50)):
        est, lo, hi = stats.boot_stat(units, np.mean, 10000, np.random.default_rng(2), level)
        assert est - lo == pytest.approx(z * se, rel=0.05) and hi - est == pytest.approx(
            z * se, rel=0.05
        )


def test_bootstrap_of_two_values_is_an_interval():
    # two values are enough to resample: the means are 0, 1/2 and 1 with probabilities 1/4, 1/2, 1/4
    lo, hi = stats.bootstrap_ci(np.array([0.0, 1.0]), 4000, np.random.default_rng(0))
    assert (lo, hi) == (0.0, 1.0)
    est, lo, hi = stats.boot_stat([0.0, 1.0], np.mean, 4000, np.random.default_rng(0))
    assert (est, lo, hi) == (0.5, 0.0, 1.0)


@pytest.mark.parametrize("k,n", [(1, 1), (1, 10), (3, 10), (7, 20), (19, 20)])
def test_wilson_ends_solve_the_score_equation(k, n):
    # Wilson's interval is the set of pi with |k/n - pi| <= z sqrt(pi (1 - pi) / n): its ends solve it with equality
    for level, z in ((0.95, Z95), (0.5, Z50)):
        lo, hi = stats.wilson_ci(k, n, level)
        p = k / n
        for end in (lo, hi):
            if end in (0.0, 1.0) and end == p:
                continue  # k = 0 or k = n: that end is the observed proportion itself
            assert (p - end) ** 2 == pytest.approx(z * z * end * (1 - end) / n, rel=1e-9)
        assert lo < p or lo == p == 0.0
        assert hi > p or hi == p == 1.0


@pytest.mark.parametrize("n", [1, 10])
@pytest.mark.parametrize("level,z", [(0.95, Z95), (0.5, Z50)])
def test_newcombe_closed_form_for_all_against_none(n, level, z):
    # n/n against 0/n: Wilson gives [n / (n + z²), 1] and [0, z² / (n + z²)], so Newcombe's interval is
    # [1 - sqrt(2) z² / (n + z²), 1] at the given level
    d, lo, hi = stats.newcombe_diff_ci(n, n, 0, n, level)
    assert d == 1.0 and hi == pytest.approx(1.0)
    assert lo == pytest.approx(1 - np.sqrt(2) * z * z / (n + z * z), rel=1e-9)
    d, lo, hi = stats.newcombe_diff_ci(0, n, n, n, level)  # and its mirror image
    assert (
        d == -1.0
        and lo == pytest.approx(-1.0)
        and hi == pytest.approx(-1 + np.sqrt(2) * z * z / (n + z * z))
    )


def test_empty_samples_give_nan_not_an_interval():
    assert np.isnan(stats.newcombe_diff_ci(0, 0, 1, 2)).all()
    assert np.isnan(stats.newcombe_diff_ci(1, 2, 0, 0)).all()
    assert np.isnan(stats.clopper_pearson(0, 0)).all()
    # one trial is a sample: Clopper-Pearson for 1 of 1 is [alpha/2, 1], for 0 of 1 [0, 1 - alpha/2]
    assert stats.clopper_pearson(1, 1) == (pytest.approx(0.025), 1.0)
    assert stats.clopper_pearson(0, 1) == (0.0, pytest.approx(0.975))


def _corners(k, m, n):
    qlo, qhi = stats.clopper_pearson(m, n, 0.975)
    plo, phi = stats.clopper_pearson(k, m, 0.975)
    corners = [q * (2 * p - 1) for q in (qlo, qhi) for p in (plo, phi)]
    return min(corners), max(corners)


@pytest.mark.parametrize(
    "for_a,for_b,tied", [(10, 0, 10), (0, 10, 10), (9, 1, 30), (1, 9, 30), (1, 0, 0)]
)
def test_paired_binary_interval_is_the_extreme_corner_in_every_direction(for_a, for_b, tied):
    # the effect q(2 pi - 1) is monotone in q and pi, so its bounds are the smallest and largest corner of the box,
    # whichever side of 0 the share pi lies on (10 of 10 for a, 10 of 10 for b, mixed, a single pair)
    a = np.r_[np.ones(for_a), np.zeros(for_b), np.zeros(tied)]
    b = np.r_[np.zeros(for_a), np.ones(for_b), np.zeros(tied)]
    n = len(a)
    d, lo, hi = stats.paired_binary_ci(a, b)
    assert d == pytest.approx((for_a - for_b) / n)
    elo, ehi = _corners(for_a, for_a + for_b, n)
    assert lo == pytest.approx(elo) and hi == pytest.approx(ehi)


def test_paired_binary_interval_drops_a_pair_with_one_missing_outcome():
    a = np.array([1.0, np.nan, 1.0, 0.0] + [0.0] * 16)
    b = np.array([0.0, 1.0, np.nan, 0.0] + [0.0] * 16)
    d, lo, hi = stats.paired_binary_ci(a, b)
    # pairs 2 and 3 are dropped: 18 pairs, one for a
    assert d == pytest.approx(1 / 18)
    assert (lo, hi) == tuple(pytest.approx(x) for x in _corners(1, 1, 18))


def test_paired_fractional_bound_scales_with_the_difference_and_stays_in_range():
    # identical differences d between scores in [0, 1]: each of the (at most Clopper-Pearson 0 of n) differing
    # images moves the mean by at most 1 + |d|; and a difference of two [0, 1] scores never leaves [-1, 1]
    q0 = 1 - 0.0125 ** (1 / 20)
    d, lo, hi = stats.paired_diff_ci(
        np.full(20, 0.75), np.full(20, 0.25), 100, np.random.default_rng(0)
    )
    assert d == 0.5 and lo == pytest.approx(0.5 - 1.5 * q0) and hi == pytest.approx(0.5 + 1.5 * q0)
    d, lo, hi = stats.paired_diff_ci(
        np.full(20, 0.0), np.full(20, 0.95), 100, np.random.default_rng(0)
    )
    assert d == pytest.approx(-0.95) and lo == -1.0 and hi == pytest.approx(-0.95 + 1.95 * q0)
    d, lo, hi = stats.paired_diff_ci(
        np.full(20, 0.95), np.full(20, 0.0), 100, np.random.default_rng(0)
    )
    assert d == pytest.approx(0.95) and lo == pytest.approx(0.95 - 1.95 * q0) and hi == 1.0
    # two images already count
    d, lo, hi = stats.paired_diff_ci(
        np.full(2, 0.5), np.full(2, 0.5), 100, np.random.default_rng(0)
    )
    q2 = 1 - 0.0125 ** (1 / 2)
    assert d == 0.0 and lo == pytest.approx(-q2) and hi == pytest.approx(q2)


@pytest.mark.parametrize("a,b", [(5.0, 2.0), (0.5, -1.5), (-1.5, 0.5), (1.5, 0.0), (0.0, 1.5)])
def test_paired_scores_outside_the_unit_interval_are_not_clipped(a, b):
    # the [-1, 1] bound is for scores in [0, 1] only: a constant difference beyond it must stay inside its interval
    a, b = np.full(20, a), np.full(20, b)
    d, lo, hi = stats.paired_diff_ci(a, b, 100, np.random.default_rng(0))
    assert lo <= d <= hi and d == pytest.approx(float(a[0] - b[0]))


def test_decide_needs_both_bounds_and_a_strict_margin():
    # a missing or NaN bound is inconclusive whichever bound it is
    for lo, hi in ((0.1, np.nan), (np.nan, 0.3), (0.1, None), (None, 0.3), (-0.3, np.nan)):
        assert stats.decide(lo, hi, 20) == "inconclusive"
    # an interval that touches the margin does not beat it
    assert stats.decide(0.0, 0.3, 20) == "inconclusive"
    assert stats.decide(-0.3, 0.0, 20) == "inconclusive"
    assert stats.decide(0.05, 0.3, 20, min_effect=0.05) == "inconclusive"


def test_binding_among_inconclusive_tests_is_by_the_lower_end():
    # the smallest ci_low (-0.3, test 0), not the smallest ci_high (0.2, test 1)
    assert (
        stats.binding(
            [("inconclusive", -0.3, 0.5), ("inconclusive", -0.1, 0.2), ("held", 0.1, 0.9)]
        )
        == 0
    )
    with pytest.raises(ValueError, match="binding: no tests"):
        stats.binding([])


def test_paired_diff_ci_passes_its_level_to_the_exact_interval():
    # 0/1 outcomes go to paired_binary_ci at the level asked for: at 50 % its inner intervals are at 75 %
    a = np.r_[np.ones(9), np.zeros(1), np.zeros(10)]
    b = np.r_[np.zeros(9), np.ones(1), np.zeros(10)]
    d, lo, hi = stats.paired_diff_ci(a, b, 100, np.random.default_rng(0), level=0.5)
    qlo, qhi = stats.clopper_pearson(10, 20, 0.75)
    plo, phi = stats.clopper_pearson(9, 10, 0.75)
    assert d == pytest.approx(0.4)
    assert lo == pytest.approx(qlo * (2 * plo - 1)) and hi == pytest.approx(qhi * (2 * phi - 1))


def test_detectable_effect_is_the_80_percent_power_distance_of_a_normal_interval():
    # first principles: a 95 % interval of half width h has SE = h / 1.96; at 80 % power a true effect must lie
    # (1.959964 + 0.841621) SE = 1.4294 h beyond the threshold
    assert stats.detectable_effect(-0.1, 0.1) == pytest.approx(1.4294 * 0.1, rel=1e-4)
    assert stats.detectable_effect(0.3, 0.7) == pytest.approx(
        1.4294 * 0.2, rel=1e-4
    )  # width, not position
    assert np.isnan(stats.detectable_effect(np.nan, 0.1)) and np.isnan(
        stats.detectable_effect(0.0, None)
    )
    # and by simulation: intervals est ± 1.96 SE around a true effect that far above 0 decide "held" 80 % of the time
    rng = np.random.default_rng(0)
    se = 0.05
    mde = stats.detectable_effect(-1.959964 * se, 1.959964 * se)
    est = rng.normal(mde, se, 200_000)
    held = np.mean(
        [stats.decide(e - 1.959964 * se, e + 1.959964 * se, 20) == "held" for e in est[:20000]]
    )
    assert held == pytest.approx(0.80, abs=0.01)


def test_detectable_effect_of_a_zero_width_interval_is_undefined():
    assert np.isnan(stats.detectable_effect(0.0, 0.0)) and np.isnan(
        stats.detectable_effect(0.2, 0.1)
    )


def test_detectable_paired_binary_holds_at_80_percent_by_simulation():
    # the exact figure, checked by simulating the very procedure: n pairs, each discordant with probability
    # q = 24 / 60, in favour with probability pi; the claim is held when paired_binary_ci's lower end > threshold
    n, m = 60, 24
    rng = np.random.default_rng(1)
    for threshold in (0.0, 0.05):
        e = stats.detectable_paired_binary(n, m, threshold)
        q = m / n
        pi = ((e + threshold) / q + 1) / 2
        assert 0.5 < pi <= 1

        def held_share(pi, trials=3000, q=q, threshold=threshold):
            held = 0
            for _ in range(trials):
                disc, fav = rng.random(n) < q, rng.random(n) < pi
                a, b = (disc & fav).astype(float), (disc & ~fav).astype(float)
                held += stats.paired_binary_ci(a, b)[1] > threshold
            return held / trials

        assert held_share(pi) == pytest.approx(0.80, abs=0.025)
        # and a visibly smaller effect is held clearly less often (the figure is the smallest, not just enough)
        assert held_share((pi - 0.5) * 0.8 + 0.5) < 0.72


def test_detectable_paired_binary_when_too_few_pairs_differ():
    # none differ (a tie): no effect can be held; 4 of 40 differ: even all 4 in favour is the sign test's 4 of 4,
    # which does not exclude 0 at 97.5 % (7 of 7 are needed), so no effect reaches 80 % power
    assert np.isinf(stats.detectable_paired_binary(40, 0)) and np.isinf(
        stats.detectable_paired_binary(40, 4)
    )
    assert np.isnan(stats.detectable_paired_binary(0, 0))
    # more differing pairs at the same n need a larger effect share but a smaller one in absolute terms per pair
    assert np.isfinite(stats.detectable_paired_binary(40, 20))


def test_detectable_paired_dispatches_on_the_interval_used():
    a = np.array([1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1], float)
    b = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 1], float)
    assert stats.discordant(a, b) == 5
    assert stats.detectable_paired(a, b, -0.1, 0.3) == stats.detectable_paired_binary(20, 5)
    frac = a * 0.5
    assert np.isnan(stats.discordant(frac, b + 0.25))
    assert stats.detectable_paired(frac, b + 0.25, -0.1, 0.3) == pytest.approx(
        1.4294 * 0.2, rel=1e-4
    )
