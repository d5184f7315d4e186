"""Preference pairs from a group's own scores, and the DPO loss over them (RLSF's second stage).

Pure tensor functions in the style of :mod:`drox.trainers.algos`; layout group-major as everywhere in drox
(rollout ``g`` of prompt ``q`` is row ``q * G + g``). docs/algorithms.md "RLSF: preference pairs and DPO".

* :func:`rlsf_pairs` — RLSF (van Niekerk et al., arXiv 2507.21931; code ``ConfidentLLM``
  ``cot_preference_data.py::_rank_data``): within each group, every ordered pair (i, j)
  with ``s_i >= threshold`` and ``s_i > s_j`` is (chosen i, rejected j), with margin ``exp(s_i - s_j)``.
* :func:`dpo_loss` — DPO (Rafailov et al. 2023, arXiv 2305.18290, Eq. 7):
  ``-log σ(β [(log π(y_c) - log π_ref(y_c)) - (log π(y_r) - log π_ref(y_r))])``, averaged over pairs. RLSF's
  margin is not part of DPO's loss (the code uses it for its reward-model variant); it is returned for logging.

``trainer.objective=dpo`` trains with them (:func:`drox.trainers.loop.update_preference`).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def rlsf_pairs(scores: Tensor, threshold: float = 0.9, valid: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor, Tensor]:
    """Preference pairs of every group: ``scores [Q, G]`` (e.g. answer-span confidence) -> ``(chosen [P],
    rejected [P], margin [P])``; chosen/rejected are row indices in ``0 .. Q*G-1`` (group-major), ordered by
    group, then chosen, then rejected. ``valid [Q, G]`` bool (None = all): invalid rollouts are in no pair."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [Q, G], got shape {list(scores.shape)}")
    Q, G = scores.shape
    ok = torch.ones(Q, G, dtype=torch.bool) if valid is None else valid.to(torch.bool)
    s = scores.detach().to(torch.float64).cpu()
    i_better = s.unsqueeze(2) > s.unsqueeze(1)  # [Q, G(i), G(j)]: s_i > s_j
    keep = i_better & (s >= threshold).unsqueeze(2) & ok.unsqueeze(2) & ok.unsqueeze(1)
    q, i, j = keep.nonzero(as_tuple=True)
    margin = torch.exp(s[q, i] - s[q, j])
    return q * G + i, q * G + j, margin


def sequence_logps(logprobs: Tensor, mask: Tensor) -> Tensor:
    """``logprobs [N, T]`` token log-probs, ``mask [N, T]`` -> ``[N]`` the log-probability of each response."""
    return (logprobs * mask).sum(-1)


def dpo_loss(policy_logps: Tensor, ref_logps: Tensor, chosen: Tensor, rejected: Tensor, beta: float = 0.1
             ) -> Tuple[Tensor, Dict[str, float]]:
    """DPO over pairs: ``policy_logps [N]`` (differentiable) and ``ref_logps [N]`` sequence log-probs,
    ``chosen/rejected [P]`` row indices -> ``(loss, stats)``; loss is the mean over the P pairs (0 when P = 0,
    still attached to the graph). stats: ``pairs``, ``reward_acc`` (share of pairs whose implicit reward
    β·(log π − log π_ref) ranks chosen above rejected), ``reward_margin`` (mean of that difference)."""
    if beta <= 0:
        raise ValueError(f"DPO needs beta > 0, got {beta}")
    if chosen.numel() == 0:
        return policy_logps.sum() * 0.0, {"pairs": 0.0, "reward_acc": 0.0, "reward_margin": 0.0}
    ratios = policy_logps - ref_logps.to(policy_logps.dtype)  # [N] log π / π_ref
    logits = beta * (ratios[chosen] - ratios[rejected])  # [P]
    loss = -F.logsigmoid(logits).mean()
    stats = {"pairs": float(chosen.numel()), "reward_acc": (logits > 0).float().mean().item(),
             "reward_margin": logits.detach().mean().item()}
    return loss, stats
