"""drox.evaluation.paired: paired t interval, hierarchical bootstrap, TOST, MDE and sample-size planning.

Expected values are worked out independently of the code under test: tabulated Student-t quantiles
(scipy is not installed), the closed-form t cdf for df = 2, an explicit loop over resamples, seeds and
problems for the bootstrap, and a plain loop over S for the planning functions.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from drox.evaluation.aggregate import student_t_quantile
from drox.evaluation.bootstrap import bootstrap_ci
from drox.evaluation.paired import (
    hierarchical_bootstrap_diff, minimum_detectable_effect, paired_t_interval, problems_needed, seeds_needed,
    tost, tost_from_interval,
)

# Tabulated Student-t quantiles (any t table), independent of the incomplete-beta code.
T975_DF4 = 2.776445
T975_DF6 = 2.446912
T975_DF7 = 2.364624
T975_DF14 = 2.144787
T95_DF4 = 2.131847
T80_DF4 = 0.940965
Z975, Z80 = 1.959964, 0.841621


def t_cdf_df2(t: float) -> float:
    """Student t cdf for df = 2 in closed form: 1/2 + t / (2 sqrt(2 + t^2))."""
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def t_quantile_df2(p: float) -> float:
    """Its inverse: (2p - 1) sqrt(2 / (1 - (2p - 1)^2))."""
    u = 2 * p - 1
    return u * math.sqrt(2 / (1 - u * u))


# ------------------------------------------------------------------------------------------------ paired t


def test_paired_t_interval_by_hand():
    # mean 0.2; var(ddof=1) = (0.01 + 0.01 + 0 + 0.04 + 0.04) / 4 = 0.025; se = sqrt(0.025 / 5)
    mean, low, high, se, df = paired_t_interval([0.1, 0.3, 0.2, 0.4, 0.0])
    assert mean == pytest.approx(0.2, abs=1e-15)
    assert se == pytest.approx(math.sqrt(0.005), rel=1e-12)
    assert df == 4
    half = T975_DF4 * math.sqrt(0.005)
    assert low == pytest.approx(0.2 - half, abs=1e-6) and high == pytest.approx(0.2 + half, abs=1e-6)
    # another confidence level uses another quantile
    _, low90, high90, _, _ = paired_t_interval([0.1, 0.3, 0.2, 0.4, 0.0], confidence=0.90)
    assert high90 - 0.2 == pytest.approx(T95_DF4 * math.sqrt(0.005), abs=1e-6)


def test_paired_t_interval_seven_df():
    diffs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]  # mean 4.5, var(ddof=1) = 6, se = sqrt(6 / 8)
    mean, low, high, se, df = paired_t_interval(diffs)
    assert (mean, df) == (4.5, 7)
    assert high - mean == pytest.approx(T975_DF7 * math.sqrt(0.75), abs=1e-5)
    assert mean - low == pytest.approx(T975_DF7 * math.sqrt(0.75), abs=1e-5)


def test_paired_t_interval_welch_satterthwaite():
    # 8 diffs, m ± a alternating: var(ddof=1) = 8 a^2 / 7 = 0.08 -> v1 = var / 8 = 0.01.
    # extra_var v2 = 0.01 with 7 df: df = (0.02)^2 / (0.01^2/7 + 0.01^2/7) = 14; se = sqrt(0.02).
    a = math.sqrt(0.07)
    diffs = [0.3 + a * (-1) ** i for i in range(8)]
    mean, low, high, se, df = paired_t_interval(diffs, extra_var=0.01, extra_df=7)
    assert mean == pytest.approx(0.3, abs=1e-15)
    assert se == pytest.approx(math.sqrt(0.02), rel=1e-12)
    assert df == pytest.approx(14, rel=1e-12)
    assert high - mean == pytest.approx(T975_DF14 * math.sqrt(0.02), abs=1e-6)
    # a known extra variance (extra_df inf): df = (0.02)^2 / (0.01^2 / 7) = 28
    assert paired_t_interval(diffs, extra_var=0.01, extra_df=math.inf).df == pytest.approx(28, rel=1e-12)


def test_paired_t_interval_degenerate_cases():
    one = paired_t_interval([0.25])
    assert one.mean == 0.25 and all(math.isnan(x) for x in (one.low, one.high, one.se, one.df))
    # one seed with a base term: the seed variance is still unknown
    assert math.isnan(paired_t_interval([0.25], extra_var=0.01, extra_df=99).low)
    # every seed the same: zero width (the caller's "untestable"), df = S - 1
    assert tuple(paired_t_interval([0.1, 0.1, 0.1])) == (0.1, 0.1, 0.1, 0.0, 2.0)
    # every seed the same but a known base variance: the normal interval of the base term alone
    flat = paired_t_interval([0.5, 0.5, 0.5, 0.5], extra_var=0.0004, extra_df=math.inf)
    assert flat.df == math.inf and flat.se == pytest.approx(0.02)
    assert flat.high - 0.5 == pytest.approx(Z975 * 0.02, abs=1e-7)
    # ... and with its own df it is that term's t interval
    assert paired_t_interval([0.5, 0.5, 0.5], extra_var=0.0004, extra_df=4).df == pytest.approx(4)


def test_paired_t_interval_rejects_bad_input():
    with pytest.raises(ValueError, match="extra_df"):
        paired_t_interval([0.1, 0.2], extra_var=0.01)
    with pytest.raises(ValueError):
        paired_t_interval([])
    with pytest.raises(ValueError):
        paired_t_interval([0.1, float("nan")])
    with pytest.raises(ValueError):
        paired_t_interval([0.1, 0.2], extra_var=-1.0)
    with pytest.raises(ValueError):
        paired_t_interval([0.1, 0.2], confidence=1.0)


# ------------------------------------------------------------------------------------------------ bootstrap


def _percentile(sorted_values, q):
    """Linear-interpolation quantile (Hyndman & Fan type 7, numpy's default), by hand."""
    h = (len(sorted_values) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def _slow_hierarchical(a, b, seed, n_resamples, confidence, b_shared):
    """The two-level bootstrap as an explicit loop, with the documented draw order."""
    n_seeds, n_problems = len(a), len(a[0])
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    problem_idx = rng.integers(0, n_problems, size=(n_resamples, n_problems))
    means = []
    for r in range(n_resamples):
        total = 0.0
        for s in seed_idx[r]:
            for p in problem_idx[r]:
                total += a[s][p] - b[0 if b_shared else s][p]
        means.append(total / (n_seeds * n_problems))
    means.sort()
    point = sum(a[s][p] for s in range(n_seeds) for p in range(n_problems)) / (n_seeds * n_problems) - (
        sum(sum(row) for row in b) / (len(b) * n_problems))
    return point, _percentile(means, (1 - confidence) / 2), _percentile(means, (1 + confidence) / 2)


@pytest.mark.parametrize("b_shared", [False, True])
@pytest.mark.parametrize("seed", [0, 7])
def test_hierarchical_bootstrap_matches_explicit_loop(b_shared, seed):
    rng = np.random.default_rng(123)
    a = rng.random((3, 4)).round(3)
    b = rng.random((1 if b_shared else 3, 4)).round(3)
    got = hierarchical_bootstrap_diff(a, b, seed=seed, n_resamples=50, confidence=0.9, b_shared=b_shared)
    want = _slow_hierarchical(a.tolist(), b.tolist(), seed, 50, 0.9, b_shared)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[1] < got[2]


def test_hierarchical_bootstrap_one_seed_is_bootstrap_ci():
    """With S = 1 the seed draw consumes nothing: the problem bootstrap of the per-problem differences."""
    rng = np.random.default_rng(5)
    a, b = rng.random((1, 30)), rng.random((1, 30))
    _, low, high = hierarchical_bootstrap_diff(a, b, seed=11, n_resamples=400)
    want = bootstrap_ci((a - b)[0], seed=11, n_resamples=400, alpha=0.05)
    np.testing.assert_allclose((low, high), want, rtol=0, atol=1e-12)


def test_hierarchical_bootstrap_constant_shift():
    """a = b + c on every seed and problem: mean exactly c and, with no noise in the difference, (c, c)."""
    rng = np.random.default_rng(1)
    b = np.round(rng.random((4, 16)) * 64) / 64  # multiples of 1/64: b + 0.125 - b is exactly 0.125
    a = b + 0.125
    assert hierarchical_bootstrap_diff(a, b, seed=3) == (0.125, 0.125, 0.125)
    # a shared base row: the same shift from each seed's row
    base = b[:1]
    assert hierarchical_bootstrap_diff(np.tile(base, (5, 1)) + 0.125, base, seed=3, b_shared=True) == (
        0.125, 0.125, 0.125)


def test_hierarchical_bootstrap_pairs_problems():
    """Arms that differ by a tiny amount on problems of widely varying difficulty: the paired interval is
    narrow; resampling problems independently per arm would be ~ as wide as the problem spread allows."""
    rng = np.random.default_rng(2)
    difficulty = rng.random(64)  # shared by both arms and all seeds
    b = np.tile(difficulty, (4, 1)) + 0.01 * rng.standard_normal((4, 64))
    a = b + 0.02 + 0.01 * rng.standard_normal((4, 64))
    mean, low, high = hierarchical_bootstrap_diff(a, b, seed=0)
    assert low < mean < high
    assert high - low < 0.02  # unpaired over problems: about 2 * 1.96 * sqrt(2 / 12 / 64) = 0.2
    assert low > 0  # a 0.02 shift is detected


def test_hierarchical_bootstrap_resamples_seeds():
    """Differences that vary only by seed: a problems-only bootstrap would give zero width."""
    seed_effect = np.array([-0.1, 0.0, 0.05, 0.2, 0.1])
    diff = np.tile(seed_effect[:, None], (1, 8))
    b = np.zeros((5, 8))
    mean, low, high = hierarchical_bootstrap_diff(diff, b, seed=4, n_resamples=4000)
    assert mean == pytest.approx(seed_effect.mean())
    # the seed-level bootstrap of 5 values: sd of the mean ~ sd(seed_effect, ddof=0) / sqrt(5)
    sd_mean = seed_effect.std() / math.sqrt(5)
    assert (high - low) / 2 == pytest.approx(1.96 * sd_mean, rel=0.2)


def test_hierarchical_bootstrap_deterministic_and_fast():
    rng = np.random.default_rng(9)
    a, b = rng.random((32, 512)), rng.random((32, 512))
    start = time.perf_counter()
    first = hierarchical_bootstrap_diff(a, b, seed=1, n_resamples=2000)
    assert time.perf_counter() - start < 1.0
    assert hierarchical_bootstrap_diff(a, b, seed=1, n_resamples=2000) == first
    assert hierarchical_bootstrap_diff(a, b, seed=2, n_resamples=2000) != first


def test_hierarchical_bootstrap_rejects_bad_shapes():
    a = np.zeros((3, 4))
    with pytest.raises(ValueError, match="b_shared=True"):
        hierarchical_bootstrap_diff(a, np.zeros((1, 4)), seed=0)
    with pytest.raises(ValueError, match="expected"):
        hierarchical_bootstrap_diff(a, np.zeros((3, 4)), seed=0, b_shared=True)
    with pytest.raises(ValueError):
        hierarchical_bootstrap_diff(a, np.zeros((3, 5)), seed=0)
    with pytest.raises(ValueError):
        hierarchical_bootstrap_diff(a, a, seed=0, n_resamples=0)
    with pytest.raises(ValueError):
        hierarchical_bootstrap_diff(a, a, seed=0, n_resamples=2.5)
    with pytest.raises(ValueError):
        hierarchical_bootstrap_diff(np.full((3, 4), np.nan), a, seed=0)


# ------------------------------------------------------------------------------------------------ TOST


def test_tost_by_hand_df2():
    # mean 0.01, se 0.01, df 2, margin 0.05: t statistics (0.01 + 0.05) / 0.01 = 6 and (0.01 - 0.05) / 0.01 = -4
    p, low, high, equivalent = tost(0.01, 0.01, 2, 0.05)
    p_low, p_high = 1 - t_cdf_df2(6.0), t_cdf_df2(-4.0)
    assert p == pytest.approx(max(p_low, p_high), abs=1e-10) and p == pytest.approx(0.028595, abs=1e-6)
    half = t_quantile_df2(0.95) * 0.01
    assert (low, high) == (pytest.approx(0.01 - half, abs=1e-9), pytest.approx(0.01 + half, abs=1e-9))
    assert equivalent
    # the mirror image: now the lower one-sided test gives the larger p
    p, low, high, equivalent = tost(-0.01, 0.01, 2, 0.05)
    assert p == pytest.approx(1 - t_cdf_df2(4.0), abs=1e-10) and p == pytest.approx(0.028595, abs=1e-6)
    assert high == pytest.approx(-0.01 + half, abs=1e-9) and equivalent
    # twice the se: the 90% interval (0.01 ± 0.0584) crosses the margin
    p, low, high, equivalent = tost(0.01, 0.02, 2, 0.05)
    assert p == pytest.approx(max(1 - t_cdf_df2(3.0), t_cdf_df2(-2.0)), abs=1e-10)
    assert p == pytest.approx(0.091752, abs=1e-6)
    assert high > 0.05 and not equivalent


def test_tost_p_value_agrees_with_interval():
    for mean in np.linspace(-0.08, 0.08, 17):
        for se in (0.005, 0.01, 0.03):
            p, low, high, equivalent = tost(float(mean), se, 7, 0.05)
            assert equivalent == (p < 0.05) == (-0.05 < low and high < 0.05)
            assert high - mean == pytest.approx(1.894579 * se, abs=1e-6)  # t_{0.95, 7}


def test_tost_degenerate():
    assert tost(0.0, 0.0, 4, 0.05)[3] is False  # zero spread: untestable
    p, low, high, equivalent = tost(0.0, 0.0, 4, 0.05)
    assert math.isnan(p) and low == high == 0.0
    nan = float("nan")
    assert math.isnan(tost(0.0, nan, nan, 0.05).p_value) and not tost(0.0, nan, nan, 0.05).equivalent
    with pytest.raises(ValueError):
        tost(0.0, 0.01, 4, 0.0)
    with pytest.raises(ValueError):
        tost(0.0, -0.01, 4, 0.05)


def test_tost_from_interval():
    assert tost_from_interval(-0.03, 0.04, 0.05)
    assert not tost_from_interval(-0.06, 0.04, 0.05)
    assert not tost_from_interval(-0.03, 0.05, 0.05)  # touching the margin is not inside
    assert not tost_from_interval(0.01, 0.01, 0.05)  # zero width: untestable
    assert not tost_from_interval(float("nan"), 0.01, 0.05)


# ------------------------------------------------------------------------------------------------ planning


def test_minimum_detectable_effect():
    assert minimum_detectable_effect(0.01, 1e6) == pytest.approx((Z975 + Z80) * 0.01, abs=1e-3 * 0.01)
    assert minimum_detectable_effect(1.0, 1e6) == pytest.approx(Z975 + Z80, abs=1e-3)
    assert minimum_detectable_effect(1.0, math.inf) == pytest.approx(Z975 + Z80, abs=1e-6)
    assert minimum_detectable_effect(0.5, 4) == pytest.approx((T975_DF4 + T80_DF4) * 0.5, abs=1e-5)
    for se, df in ((0.0, 4), (float("nan"), 4), (math.inf, 4), (0.1, 0), (0.1, float("nan")), (-0.1, 4)):
        assert math.isnan(minimum_detectable_effect(se, df))


def _brute_force_smallest(sd, target, other_var, confidence, max_n):
    for n in range(2, max_n + 1):
        if student_t_quantile((1 + confidence) / 2, n - 1) * math.sqrt(sd * sd / n + other_var) <= target:
            return n
    return None


def test_seeds_needed_by_hand():
    # sd 1: S = 7 gives 2.446912 / sqrt(7) = 0.9248; S = 8 gives 2.364624 / sqrt(8) = 0.8360
    assert T975_DF6 / math.sqrt(7) > 0.84 >= T975_DF7 / math.sqrt(8)
    assert seeds_needed(1.0, 0.84) == 8
    assert seeds_needed(0.0, 0.1) == 2  # no spread: the smallest S that gives an interval


@pytest.mark.parametrize("sd,target,base_var,confidence", [
    (0.05, 0.02, 0.0, 0.95), (0.1, 0.05, 0.0001, 0.95), (0.03, 0.02, 0.00005, 0.9), (0.2, 0.3, 0.0, 0.99),
    (0.04, 0.015, 0.00003, 0.95),
])
def test_seeds_needed_brute_force(sd, target, base_var, confidence):
    want = _brute_force_smallest(sd, target, base_var, confidence, 200)
    assert want is not None
    assert seeds_needed(sd, target, base_var=base_var, confidence=confidence, max_seeds=200) == want


def test_seeds_needed_impossible():
    # the base term alone: 1.96 * 0.02 = 0.0392 > 0.03, more seeds cannot help
    assert seeds_needed(0.01, 0.03, base_var=0.0004) is None
    # possible, but not within max_seeds
    assert _brute_force_smallest(1.0, 0.84, 0.0, 0.95, 7) is None
    assert seeds_needed(1.0, 0.84, max_seeds=7) is None
    assert seeds_needed(1.0, 0.84, max_seeds=8) == 8


def test_problems_needed_brute_force():
    want = _brute_force_smallest(0.4, 0.1, 0.0004, 0.95, 400)
    assert want is not None and problems_needed(0.4, 0.1, seed_var=0.0004) == want
    assert problems_needed(0.4, 0.03, seed_var=0.0004) is None  # 1.96 * 0.02 > 0.03
