"""Sign-selective objectives: PSR, NSR, W-REINFORCE (Zhu et al., "The Surprising Effectiveness of Negative
Reinforcement in LLM Reasoning", arXiv 2506.01347, §2.2 Eqs. 2–4 and §5 Eq. 9;
docs/algorithms.md "PSR, NSR and W-REINFORCE").

The scores these sources return are the advantages themselves, so they need the advantage estimator
``none`` (no group baseline, no std normalisation, as in the paper): their option files
(``conf/reward/<name>.yaml``) set ``trainer.advantage.estimator: none``, and a config that contradicts it
is rejected before anything loads. Combined with other sources, the weighted sum of all scores is used raw.

Values follow the official code ``RLVR-Decomposed`` ``verl/trainer/ppo/core_algos.py::
compute_psr_nsr_outcome_advantage``, which uses 1/0 rewards:

==============  ===========  =============
source          correct      incorrect
==============  ===========  =============
positive_only   1            0              (PSR: ``A = R``)
negative_only   0            −1             (NSR: ``A = R − 1``)
w_reinforce     λ (0.1)      −1             (W-REINFORCE, Eq. 9: ``λ·L_PSR + L_NSR``)
==============  ===========  =============

The paper writes the reward as r ∈ {−1, +1} while the code scores 1/0 and shifts by −1 for
NSR. Both give the table above: PSR keeps the correct samples with weight 1, NSR the incorrect ones with −1, and
W-REINFORCE is λ / −1 (λ = 1 recovers REINFORCE with ±1 rewards). The table is :data:`drox.signals.sign.SIGN_VALUES`,
shared with the verl backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drox.rewards.base import RewardOutput, ScoringContext, register_reward
from drox.signals.sign import SIGN_VALUES, sign_advantages


@dataclass
class PositiveOnlyConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward (scales the advantage)."""


@dataclass
class NegativeOnlyConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward (scales the advantage)."""


@dataclass
class WReinforceConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward (scales the advantage)."""
    lam: float = 0.1
    """λ, the weight of correct samples (README: "recommended value is 0.1"); 1 = REINFORCE, 0 = NSR."""


def needs_no_baseline(opts, cfg) -> None:
    """Config-time check: these scores are advantages; a group baseline would re-centre them."""
    estimator = cfg.trainer.advantage.estimator
    if estimator != "none":
        raise ValueError(f"this reward's scores are advantages (no baseline) and need trainer.advantage.estimator"
                         f"=none, got {estimator}; drop the estimator override")
    if cfg.trainer.advantage.combine != "sum":
        raise ValueError(f"this reward's scores are advantages (no baseline) and cannot be combined with "
                         f"trainer.advantage.combine={cfg.trainer.advantage.combine}; use combine=sum")


def _correct(ctx: ScoringContext) -> torch.Tensor:
    result = ctx.verify()
    return torch.tensor(result.correct, dtype=torch.bool).view(ctx.batch.num_groups, ctx.batch.group_size)


@register_reward("positive_only", PositiveOnlyConfig, check=needs_no_baseline, advantages=True,
                 verl="drox.integrations.verl.mapping:sign_reward")
def positive_only(ctx: ScoringContext, cfg: PositiveOnlyConfig) -> RewardOutput:
    """PSR (Eq. 3): reinforce correct samples only; A = 1 correct, 0 incorrect."""
    return RewardOutput(seq=sign_advantages(_correct(ctx), *SIGN_VALUES["positive_only"]))


@register_reward("negative_only", NegativeOnlyConfig, check=needs_no_baseline, advantages=True,
                 verl="drox.integrations.verl.mapping:sign_reward")
def negative_only(ctx: ScoringContext, cfg: NegativeOnlyConfig) -> RewardOutput:
    """NSR (Eq. 4): push down incorrect samples only; A = 0 correct, −1 incorrect."""
    return RewardOutput(seq=sign_advantages(_correct(ctx), *SIGN_VALUES["negative_only"]))


@register_reward("w_reinforce", WReinforceConfig, check=needs_no_baseline, advantages=True,
                 verl="drox.integrations.verl.mapping:sign_reward")
def w_reinforce(ctx: ScoringContext, cfg: WReinforceConfig) -> RewardOutput:
    """W-REINFORCE (§5 Eq. 9, λ·L_PSR + L_NSR): A = λ correct, −1 incorrect."""
    return RewardOutput(seq=sign_advantages(_correct(ctx), cfg.lam, SIGN_VALUES["w_reinforce"][1]))
