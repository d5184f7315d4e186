"""``srl``: Supervised RL's step-similarity reward (Deng et al., arXiv 2510.25992, §3; docs/algorithms.md "SRL").

On the step-wise rows of ``task.srl=true`` (tasks/srl.py), each row carries the expert's next step s_k. The policy
writes its own next step a; the reward is their sequence similarity

    r = 2 M / (|a| + |s_k|)

with M the number of characters in the matching blocks that Python's ``difflib.SequenceMatcher`` finds (its
``ratio()``): 1 for an identical step, 0 for nothing in common. A response with no step in it scores
``fail_score``. It gives signal where every rollout of the whole problem fails, since a partly right step earns
part of the reward. Choices [ENG]: the policy's step is the first non-empty line of the response after any
``think_tag`` block (SRL lets the model think in a monologue before its action; our small base writes the step
directly); whitespace is collapsed before comparing.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Optional

import torch

from drox.rewards.base import RewardOutput, ScoringContext, register_reward


@dataclass
class SRLConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    fail_score: float = -1.0
    """Score of a response without a step (empty after removing the thinking block)."""
    think_tag: Optional[str] = None
    """A tag whose block is the model's monologue, removed before the step is read (e.g. ``think`` for
    ``<think>...</think>``); null = none."""


def policy_step(text: str, think_tag: Optional[str] = None) -> str:
    """The step a response proposes: its first non-empty line after the ``<think_tag>`` block, spaces collapsed."""
    if think_tag:
        text = re.sub(rf"<{re.escape(think_tag)}>.*?</{re.escape(think_tag)}>", "", text, flags=re.DOTALL)
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


def step_similarity(step: str, expert: str) -> float:
    """``2 M / (|step| + |expert|)`` (difflib ratio); 1.0 for two empty strings."""
    return difflib.SequenceMatcher(None, step, " ".join(expert.split()), autojunk=False).ratio()


@register_reward("srl", SRLConfig,
                 verl="SRL's step-wise rows and similarity reward are not ported, and drox.integrations.verl does "
                      "not have it yet (docs/verl.md, 'Not done')")
def srl(ctx: ScoringContext, cfg: SRLConfig) -> RewardOutput:
    batch = ctx.batch
    Q, G = batch.num_groups, batch.group_size
    if any("expert_step" not in row for row in ctx.rows):
        raise ValueError("reward.srl scores a step against the expert's (column 'expert_step'); train on the "
                         "step-wise rows of task.srl=true")
    expanded = ctx.expanded_rows
    steps = [policy_step(text, cfg.think_tag) for text in batch.texts]
    scores = [step_similarity(a, str(row["expert_step"])) if a else cfg.fail_score
              for a, row in zip(steps, expanded)]
    exact = [a == " ".join(str(row["expert_step"]).split()) for a, row in zip(steps, expanded)]
    seq = torch.tensor(scores, dtype=torch.float32).view(Q, G)
    return RewardOutput(seq=seq, diagnostics={"similarity_mean": float(seq.mean()),
                                              "exact_frac": sum(exact) / max(len(exact), 1),
                                              "no_step_frac": sum(not a for a in steps) / max(len(steps), 1)})


__all__ = ["SRLConfig", "policy_step", "srl", "step_similarity"]
