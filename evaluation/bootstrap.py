"""Bootstrap confidence intervals over problems for any per-problem evaluation metric.

An evaluation metric (pass@k, ROUGE-L, a judge's win rate, ...) is a mean over problems of a per-problem
value; its sampling uncertainty comes from which problems happened to be drawn. The percentile bootstrap
(Efron & Tibshirani 1993, ch. 13) resamples the P problems with replacement ``n_resamples`` times,
takes the mean of each resample and reports the ``alpha/2`` and ``1 - alpha/2`` quantiles of those
means. The interval is over problems only: the sampling noise of the n completions inside a problem is
already averaged into its value and is not resampled separately.

Pure function: no I/O, no global random state (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import numpy as np

__all__ = ["bootstrap_ci"]


def bootstrap_ci(
    values_per_problem: Iterable[float],
    seed: int,
    n_resamples: int = 1000,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` interval of the mean of ``values_per_problem``.

    values_per_problem  # [P] one finite value per problem (e.g. its mean ROUGE-L over n samples)
    Draws ``n_resamples`` resamples of P problem indices with replacement from
    ``numpy.random.default_rng(seed)`` (an index matrix [n_resamples, P]), takes each resample's mean
    and returns the empirical ``alpha/2`` and ``1 - alpha/2`` quantiles of the n_resamples means
    (numpy's default linear interpolation). ``alpha=0.05`` gives the 95% interval; the half-width
    ``(high - low) / 2`` is what summaries report as ``<metric>_ci95``.

    The same values, seed, n_resamples and alpha always give the same interval. When every value is
    the same (including P = 1) the interval is exactly ``(value, value)``: no resample can differ, and
    the short-cut avoids float round-off in the resample means. Raises ValueError on an empty or
    non-finite input, ``n_resamples < 1`` or ``alpha`` outside (0, 1).
    """
    values = np.asarray(list(values_per_problem), dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_ci needs at least one per-problem value")
    if not np.all(np.isfinite(values)):
        raise ValueError("bootstrap_ci needs finite per-problem values (got NaN or inf)")
    if isinstance(n_resamples, (bool, np.bool_)):
        raise ValueError(f"n_resamples must be an integer, got {n_resamples!r}")
    try:
        n_resamples = operator.index(n_resamples)
    except TypeError:
        raise ValueError(f"n_resamples must be an integer, got {n_resamples!r}") from None
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")

    if np.all(values == values[0]):
        v = float(values[0])
        return v, v
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))  # [R, P]
    means = values[idx].mean(axis=1)  # [R]
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
