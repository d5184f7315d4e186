"""``brier``: RLCR's correctness + Brier reward on a verbalized confidence (Damani et al., "Beyond Binary
Rewards: Training LMs to Reason about Their Uncertainty", arXiv 2507.16806; docs/algorithms.md
"RLCR: correctness plus Brier reward").

Paper: ``R_RLCR(y, q, y*) = 1[y ≡ y*] − (q − 1[y ≡ y*])²`` with q ∈ [0,1] stated by the model. Official code
(``damanimehul/RLCR`` ``reward_fns.py``) parses q from ``<confidence>…</confidence>`` and fails the format when it
is missing, not a float, or outside [0,1]; a format failure scores 0 there (``brier_reward``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

import torch

from drox.signals.calibration import DEFAULT_TAG, auroc, brier_score, ece, parse_confidence
from drox.rewards.base import RewardOutput, ScoringContext, register_reward

@dataclass
class BrierConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    tag_regex: str = DEFAULT_TAG
    """Regex whose first group holds q; the last match counts. [ours] The code's tag, without its full-format check."""
    format_fail_score: float = -2.0
    """Score of a response with no parseable q in [0,1]. The RLCR code scores a format failure 0 on
    its scale 1 + paper/2 (paper reward in [-1, 1] -> [0.5, 1.5]), i.e. -2 on the paper's scale used
    here: worse than any stated confidence, so omitting the tag never pays."""


def rlcr_reward(correct: bool, q: float) -> float:
    """RLCR reward ``c − (q − c)²`` (docs/algorithms.md), in [−1, 1]."""
    c = float(correct)
    return c - (q - c) ** 2


@register_reward("brier", BrierConfig)
def brier(ctx: ScoringContext, cfg: BrierConfig) -> RewardOutput:
    if re.compile(cfg.tag_regex).groups < 1:
        raise ValueError(f"reward.brier.tag_regex needs a capture group: {cfg.tag_regex!r}")
    correct = ctx.verify().correct
    qs: List[Optional[float]] = [parse_confidence(t, cfg.tag_regex) for t in ctx.batch.texts]
    scores = [cfg.format_fail_score if q is None else rlcr_reward(c, q) for c, q in zip(correct, qs)]
    seq = torch.tensor(scores, dtype=torch.float32).view(ctx.batch.num_groups, ctx.batch.group_size)
    ok = [i for i, q in enumerate(qs) if q is not None]
    diagnostics = {"format_fail_frac": 1.0 - len(ok) / max(len(qs), 1)}
    if ok:  # calibration of the rollouts that stated a confidence (training-time view of RLCR's eval metrics)
        c_ok, q_ok = [float(correct[i]) for i in ok], [qs[i] for i in ok]
        diagnostics.update({"confidence_mean": sum(q_ok) / len(q_ok), "brier_score": brier_score(c_ok, q_ok),
                            "ece": ece(c_ok, q_ok), "auroc": auroc(c_ok, q_ok)})
    return RewardOutput(seq=seq, diagnostics=diagnostics)
