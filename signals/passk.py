"""The subset-counting tables behind drox's pass@k advantage estimators ``passk`` and ``pkpo``
(:mod:`drox.trainers.algos`; their options, and ``maxrl``'s, are ``PassKOptions`` / ``PKPOOptions`` / ``MaxRLOptions``
in :mod:`drox.config`, under ``trainer.advantage``). Pure Python, no torch. docs/algorithms.md "Pass@k Training:
analytic pass@k advantage" and "PKPO: pass@k reward transformation".

Every table is over one group of ``n`` valid rewards sorted ascending, ``g_(1) <= ... <= g_(n)`` (ranks ``t`` are
1-based in the formulas, 0-based in the lists), and averages over the ``C(n, k)`` subsets ``I`` of size ``k``. The
maximum of a subset is its highest-ranked member's reward, so every average over subsets is a count of subsets by
their top rank (Walder & Karkhanis, "Pass@K Policy Optimization", arXiv 2505.15201, the proofs of Theorems 3-4):

==================  ===========================================================================================
table               entry (÷ by the number of subsets averaged over)
==================  ===========================================================================================
``top``    [n]      ``C(t-1, k-1)``: subsets whose top rank is ``t`` (PKPO Eqs. 12-13: ``ρ^(g) = Σ_t top_t g_(t)``)
``with_i`` [n, n]   ``m_it``: subsets containing ``i`` whose top rank is ``t`` (PKPO Eqs. 19-21: ``s = with_i @ g``)
``others`` [n, n]   the (k-1)-subsets of the other rollouts whose top rank is ``t`` (the baseline of PKPO Eq. 33, via
                    Eq. 34)
``loo``    [n, n]   ``k/(n-1) · ρ^(g)`` of the ``n - 1`` other rewards (the baseline of PKPO Eq. 29, via Eqs. 30-31)
==================  ===========================================================================================

Both estimators' advantages are linear in the sorted rewards (``passk`` also divides by the subsets' std):

* ``passk`` (Chen et al., "Pass@k Training for Adaptively Balancing Exploration and Exploitation of Large Reasoning
  Models", arXiv 2508.10751, the analytic derivation): ``A_i = ((n/k) (with_i @ g)_i − R̄) / (σ + eps)``, with
  ``R̄ = top @ g`` and ``σ² = top @ (g − R̄)²`` the mean and population variance of ``max_I g`` over the k-subsets:
  each rollout's mean normalised subset reward; on 0/1 rewards, the paper's ``Â_pos`` / ``Â_neg``.
* ``pkpo`` (arXiv 2505.15201): ``A_i = n · s_i`` with ``s = (with_i − others) @ g`` (Eq. 33), ``(with_i − loo) @ g``
  (Eq. 29) or ``with_i @ g`` (Eq. 19).
"""

from __future__ import annotations

from functools import lru_cache
from math import comb
from typing import List, Tuple

__all__ = ["min_group_size", "subset_tables"]

Table = Tuple[Tuple[float, ...], ...]


def min_group_size(name: str, opts) -> int:
    """The fewest valid rollouts a group needs for estimator ``name`` (``passk`` / ``pkpo``) to give it a signal:
    ``k`` (no unbiased estimate from fewer, PKPO Corollary 2), ``k + 1`` for PKPO's ``loo`` (its baseline averages
    k-subsets of the other rollouts) and for ``passk`` (k = n leaves one subset and no spread). Smaller groups get 0."""
    k = int(opts.k)
    return k + 1 if name == "passk" or getattr(opts, "baseline", None) == "loo" else k


def _ratio(a: int, b: int, denominator: int) -> float:
    """``C(a, b) / denominator`` as the nearest float (0 when ``b`` is out of ``0..a``); Python divides the integers
    exactly, so large binomials cannot overflow."""
    return comb(a, b) / denominator if 0 <= b <= a else 0.0


@lru_cache(maxsize=256)
def subset_tables(n: int, k: int) -> Tuple[Tuple[float, ...], Table, Table, Table]:
    """``(top [n], with_i [n, n], others [n, n], loo [n, n])`` for a group of ``n`` sorted rewards and subsets of size
    ``k`` (see the module docstring), each already divided by its number of subsets; row ``i`` is rollout ``i``'s rank,
    column ``t`` the rank whose reward it weighs. ``others`` needs ``k >= 2`` and ``loo`` ``k <= n - 1``; they are all
    zero otherwise. Example: ``n = 2, k = 2`` -> ``top = (0, 1)``, ``with_i = ((0, 1), (0, 1))``, ``others = ((0, 1),
    (1, 0))``: both rollouts share the pair's max, and each one's baseline is the other's reward."""
    if not 1 <= k <= n:
        raise ValueError(f"subsets of size k={k} need 1 <= k <= n={n}")
    total = comb(n, k)
    top = tuple(_ratio(t - 1, k - 1, total) for t in range(1, n + 1))
    with_i: List[List[float]] = [[0.0] * n for _ in range(n)]
    others: List[List[float]] = [[0.0] * n for _ in range(n)]
    loo: List[List[float]] = [[0.0] * n for _ in range(n)]
    loo_total = comb(n - 1, k)
    for i in range(1, n + 1):
        for t in range(1, n + 1):
            if t == i:  # PKPO Eq. 20: i itself is the top; choose the other k-1 below it
                with_i[i - 1][t - 1] = _ratio(i - 1, k - 1, total)
                continue
            rank_without_i = t if t < i else t - 1  # t's rank among the other n-1 rollouts
            if t > i and k >= 2:  # Eq. 21: i and the top t fixed; k-2 more among the j-2 others below t
                with_i[i - 1][t - 1] = _ratio(t - 2, k - 2, total)
            if k >= 2:  # (k-1)-subsets of the others topped by t: Eq. 33's second term, C(n-1,k-1)/C(n,k) · ρ_{k-1}
                others[i - 1][t - 1] = _ratio(rank_without_i - 1, k - 2, total)
            if loo_total:  # Eq. 29: b_i / (n-1) = k/(n-1) · ρ_k(the others)
                loo[i - 1][t - 1] = k / (n - 1) * _ratio(rank_without_i - 1, k - 1, loo_total)
    freeze = lambda rows: tuple(tuple(r) for r in rows)  # noqa: E731
    return top, freeze(with_i), freeze(others), freeze(loo)
