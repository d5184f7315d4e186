"""``format``: 1 if the response has a non-empty final-answer container, correctness ignored.

Spurious Rewards (arXiv 2506.10947) §3 / code ``ttrl/verifier/auto_verify.py`` task ``box_only_format``:
reward = 1 if ``extract_answer_box_only(response)`` is a non-empty string, else 0 (docs/algorithms.md "Format reward").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import torch

from drox.rewards.base import RewardOutput, ScoringContext, register_reward

# The test is the rubric's ``format_valid`` check (shared with +gate=rubric, so it lives below both; re-exported
# here): the verifier's own box scanner, so "has a final answer" means what the outcome verifier would extract.
from drox.signals.rubric import has_container


@dataclass
class FormatConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    pattern: Optional[str] = None
    """[ours] None: a non-empty ``\\boxed{...}`` (the paper's). Else a regex whose first group must match
    non-blank text somewhere in the response (e.g. ``<answer>(.*?)</answer>``)."""


@register_reward("format", FormatConfig, verl="drox.integrations.verl.mapping:format_reward")
def format_reward(ctx: ScoringContext, cfg: FormatConfig) -> RewardOutput:
    if cfg.pattern is not None and re.compile(cfg.pattern).groups < 1:
        raise ValueError(f"reward.format.pattern needs a capture group: {cfg.pattern!r}")
    ok = [has_container(t, cfg.pattern) for t in ctx.batch.texts]
    seq = torch.tensor(ok, dtype=torch.float32).view(ctx.batch.num_groups, ctx.batch.group_size)
    return RewardOutput(seq=seq)
