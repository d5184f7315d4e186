"""Property tests (hypothesis) for the math every table depends on: random inputs, invariants that hold for all
of them. Small cases are also checked against brute force (pass@k as an exhaustive count of subsets)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from drox.evaluation.passk import pass_at_k  # noqa: E402
from drox.filters.entropy import EntropyConfig, entropy_filter  # noqa: E402
from drox.filters.query import select_by_statistic  # noqa: E402
from drox.trainers.algos import compute_advantages  # noqa: E402
from drox.trainers.multiobj import dvao  # noqa: E402

FAST = settings(max_examples=60, deadline=None)


@st.composite
def n_c_k(draw, max_n=40):
    n = draw(st.integers(1, max_n))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@FAST
@given(n_c_k())
def test_pass_at_k_is_a_probability_monotone_in_k_and_c(nck):
    n, c, k = nck
    p = pass_at_k(n, c, k)
    assert 0.0 <= p <= 1.0
    if k < n:
        assert pass_at_k(n, c, k + 1) >= p - 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= p - 1e-12
    assert (p == 0.0) == (c == 0) and (p == 1.0) == (n - c < k)


@FAST
@given(n_c_k(max_n=9))
def test_pass_at_k_equals_the_exhaustive_count_of_subsets(nck):
    """pass@k = P(a uniformly drawn k-subset of the n samples holds at least one of the c correct ones)."""
    n, c, k = nck
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    exact = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


scores_strategy = st.integers(1, 5).flatmap(lambda q: st.integers(2, 8).flatmap(lambda g: st.lists(
    st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=g, max_size=g), min_size=q, max_size=q)))


@FAST
@given(scores_strategy, st.sampled_from(["grpo", "dr_grpo", "rloo"]))
def test_group_advantages_sum_to_zero(scores, estimator):
    s = torch.tensor(scores, dtype=torch.float64)
    adv = compute_advantages(s, estimator)
    assert adv.shape == s.shape and torch.isfinite(adv).all()
    assert torch.allclose(adv.sum(-1), torch.zeros(s.shape[0], dtype=adv.dtype), atol=1e-6)


@FAST
@given(st.integers(1, 4), st.integers(2, 8), st.integers(1, 3), st.data())
def test_dvao_is_bounded_by_sqrt_of_group_size_minus_one(q, g, k, data):
    table = torch.tensor(data.draw(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=q * g * k,
                                            max_size=q * g * k)), dtype=torch.float64).view(q, g, k)
    weights = torch.tensor(data.draw(st.lists(st.floats(0, 3, allow_nan=False, width=32), min_size=k, max_size=k)),
                           dtype=torch.float64)
    valid = torch.ones(q, g, dtype=torch.bool)
    adv, _ = dvao(table, weights, valid, 1e-8)
    assert torch.isfinite(adv).all()
    assert (adv.abs() <= math.sqrt(g - 1) + 1e-9).all()


@FAST
@given(st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=1, max_size=30),
       st.floats(0.0, 0.99), st.integers(0, 3))
def test_the_query_filter_never_drops_more_than_asked(stats, drop_fraction, min_keep):
    stat = torch.tensor(stats, dtype=torch.float64)
    eligible = torch.ones(len(stats), dtype=torch.bool)
    keep, _ = select_by_statistic(stat, eligible, None, drop_fraction, min_keep)
    dropped = int((~keep).sum())
    assert dropped <= math.floor(drop_fraction * len(stats) + 1e-9)
    assert int(keep.sum()) >= min(min_keep, len(stats))
    if dropped:  # what goes is never above what stays
        assert stat[~keep].max() <= stat[keep].min()


@FAST
@given(st.integers(1, 6), st.integers(1, 12), st.sampled_from([0.05, 0.2, 0.5, 0.8, 1.0]), st.booleans(), st.data())
def test_the_entropy_mask_keeps_exactly_ceil_rho_n_tokens(n_rows, t, rho, invert, data):
    entropies = torch.tensor(data.draw(st.lists(st.floats(0, 8, allow_nan=False, width=32), min_size=n_rows * t,
                                                max_size=n_rows * t))).view(n_rows, t)
    mask = torch.tensor(data.draw(st.lists(st.integers(0, 1), min_size=n_rows * t, max_size=n_rows * t)),
                        dtype=torch.float32).view(n_rows, t)
    new_mask, stats = entropy_filter(entropies, mask, EntropyConfig(rho=rho, invert=invert))
    n_valid = int(mask.sum())
    top = min(n_valid, math.ceil(round(rho * n_valid, 9)))
    assert int(new_mask.sum()) == (n_valid - top if invert else top)
    assert ((new_mask == 1) <= (mask == 1)).all()  # a subset of the valid tokens
