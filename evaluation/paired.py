"""Paired statistics for comparing two training arms that share seeds, prompt order and evaluation problems.

When arm a and arm b are trained with the same seeds (same initial sampling, same prompt order) and evaluated
on the same held-out problems, the honest comparison is *paired*: per-seed differences rather than two
independent means (Welch), and, over problems, the same resampled problems for both arms. Pairing removes
the variance the arms share (hard vs easy problems, lucky vs unlucky seeds) from the difference.

Functions, each pure (no I/O, no global random state: ``numpy.random.default_rng(seed)``):

- :func:`paired_t_interval`: Student-t interval of the mean per-seed difference, optionally with an extra
  variance term the seeds cannot see (the base policy's own evaluation noise) and Welch–Satterthwaite df.
- :func:`hierarchical_bootstrap_diff`: percentile bootstrap over seeds, then problems (paired by problem).
- :func:`tost` / :func:`tost_from_interval`: equivalence test within ±margin (Schuirmann 1987).
- :func:`minimum_detectable_effect`: the smallest true difference a two-sided test detects with given power.
- :func:`seeds_needed` / :func:`problems_needed`: planning: how many seeds (problems) for a target half-width.

Verdict wording (reproduced / inconclusive / ...) belongs to ``experiments/driver.py``, not here.

Degrees of freedom: every ``df`` here may be ``math.inf`` (a variance taken as known): the Student-t
quantiles and cdf then are the normal ones (``statistics.NormalDist``), as they are for ``df > 1e7``, where
the two differ by less than 3e-7 and the incomplete beta behind ``student_t_cdf`` starts to lose accuracy.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple, Optional, Sequence

import numpy as np

from drox.evaluation.aggregate import student_t_cdf, student_t_quantile

__all__ = [
    "PairedInterval", "TostResult", "paired_t_interval", "hierarchical_bootstrap_diff", "tost",
    "tost_from_interval", "minimum_detectable_effect", "seeds_needed", "problems_needed",
]

_NORMAL_DF = 1e7
"""Above this many degrees of freedom (and at inf) the t distribution is replaced by the normal."""
_NAN = float("nan")


class PairedInterval(NamedTuple):
    """The result of :func:`paired_t_interval` (a tuple: ``mean, low, high, se, df = ...`` works)."""

    mean: float
    low: float
    high: float
    se: float
    df: float


class TostResult(NamedTuple):
    """The result of :func:`tost` (a tuple: ``p, low, high, equivalent = ...`` works)."""

    p_value: float
    low: float
    """Lower end of the (1 - 2 alpha) interval (90% for alpha = 0.05)."""
    high: float
    equivalent: bool


# ------------------------------------------------------------------------------------------------ helpers


def _t_quantile(p: float, df: float) -> float:
    """Student-t quantile, the normal one for ``df`` inf or above :data:`_NORMAL_DF`."""
    return NormalDist().inv_cdf(p) if df > _NORMAL_DF else student_t_quantile(p, df)


def _t_cdf(t: float, df: float) -> float:
    """Student-t cdf, the normal one for ``df`` inf or above :data:`_NORMAL_DF`."""
    return NormalDist().cdf(t) if df > _NORMAL_DF else student_t_cdf(t, df)


def _check_probability(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


def _check_nonnegative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")


def _count(name: str, value: int, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; ValueError for a bool, a float or anything else not an integer."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _finite_array(name: str, values, ndim: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim or array.size == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite (got NaN or inf)")
    return array


# ------------------------------------------------------------------------------------------------ paired t


def paired_t_interval(
    diffs: Sequence[float],
    extra_var: float = 0.0,
    extra_df: Optional[float] = None,
    confidence: float = 0.95,
) -> PairedInterval:
    """Student-t interval of the mean per-seed difference (the paired t interval, Student 1908).

    diffs       # [S] arm_a(seed) - arm_b(seed), one per shared seed
    extra_var   # variance of a term common to every seed, which the seed spread cannot see: e.g. when
                #   arm b is the base policy evaluated once, the variance of its evaluation (sd over
                #   problems^2 / P). 0: none.
    extra_df    # degrees of freedom of ``extra_var`` (e.g. P - 1 for a variance estimated from P problems;
                #   ``math.inf`` for a known variance); required when ``extra_var > 0``.

    se = sqrt(var(diffs, ddof=1) / S + extra_var). df = S - 1 when ``extra_var == 0``; otherwise the
    Welch–Satterthwaite df (Satterthwaite 1946; Welch 1947) of the two variance terms,
    (v1 + v2)^2 / (v1^2 / (S - 1) + v2^2 / extra_df) with v1 = var/S, v2 = extra_var (inf when both
    denominator terms are 0). Interval: mean ± t_{(1+confidence)/2, df} · se.

    Returns ``PairedInterval(mean, low, high, se, df)``.

    - S = 1: the seed-to-seed variance cannot be estimated, so low, high, se and df are NaN (also with
      ``extra_var > 0``: an interval from the extra term alone would pretend the seeds do not vary).
    - Every diff equal and ``extra_var == 0``: se = 0 exactly and a zero-width interval (mean, mean) with
      df = S - 1.
      Zero spread over a few seeds is no evidence of precision: callers treat it as untestable.

    Raises ValueError on empty or non-finite diffs, a negative or non-finite ``extra_var``, a missing or
    non-positive ``extra_df`` with ``extra_var > 0``, or ``confidence`` outside (0, 1).
    """
    d = _finite_array("diffs", diffs, ndim=1)
    _check_nonnegative("extra_var", extra_var)
    _check_probability("confidence", confidence)
    if extra_var > 0 and (extra_df is None or not extra_df > 0):
        raise ValueError(f"extra_var > 0 needs extra_df > 0 (e.g. problems - 1, or math.inf), got {extra_df}")
    n = d.size
    constant = bool(np.all(d == d[0]))  # exactly: the float mean of equal values can be an ulp off
    mean = float(d[0]) if constant else float(d.mean())
    if n == 1:
        return PairedInterval(mean, _NAN, _NAN, _NAN, _NAN)
    v1 = 0.0 if constant else float(d.var(ddof=1)) / n
    v2 = float(extra_var)
    se = math.sqrt(v1 + v2)
    if v2 == 0:
        df = float(n - 1)
    else:
        denominator = v1 ** 2 / (n - 1) + v2 ** 2 / extra_df
        df = (v1 + v2) ** 2 / denominator if denominator > 0 else math.inf
    half = _t_quantile((1.0 + confidence) / 2.0, df) * se
    return PairedInterval(mean, mean - half, mean + half, se, df)


# ------------------------------------------------------------------------------------------------ bootstrap


def hierarchical_bootstrap_diff(
    a,
    b,
    seed: int,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    b_shared: bool = False,
) -> tuple[float, float, float]:
    """Two-level percentile bootstrap of mean(a) - mean(b), resampling seeds then problems, paired by problem.

    a  # [S, P] per-seed, per-problem values of arm a (e.g. each problem's pass@1 estimate on seed s)
    b  # [S, P] the same for arm b on the same seeds and problems; or [1, P] with ``b_shared=True`` when
       #   arm b is one evaluation shared by every seed (the base policy)

    Each of the ``n_resamples`` resamples draws S seed indices with replacement, then P problem indices
    with replacement, and takes the mean over the resampled seeds x problems of a - b. The problem indices
    are the same for both arms (paired by problem; for a shared b its one row is indexed by the same
    problems), so the arms' shared problem difficulty cancels. Interval: the empirical
    ``(1 - confidence)/2`` and ``(1 + confidence)/2`` quantiles of the resample means (percentile
    bootstrap, Efron & Tibshirani 1993, ch. 13; resampling at both levels of a nested design, Davison &
    Hinkley 1997, §3.8). Returns ``(mean, low, high)``; ``mean`` is the plain mean(a) - mean(b).

    Draw order, from ``numpy.random.default_rng(seed)``: first every resample's seed indices
    (``integers(0, S, size=(n_resamples, S))``), then every resample's problem indices
    (``integers(0, P, size=(n_resamples, P))``). With S = 1 the first draw consumes nothing, so the interval
    is the one :func:`drox.evaluation.bootstrap.bootstrap_ci` gives for the per-problem differences.

    Computed without the [R, S, P] resample tensor: the resample mean is c_r^T D w_r / (S P) with D = a - b
    [S, P], c_r [S] the seed counts and w_r [P] the problem counts of resample r (S <= 32, P <= 512,
    2000 resamples: a few tens of ms).

    When every a - b is the same value (including S = P = 1) the result is exactly (d, d, d): no resample
    can differ (same short-cut as ``bootstrap_ci``). Zero width is no evidence of precision: callers treat it
    as untestable. Raises ValueError on a shape mismatch, non-finite values, ``n_resamples < 1`` or
    ``confidence`` outside (0, 1).
    """
    a = _finite_array("a", a, ndim=2)
    b = _finite_array("b", b, ndim=2)
    n_resamples = _count("n_resamples", n_resamples, minimum=1)
    _check_probability("confidence", confidence)
    n_seeds, n_problems = a.shape
    expected = (1, n_problems) if b_shared else a.shape
    if b.shape != expected:
        hint = " (one shared evaluation of arm b: pass b_shared=True)" if b.shape == (1, n_problems) else ""
        raise ValueError(f"b has shape {b.shape}, expected {expected} for a of shape {a.shape}{hint}")

    diff = a - b  # [S, P]; a shared b's one row broadcasts over the seeds
    mean = float(diff.mean())
    if np.all(diff == diff.flat[0]):
        d = float(diff.flat[0])
        return d, d, d
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))  # [R, S]
    problem_idx = rng.integers(0, n_problems, size=(n_resamples, n_problems))  # [R, P]
    seed_counts = _row_counts(seed_idx, n_seeds)  # [R, S]
    problem_counts = _row_counts(problem_idx, n_problems)  # [R, P]
    means = np.einsum("rp,rp->r", seed_counts @ diff, problem_counts) / (n_seeds * n_problems)  # [R]
    low, high = np.quantile(means, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return mean, float(low), float(high)


def _row_counts(indices: np.ndarray, size: int) -> np.ndarray:
    """[R, K] indices in [0, size) -> [R, size] float counts: how often each index occurs in each row."""
    rows = indices.shape[0]
    flat = (indices + size * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(np.float64)


# ------------------------------------------------------------------------------------------------ equivalence


def tost(mean: float, se: float, df: float, margin: float, alpha: float = 0.05) -> TostResult:
    """Two one-sided t tests for equivalence within (-margin, margin) (Schuirmann 1987).

    H0: |true difference| >= margin. The two one-sided tests are
    p_low = P(T_df >= (mean + margin) / se) (H0: diff <= -margin) and
    p_high = P(T_df <= (mean - margin) / se) (H0: diff >= margin); p = max(p_low, p_high).
    Equivalent iff p < alpha, which is the same as the (1 - 2 alpha) interval mean ± t_{1-alpha, df} · se
    lying strictly inside (-margin, margin). ``mean, se, df``: e.g. from :func:`paired_t_interval`.

    Returns ``TostResult(p_value, low, high, equivalent)`` with the (1 - 2 alpha) interval (90% for
    alpha = 0.05). NaN mean, NaN or infinite se, NaN or non-positive df: ``(nan, nan, nan, False)``.
    se = 0 (every seed gave the same difference): the interval is (mean, mean) but p is NaN and equivalent
    False: zero spread is untestable.
    Raises ValueError for a negative se, a non-positive or non-finite margin or alpha outside (0, 0.5).
    """
    _check_positive("margin", margin)
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if se < 0:
        raise ValueError(f"se must be >= 0, got {se}")
    if math.isnan(mean) or not math.isfinite(se) or math.isnan(df) or not df > 0:
        return TostResult(_NAN, _NAN, _NAN, False)
    if se == 0:
        return TostResult(_NAN, mean, mean, False)
    half = _t_quantile(1.0 - alpha, df) * se
    p_low = _t_cdf(-(mean + margin) / se, df)
    p_high = _t_cdf((mean - margin) / se, df)
    low, high = mean - half, mean + half
    return TostResult(max(p_low, p_high), low, high, bool(-margin < low and high < margin))


def tost_from_interval(low: float, high: float, margin: float) -> bool:
    """Equivalence within (-margin, margin) from a (1 - 2 alpha) interval (Schuirmann 1987's interval form).

    ``low, high``: e.g. :func:`hierarchical_bootstrap_diff` with ``confidence=0.90`` for alpha = 0.05.
    True iff -margin < low <= high < margin. NaN ends and a zero-width interval (low == high: no spread,
    untestable) give False. Raises ValueError for a non-positive or non-finite margin.
    """
    _check_positive("margin", margin)
    if math.isnan(low) or math.isnan(high) or low == high:
        return False
    return bool(-margin < low and high < margin)


# ------------------------------------------------------------------------------------------------ planning


def minimum_detectable_effect(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The true difference a two-sided level-``alpha`` t test detects with probability ``power``.

    MDE = (t_{1-alpha/2, df} + t_{power, df}) · se: the standard approximation (e.g. Bloom 1995), which
    ignores the far rejection tail and the noncentrality of the t distribution under the alternative.
    For large df it is (1.959964 + 0.841621) · se at alpha = 0.05, power = 0.8.
    NaN when se is not finite and > 0 or df is NaN or <= 0 (df = inf: the normal quantiles).
    """
    _check_probability("alpha", alpha)
    _check_probability("power", power)
    if not (math.isfinite(se) and se > 0) or math.isnan(df) or not df > 0:
        return _NAN
    return (_t_quantile(1.0 - alpha / 2.0, df) + _t_quantile(power, df)) * se


def seeds_needed(sd_diff: float, target_half_width: float, base_var: float = 0.0, confidence: float = 0.95,
                 max_seeds: int = 1000) -> Optional[int]:
    """The smallest S >= 2 with t_{(1+confidence)/2, S-1} · sqrt(sd_diff^2 / S + base_var) <= target_half_width.

    sd_diff    # sd of the per-seed differences (e.g. from a pilot)
    base_var   # variance common to every seed (see ``extra_var`` of :func:`paired_t_interval`)

    A planning approximation: the t df is S - 1 even with ``base_var > 0`` (the Welch–Satterthwaite df
    of :func:`paired_t_interval` is then usually larger, so the answer errs on the side of more seeds).
    None when no S <= ``max_seeds`` is enough, in particular when z · sqrt(base_var) >= target (the base
    term alone is too wide: more seeds cannot help). S = 1 is never returned (it gives no interval).
    """
    return _smallest_n(sd_diff, target_half_width, base_var, confidence, max_seeds)


def problems_needed(sd_problem: float, target_half_width: float, seed_var: float = 0.0, confidence: float = 0.95,
                    max_problems: int = 100_000) -> Optional[int]:
    """The smallest P >= 2 with t_{(1+confidence)/2, P-1} · sqrt(sd_problem^2 / P + seed_var) <= target_half_width.

    sd_problem  # sd over problems of the per-problem values (or paired differences) of one evaluation
    seed_var    # variance from elsewhere that more problems do not reduce (e.g. sd_seeds^2 / S)

    The same planning approximation as :func:`seeds_needed` with the roles swapped (df P - 1 for both terms,
    which understates the width when ``seed_var`` comes from few seeds). None when no P <= ``max_problems``
    is enough.
    """
    return _smallest_n(sd_problem, target_half_width, seed_var, confidence, max_problems)


def _smallest_n(sd: float, target: float, other_var: float, confidence: float, max_n: int) -> Optional[int]:
    """The smallest n in [2, max_n] with t_{(1+confidence)/2, n-1} · sqrt(sd^2/n + other_var) <= target.

    The half-width decreases in n (both factors do), so a bisection finds it.
    """
    _check_nonnegative("sd", sd)
    _check_nonnegative("other variance", other_var)
    _check_probability("confidence", confidence)
    _check_positive("target_half_width", target)
    max_n = _count("maximum", max_n, minimum=2)
    p = (1.0 + confidence) / 2.0

    def half_width(n: int) -> float:
        return _t_quantile(p, n - 1) * math.sqrt(sd * sd / n + other_var)

    if _t_quantile(p, math.inf) * math.sqrt(other_var) >= target or half_width(max_n) > target:
        return None
    low, high = 1, max_n  # half_width(high) <= target; low = 1 stands for "too wide" (no interval)
    while high - low > 1:
        middle = (low + high) // 2
        if half_width(middle) <= target:
            high = middle
        else:
            low = middle
    return high
