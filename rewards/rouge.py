"""``rouge``: ROUGE-N F1 of the response's final answer against the reference (DRO v1 §5.1's baseline reward).

DRO (arXiv 2506.13351 v1, Table 1) compares R3 with a "ROUGE-1 F1 reward" on ParaRev. The final answer is
what R3 also scores against (:func:`drox.signals.spans.split_reasoning`: the last ``\\boxed{}``, else the last
``Answer:`` line, else the whole response, as on open-ended rewrites). docs/rewards.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drox.signals.rouge import rouge_n_f1
from drox.rewards.base import RewardOutput, ScoringContext, register_reward


@dataclass
class RougeConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    n: int = 1
    """ROUGE-N order (the paper's baseline: 1)."""
    reference_field: str = "answer"
    """Dataset column holding the reference text."""

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n={self.n} must be >= 1")


@register_reward("rouge", RougeConfig)
def rouge_reward(ctx: ScoringContext, cfg: RougeConfig) -> RewardOutput:
    from drox.signals.spans import split_reasoning

    rows = ctx.expanded_rows
    if rows and cfg.reference_field not in rows[0]:
        raise ValueError(f"reward.rouge.reference_field={cfg.reference_field!r}: the task's rows have no such "
                         f"column (columns: {', '.join(rows[0])})")
    scores = [rouge_n_f1(split_reasoning(text)[1], str(row[cfg.reference_field]), cfg.n)
              for text, row in zip(ctx.batch.texts, rows)]
    seq = torch.tensor(scores, dtype=torch.float32).view(ctx.batch.num_groups, ctx.batch.group_size)
    return RewardOutput(seq=seq)
