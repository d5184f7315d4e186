"""Calibration metrics for verbalized confidence (RLCR, Damani et al., arXiv 2507.16806;
docs/algorithms.md "Calibration metrics: Brier, ECE, AUROC").

As in the official ``damanimehul/RLCR`` ``eval/eval_utils.py``: Brier = mean((q − c)²); ECE over 10 equal-width
bins whose first/last edges are ±inf; AUROC of confidence as a score for correctness (there via sklearn's
``roc_curve``, here rank-based so that no sklearn is needed).

:func:`reliability_bins` (the table behind ``drox eval``'s reliability diagram) uses the same binning as
:func:`ece`, so ECE is exactly ``Σ_b count_b/N · |accuracy_b − mean_confidence_b|`` over its rows;
:func:`calibration_summary` is the block of eval summary keys (docs/evaluation.md "Calibration");
:func:`parse_confidence` reads the stated confidence q out of a response (the ``brier`` reward and ``drox eval``).
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

DEFAULT_TAG = r"<confidence>(.*?)</confidence>"
"""Where RLCR's prompt asks for the stated confidence (``damanimehul/RLCR``'s tag); group 1 holds q."""


def parse_confidence(text: str, tag_regex: str = DEFAULT_TAG) -> Optional[float]:
    """q from the last ``tag_regex`` match in ``text``; None if absent, not a float, not finite, or outside [0,1]."""
    matches = list(re.finditer(tag_regex, text or "", re.DOTALL))
    if not matches:
        return None
    try:
        q = float(matches[-1].group(1).strip())
    except ValueError:
        return None
    return q if math.isfinite(q) and 0.0 <= q <= 1.0 else None


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


def bin_index(q: Sequence[float], n_bins: int = 10) -> np.ndarray:
    """[N] int bin of each q in 0..n_bins-1: the binning of :func:`ece` and :func:`reliability_bins`.

    Bins are ``np.linspace(0, 1, n_bins + 1)`` with the first/last edges set to −inf/+inf, assigned by
    ``np.digitize`` (left-closed: q = 0.1 falls in the second bin). So q = 0.0 falls in the first bin
    [0, 0.1) and q = 1.0 in the last one, [0.9, 1.0] (closed on the right through the +inf edge); a q outside
    [0, 1] would join the first/last bin. As in the reference, the inner edges are floats, so a q sitting
    exactly on one (e.g. 0.3, whose edge is 0.30000000000000004) may land in the lower bin.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1 (got {n_bins})")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    return np.digitize(np.asarray(q, dtype=np.float64).ravel(), edges) - 1


def ece(correct: Sequence[float], q: Sequence[float], n_bins: int = 10) -> float:
    """Expected calibration error ``Σ_b (|B_b|/N)·|mean_conf_b − acc_b|`` (docs/algorithms.md), over the
    ``n_bins`` equal-width bins of :func:`bin_index` (first/last edges ±inf)."""
    c, p = _pair(correct, q)
    idx = bin_index(p, n_bins)
    total = 0.0
    for b in range(n_bins):
        in_bin = idx == b
        if in_bin.any():
            total += in_bin.mean() * abs(p[in_bin].mean() - c[in_bin].mean())
    return float(total)


RELIABILITY_COLUMNS = ("bin_low", "bin_high", "count", "mean_confidence", "accuracy")
"""The fields of one :func:`reliability_bins` row, in the order of ``reliability.csv``'s columns."""


def reliability_bins(correct: Sequence[float], q: Sequence[float], n_bins: int = 10) -> List[Dict[str, float]]:
    """The reliability-diagram table: one row per bin, all ``n_bins`` of them, lowest first.

    ``correct`` [N] in {0,1} and ``q`` [N] in [0,1] are aligned (sample i's correctness and stated confidence).
    Each row is a dict of :data:`RELIABILITY_COLUMNS`: ``bin_low``/``bin_high``, the edges :func:`bin_index`
    compares against (``np.linspace(0, 1, n_bins + 1)``: 0.30000000000000004, not 0.3); ``count``, the samples
    with low <= q < high (q = 0.0 in the first bin; the last bin also holds q = 1.0); ``mean_confidence`` and
    ``accuracy``, their mean q and mean correctness (NaN for an empty bin). The binning is :func:`ece`'s, so
    ``ece(correct, q, n_bins) == Σ count/N · |accuracy − mean_confidence|`` over the non-empty rows.
    """
    c, p = _pair(correct, q)
    idx = bin_index(p, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)  # bin_index's edges, with 0 and 1 in place of its ±inf
    rows = []
    for b in range(n_bins):
        in_bin = idx == b
        count = int(in_bin.sum())
        rows.append({
            "bin_low": float(edges[b]),
            "bin_high": float(edges[b + 1]),
            "count": count,
            "mean_confidence": float(p[in_bin].mean()) if count else float("nan"),
            "accuracy": float(c[in_bin].mean()) if count else float("nan"),
        })
    return rows


def calibration_summary(correct: Sequence[bool], q: Sequence[Optional[float]]) -> Dict[str, float]:
    """The eval summary's calibration keys from per-sample correctness and stated confidence (None = none stated).

    ``correct`` [N] and ``q`` [N] are aligned per sample. Always: ``confidence_format_fail_frac`` (share of the N
    samples whose q is None; 1.0 when N = 0) and ``calibration_n`` (samples with a q). When calibration_n > 0, over
    those samples only: ``brier``, ``ece``, ``auroc``, ``confidence_mean`` and ``accuracy_stated`` (their accuracy,
    the number ``confidence_mean`` should match). A q outside [0, 1] is a caller's error (ValueError):
    :func:`parse_confidence` already returns None for those.
    """
    if len(correct) != len(q):
        raise ValueError(f"correct has {len(correct)} values but q has {len(q)}")
    stated = [i for i, v in enumerate(q) if v is not None]
    out: Dict[str, float] = {
        "confidence_format_fail_frac": 1.0 - len(stated) / len(q) if len(q) else 1.0,
        "calibration_n": len(stated),
    }
    if not stated:
        return out
    c = [float(bool(correct[i])) for i in stated]
    p = [float(q[i]) for i in stated]
    if not all(0.0 <= v <= 1.0 for v in p):
        raise ValueError("stated confidences must lie in [0, 1]")
    out.update({"brier": brier_score(c, p), "ece": ece(c, p), "auroc": auroc(c, p),
                "confidence_mean": float(np.mean(p)), "accuracy_stated": float(np.mean(c))})
    return out


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
