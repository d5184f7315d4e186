"""The sign-selective advantages of PSR, NSR and W-REINFORCE (Zhu et al., "The Surprising Effectiveness of Negative
Reinforcement in LLM Reasoning", arXiv 2506.01347, §2.2 Eqs. 3-4 and §5 Eq. 9), after the official code
``RLVR-Decomposed`` ``compute_psr_nsr_outcome_advantage``: one table, read by drox's reward sources
(:mod:`drox.rewards.sign`) and by the verl backend's estimators (:mod:`drox.integrations.verl.estimators`).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

SIGN_VALUES: Dict[str, Tuple[Optional[float], float]] = {
    "positive_only": (1.0, 0.0),  # PSR, Eq. 3: A = R with 1/0 rewards
    "negative_only": (0.0, -1.0),  # NSR, Eq. 4: A = R - 1
    "w_reinforce": (None, -1.0),  # W-REINFORCE, Eq. 9: λ·L_PSR + L_NSR
}
"""Source name -> (advantage of a correct rollout, of an incorrect one); None = W-REINFORCE's λ (its ``lam``)."""


def sign_advantages(correct: torch.Tensor, on_correct: float, on_incorrect: float) -> torch.Tensor:
    """``on_correct`` where ``correct`` (bool) is True, else ``on_incorrect``; float32, same shape as ``correct``.

    Example: ``correct = [True, False]``, NSR's (0, -1) -> ``[0., -1.]``."""
    return torch.where(correct.bool(), torch.tensor(float(on_correct)), torch.tensor(float(on_incorrect)))


__all__ = ["SIGN_VALUES", "sign_advantages"]
