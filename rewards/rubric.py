"""``rubric``: the rubric of ``+gate=rubric`` used as a reward term instead of a gate (docs/gates.md "Rubric as a
gate or as a reward").

DRO v3 (arXiv 2506.13351 v3, abstract) checks final answers against a rubric as hard accept/reject
gates, in contrast to scoring the rubric as part of the reward, which a policy can satisfy without solving the
task. This source scores the same checks (:func:`drox.signals.rubric.run_checks`, same options) so the two uses
compare on equal terms: ``score: all`` gives 1 when every check passes, else 0; ``score: fraction`` the share
of checks passed (a denser term) [ours: the paper gives no rubric reward].

Diagnostics (``reward/rubric/*``): ``pass_rate`` (every check passes) and, on a task with a verifier,
``pass_incorrect``, the share of rollouts that satisfy the rubric without solving the task. With ``weight: 0``
the source changes nothing and only measures: the way to count rubric hacking in an arm that does not reward
the rubric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from drox.rewards.base import RewardOutput, ScoringContext, register_reward
from drox.signals.rubric import RubricChecks, check_batch, rubric_vs_correct

SCORES = ("all", "fraction")


@dataclass
class RubricRewardConfig(RubricChecks):
    """The options of ``gate.rubric`` (checks, format_pattern, min/max_tokens, ngram_*, regex*), plus:"""

    on_fail: Literal["exclude", "floor"] = "exclude"
    """Unused by the reward: the gate's option, accepted so a ``gate.rubric`` block works here unchanged."""
    weight: float = 1.0
    """Weight of this source in the combined reward (0: measure only)."""
    score: Literal[SCORES] = "all"
    """all: 1 when every check passes, else 0 | fraction: the share of the checks that pass."""

    _option: ClassVar[str] = "reward.rubric"

    def __post_init__(self):
        super().__post_init__()
        if self.score not in SCORES:
            raise ValueError(f"reward.rubric.score must be one of {', '.join(SCORES)}, got {self.score!r}")


@register_reward("rubric", RubricRewardConfig)
def rubric_reward(ctx: ScoringContext, cfg: RubricRewardConfig) -> RewardOutput:
    """Shapes: ``ctx.batch`` N = Q·G rollouts -> ``seq [Q, G]`` (1/0 or the fraction of checks passed)."""
    batch = ctx.batch
    results = check_batch(ctx, cfg)
    per_check = torch.tensor(list(results.values()), dtype=torch.bool)  # [C, N]
    passed = per_check.all(0)  # [N]
    score = passed.float() if cfg.score == "all" else per_check.float().mean(0)
    return RewardOutput(seq=score.view(batch.num_groups, batch.group_size), diagnostics=rubric_vs_correct(passed, ctx))
