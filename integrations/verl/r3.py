"""DRO's cross-rollout statistics over verl trajectories (no verl import; used by ``sampler.py``).

DRO (Xu et al., arXiv 2506.13351 v1) scores the reference answer ``y`` after each rollout's reasoning: ``L[i, j] =
log π(y_j | q, reasoning_i, y_<j)`` for the G rollouts i of a prompt. Its query filter (§4.2.2) keeps the prompts
whose reference tokens' log-probs vary across the rollouts: ``σ_j = std_i L[i, j]`` (population std) and the
statistic ``max_j σ_j``. Under verl, each trajectory carries its row ``L[i, :]`` as ``extra_fields["drox_L"]``
(a list of floats, |y| long), written by the rollout side; the functions here group them and call drox's own
functions (:func:`drox.rewards.variance.masked_sigma`, :func:`drox.filters.query.sigma_max_of`).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["L_FIELD", "group_sigma_max"]

L_FIELD = "drox_L"
"""``extra_fields`` key of a trajectory's reference-token log-probs ``L[i, :]``."""


def group_sigma_max(rows: Sequence[Sequence[float]]) -> float:
    """``max_j σ_j`` of one group from its rollouts' ``L[i, :]`` (``[G][J]``, equal lengths: one reference).

    Example: rows ``[[-1, -2], [-3, -2]]``: σ = (1, 0) -> 1.0. A group of one rollout, or an empty reference,
    gives 0 (no spread to measure)."""
    from drox.filters.query import sigma_max_of
    from drox.rewards.variance import masked_sigma

    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise ValueError(f"the rollouts of one group carry {sorted(lengths)} reference log-probs; one reference "
                         "answer gives one length")
    J = lengths.pop() if lengths else 0
    L = torch.tensor([list(map(float, r)) for r in rows], dtype=torch.float64).reshape(1, len(rows), J)
    sigma = masked_sigma(L, torch.ones(1, J, dtype=torch.float64), torch.ones(1, len(rows), dtype=torch.bool))
    return float(sigma_max_of(sigma)[0])
