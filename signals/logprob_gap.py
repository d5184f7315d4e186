"""Per-token log-probability gaps between a teacher and the policy that sampled the tokens, as dense rewards.

For a response ``y`` sampled from the policy, each token's reward is how much more likely a teacher finds it,

    r_t = log pi_teacher(y_t | ·) − log pi_policy(y_t | ·)

and, because ``y_t`` was drawn from the policy, ``E[r_t] = −KL(pi_policy ‖ pi_teacher)`` at that position: the
single-sample estimate of the negative reverse KL. Two sources build on it: ``sdpo`` (the teacher is the policy shown
feedback; docs/algorithms.md "SDPO: a feedback-conditioned self-teacher as a dense reward") and ``distill`` (the
teacher is another model; docs/algorithms.md "On-policy distillation: a teacher's per-token reverse KL"). The passes
that produce the log-probabilities need a model and sit in the sources; this module is the arithmetic they share.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch


def token_gaps(teacher_logprobs: torch.Tensor, student_logprobs: torch.Tensor, mask: torch.Tensor,
               clip: Optional[float] = None) -> torch.Tensor:
    """``r_t = teacher − student`` on real tokens, 0 on padding, optionally clipped to ``[-clip, clip]``.

    teacher_logprobs, student_logprobs, mask  # [N, T] -> [N, T]
    """
    gap = (teacher_logprobs - student_logprobs) * mask
    return gap.clamp(-clip, clip) * mask if clip is not None else gap


def gap_diagnostics(gaps: torch.Tensor, mask: torch.Tensor) -> Dict[str, float]:
    """What the gap sources log: ``gap_token_mean`` (mean r_t over real tokens; minus the mean per-token reverse-KL
    estimate), ``gap_seq_mean`` (mean over rollouts of Σ_t r_t) and ``positive_token_frac`` (tokens with r_t > 0).

    gaps, mask  # [N, T]
    """
    tokens = mask.sum()
    return {"gap_token_mean": (gaps.sum() / tokens.clamp_min(1)).item(),
            "gap_seq_mean": gaps.sum(-1).mean().item(),
            "positive_token_frac": ((gaps > 0).float() * mask).sum().item() / max(tokens.item(), 1.0)}


__all__ = ["gap_diagnostics", "token_gaps"]
