"""The sign-selective advantages of PSR, NSR and W-REINFORCE (Zhu et al., "The Surprising Effectiveness of Negative
Reinforcement in LLM Reasoning", arXiv 2506.01347, §2.2 Eqs. 3-4 and §5 Eq. 9), after the official code
``RLVR-Decomposed`` ``compute_psr_nsr_outcome_advantage``: one table and the estimators' options, read by drox's
estimators ``psr`` / ``nsr`` / ``w_reinforce`` (:mod:`drox.trainers.algos`) and by the verl backend's
(:mod:`drox.integrations.verl.estimators`), whose workers parse the same options. Torch is imported only by
:func:`sign_advantages`.

==============  ===========  =============
estimator       correct      incorrect
==============  ===========  =============
psr             1            0              (PSR: ``A = R`` with 1/0 rewards)
nsr             0            −1             (NSR: ``A = R − 1``)
w_reinforce     λ (0.1)      −1             (W-REINFORCE, Eq. 9: ``λ·L_PSR + L_NSR``)
==============  ===========  =============

The paper writes the reward as r ∈ {−1, +1} while the code scores 1/0 and shifts by −1 for NSR; both give the
table above. Every advantage is then multiplied by ``scale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

SIGN_VALUES: Dict[str, Tuple[Optional[float], float]] = {
    "psr": (1.0, 0.0),  # PSR, Eq. 3: A = R with 1/0 rewards
    "nsr": (0.0, -1.0),  # NSR, Eq. 4: A = R - 1
    "w_reinforce": (None, -1.0),  # W-REINFORCE, Eq. 9: λ·L_PSR + L_NSR
}
"""Estimator name -> (advantage of a correct rollout, of an incorrect one); None = W-REINFORCE's λ (its ``lam``)."""


@dataclass
class SignOptions:
    """Options of ``psr`` and ``nsr`` (``trainer.advantage.<name>.*``; verl: ``algorithm.drox.*``)."""

    scale: float = 1.0
    """Multiplies every advantage (the weight of the former reward sources ``positive_only`` / ``negative_only``)."""
    correct_above: float = 0.5
    """A rollout is correct when its score exceeds this (the outcome reward's 1 / 0 points by default)."""


@dataclass
class WReinforceOptions(SignOptions):
    """Options of ``w_reinforce``."""

    lam: float = 0.1
    """λ, the weight of correct samples (RLVR-Decomposed's README: "recommended value is 0.1"); 1 = REINFORCE with
    ±1 rewards, 0 = NSR."""


def sign_values(name: str, opts: SignOptions) -> Tuple[float, float]:
    """(advantage of a correct rollout, of an incorrect one) of estimator ``name`` before ``scale``."""
    on_correct, on_incorrect = SIGN_VALUES[name]
    return (float(opts.lam) if on_correct is None else on_correct), on_incorrect


def sign_advantages(correct, on_correct: float, on_incorrect: float):
    """``on_correct`` where ``correct`` (bool tensor) is True, else ``on_incorrect``; float32, same shape.

    Example: ``correct = [True, False]``, NSR's (0, -1) -> ``[0., -1.]``."""
    import torch

    return torch.where(correct.bool(), torch.tensor(float(on_correct)), torch.tensor(float(on_incorrect)))


__all__ = ["SIGN_VALUES", "SignOptions", "WReinforceOptions", "sign_advantages", "sign_values"]
