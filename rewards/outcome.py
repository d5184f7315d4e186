"""``outcome``: the task's verifier as the reward (RLVR; DeepSeekMath §4.1.2, DAPO Eq. 7)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drox.rewards.base import RewardOutput, ScoringContext, register_reward


@dataclass
class OutcomeConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    correct: float = 1.0
    """Score of a verified-correct rollout."""
    incorrect: float = 0.0
    """Score of an incorrect rollout (-1 gives DAPO's +-1 reward)."""


@register_reward("outcome", OutcomeConfig, verl="drox.integrations.verl.mapping:outcome")
def outcome(ctx: ScoringContext, cfg: OutcomeConfig) -> RewardOutput:
    result = ctx.verify()
    correct = torch.tensor(result.correct, dtype=torch.bool).view(ctx.batch.num_groups, ctx.batch.group_size)
    seq = torch.where(correct, torch.tensor(cfg.correct), torch.tensor(cfg.incorrect))
    return RewardOutput(seq=seq, diagnostics={"verifier_timeouts": float(result.timeouts)})
