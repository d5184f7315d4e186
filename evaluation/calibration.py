"""Calibration metrics for verbalized confidence (RLCR, Damani et al., arXiv 2507.16806;
docs/algorithms.md "Calibration metrics: Brier, ECE, AUROC").

As in the official ``damanimehul/RLCR`` ``eval/eval_utils.py``: Brier = mean((q − c)²); ECE over 10 equal-width
bins whose first/last edges are ±inf; AUROC of confidence as a score for correctness (there via sklearn's
``roc_curve``, here rank-based so that no sklearn is needed).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def _pair(correct: Sequence[float], q: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    c = np.asarray(correct, dtype=np.float64).ravel()
    p = np.asarray(q, dtype=np.float64).ravel()
    if c.shape != p.shape:
        raise ValueError(f"correct has {c.size} values but q has {p.size}")
    if c.size == 0:
        raise ValueError("calibration metrics need at least one (correct, q) pair")
    return c, p


def brier_score(correct: Sequence[float], q: Sequence[float]) -> float:
    """Mean squared error of confidence q against correctness c ∈ {0,1}: ``mean((q − c)²)`` (lower is better)."""
    c, p = _pair(correct, q)
    return float(np.mean((p - c) ** 2))


def ece(correct: Sequence[float], q: Sequence[float], n_bins: int = 10) -> float:
    """Expected calibration error ``Σ_b (|B_b|/N)·|mean_conf_b − acc_b|`` (docs/algorithms.md).

    Bins are ``np.linspace(0, 1, n_bins + 1)`` with the first/last edges set to −inf/+inf, assigned by
    ``np.digitize`` (left-closed: q = 0.1 falls in the second bin, 1.0 in the last). As in the reference,
    the inner edges are floats, so a q sitting exactly on one (e.g. 0.3, whose edge is 0.30000000000000004)
    may land in the lower bin.
    """
    c, p = _pair(correct, q)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1 (got {n_bins})")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    idx = np.digitize(p, edges) - 1
    total = 0.0
    for b in range(n_bins):
        in_bin = idx == b
        if in_bin.any():
            total += in_bin.mean() * abs(p[in_bin].mean() - c[in_bin].mean())
    return float(total)


def auroc(correct: Sequence[float], q: Sequence[float]) -> float:
    """Area under the ROC curve of q as a predictor of correctness = P(q_pos > q_neg) + ½·P(tie).

    Mann–Whitney form: ``(Σ ranks of correct − P(P+1)/2) / (P·N)`` with tied q given their average rank,
    which equals the trapezoidal area sklearn computes. 0.5 when only one class is present (undefined there;
    0.5 = no discrimination, the value an RLVR model with constant confidence gets).
    """
    c, p = _pair(correct, q)
    pos = c > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based start of each tie block in sorted order
    avg_rank = first + (counts + 1) / 2.0  # 1-based average rank of each distinct value
    ranks = avg_rank[inverse.ravel()]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
