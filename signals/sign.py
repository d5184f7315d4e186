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

A-NSR (Ingle, Chauhan, Yadav & Mishra, "Adaptive Negative Reinforcement for LLM Reasoning", arXiv 2605.07137, as
written in the authors' repository ``Jaival111/Adaptive-Negative-Reinforcement``, README "Method: A-NSR", commit
5e57f31) replaces
the fixed weights by schedules, ``L = λ(t)·L_PSR + β(t)·L_NSR``: ``nsr``'s option ``schedule``
(:class:`NSROptions`, :func:`a_nsr_weights`) gives a correct rollout ``λ(t)`` and an incorrect one ``−β(t)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

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


NSR_SCHEDULES = ("constant", "exp", "cosine", "accuracy")
"""``trainer.advantage.nsr.schedule``: constant (plain NSR) | exp, cosine, accuracy (A-NSR's Schedules 1, 2, 3)."""


@dataclass
class NSROptions(SignOptions):
    """Options of ``nsr``: plain NSR (``schedule=constant``) or A-NSR's scheduled weights (:func:`a_nsr_weights`).
    The defaults of the schedule's parameters are the A-NSR README's hyperparameter table."""

    schedule: Literal[NSR_SCHEDULES] = "constant"
    """constant: NSR (0 / −1) | exp: Schedule 1, β(t) decays exponentially and λ(t) rises linearly | cosine:
    Schedule 2, β(t) cosine-annealed | accuracy: Schedule 3, β from the batch's accuracy."""
    beta_max: float = 1.5
    """β_max, the weight of incorrect rollouts at the start (exp, cosine) or at batch accuracy 0 (accuracy)."""
    beta_min: float = 0.5
    """β_min, the weight of incorrect rollouts it anneals to."""
    kappa: float = 0.03
    """κ, the decay rate per training step of ``schedule=exp``."""
    lam_min: float = 0.05
    """λ_min, the weight of correct rollouts at the start of ``schedule=exp`` (the other schedules give them 0)."""
    lam_max: float = 0.2
    """λ_max, the weight of correct rollouts at the last step of ``schedule=exp``."""

    def __post_init__(self):
        if self.schedule not in NSR_SCHEDULES:
            raise ValueError(f"schedule={self.schedule}: choose one of {', '.join(NSR_SCHEDULES)}")
        if not 0 <= self.beta_min <= self.beta_max:
            raise ValueError(f"beta_min={self.beta_min}, beta_max={self.beta_max}: need 0 <= beta_min <= beta_max")
        if not 0 <= self.lam_min <= self.lam_max:
            raise ValueError(f"lam_min={self.lam_min}, lam_max={self.lam_max}: need 0 <= lam_min <= lam_max")
        if self.kappa < 0:
            raise ValueError(f"kappa={self.kappa}: must be >= 0")


def a_nsr_weights(opts: NSROptions, step: Optional[int] = None, total_steps: Optional[int] = None,
                  accuracy: Optional[float] = None) -> Tuple[float, float]:
    """A-NSR's ``(λ(t), β(t))``: the weights of a correct and of an incorrect rollout before ``scale`` (the README
    of ``Jaival111/Adaptive-Negative-Reinforcement``, "Scheduling Functions"; docs/algorithms.md "A-NSR: scheduled
    weights for the two halves"). ``step`` is the training step t (1 .. ``total_steps`` = T_total, as the authors'
    code counts), ``accuracy`` the fraction p̂ of the batch's rollouts that are correct.

    * constant: ``(0, 1)`` (NSR);
    * exp (Schedule 1): ``β = β_min + (β_max − β_min)·e^{−κ t}``, ``λ = λ_min + (λ_max − λ_min)·t / T``;
    * cosine (Schedule 2): ``β = β_min + ½(β_max − β_min)(1 + cos(π t / T))``, ``λ = 0``;
    * accuracy (Schedule 3): ``β = β_min + (β_max − β_min)(1 − p̂)``, ``λ = 0``.

    ``t / T`` is clipped to [0, 1] (the authors' code clips its progress the same way). The README defines λ(t) for
    Schedule 1 only; the others keep NSR's 0 for correct rollouts (ours). Example (defaults, exp, t = 10, T = 100):
    ``(0.065, 0.5 + e^{−0.3}) = (0.065, 1.2408...)``."""
    if opts.schedule == "constant":
        return 0.0, 1.0
    span = opts.beta_max - opts.beta_min
    if opts.schedule == "accuracy":
        if accuracy is None:
            raise ValueError("trainer.advantage.nsr.schedule=accuracy needs the batch's accuracy")
        return 0.0, opts.beta_min + span * (1.0 - float(accuracy))
    if step is None or total_steps is None or total_steps < 1:
        raise ValueError(f"trainer.advantage.nsr.schedule={opts.schedule} needs the training step and the number of "
                         f"steps (got step={step}, total_steps={total_steps})")
    progress = min(max(step / total_steps, 0.0), 1.0)
    if opts.schedule == "exp":
        return (opts.lam_min + (opts.lam_max - opts.lam_min) * progress,
                opts.beta_min + span * math.exp(-opts.kappa * step))
    return 0.0, opts.beta_min + 0.5 * span * (1.0 + math.cos(math.pi * progress))  # cosine


def sign_values(name: str, opts: SignOptions) -> Tuple[float, float]:
    """(advantage of a correct rollout, of an incorrect one) of estimator ``name`` before ``scale``."""
    on_correct, on_incorrect = SIGN_VALUES[name]
    return (float(opts.lam) if on_correct is None else on_correct), on_incorrect


def sign_advantages(correct, on_correct: float, on_incorrect: float):
    """``on_correct`` where ``correct`` (bool tensor) is True, else ``on_incorrect``; float32, same shape.

    Example: ``correct = [True, False]``, NSR's (0, -1) -> ``[0., -1.]``."""
    import torch

    return torch.where(correct.bool(), torch.tensor(float(on_correct)), torch.tensor(float(on_incorrect)))


__all__ = ["NSR_SCHEDULES", "NSROptions", "SIGN_VALUES", "SignOptions", "WReinforceOptions", "a_nsr_weights",
           "sign_advantages", "sign_values"]
