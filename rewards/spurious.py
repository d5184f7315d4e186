"""Spurious rewards (Shao et al., "Spurious Rewards: Rethinking Training Signals in RLVR", arXiv 2506.10947).

Three controls (docs/algorithms.md "Spurious rewards: random, inverse, incorrect label"; code:
``ruixin31/Spurious_Rewards``, ``code/ttrl/verifier/auto_verify.py``):

* ``random``: ``random_reward_fn`` = ``int(random.random() < rate)``, γ = 0.5 by default; ignores the output.
* ``inverse``: the ``inverse_*`` tasks, ``1 − r`` of another reward.
* ``incorrect_label``: the ground-truth verifier scored against deliberately wrong labels.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

import torch

from drox.registry import parse_dataclass
from drox.rewards.base import REWARD_SOURCES, RewardOutput, ScoringContext, register_reward
from drox.tasks.verify import clean, parse_number

# ------------------------------------------------------------------------------------------------ random


@dataclass
class RandomConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    p: float = 0.5
    """Probability of reward 1 (the paper's γ; its runs use 0.5, ``REWARD="random0.5"``)."""


def random_draws(seed: int, step: int, n: int, p: float, gen_batch: int = 0) -> torch.Tensor:
    """``n`` Bernoulli(p) draws in {0., 1.}; draw i depends only on (seed, step, gen_batch, i).

    ``gen_batch`` > 0 is a refill batch of the same step (dynamic sampling): its draws are fresh.

    The generator is seeded from a string (Python hashes str seeds with SHA-512, so the stream is the
    same in every process), not from the global RNG: the rewards neither consume nor depend on the
    trainer's random state, so a resumed run redraws exactly the rewards of the uninterrupted one.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"reward.random.p must be in [0, 1] (got {p})")
    key = f"drox/reward/random/{seed}/{step}" + (f"/{gen_batch}" if gen_batch else "")
    rng = random.Random(key)
    return torch.tensor([float(rng.random() < p) for _ in range(n)])


@register_reward("random", RandomConfig)
def random_reward(ctx: ScoringContext, cfg: RandomConfig) -> RewardOutput:
    """Spurious Rewards ``random_reward_fn``: per-rollout Bernoulli(p), ignoring output and label."""
    Q, G = ctx.batch.num_groups, ctx.batch.group_size
    return RewardOutput(seq=random_draws(ctx.seed, ctx.step, Q * G, cfg.p, ctx.gen_batch).view(Q, G))


# ------------------------------------------------------------------------------------------------ inverse


@dataclass
class InverseConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    of: str = "outcome"
    """The source whose score is flipped."""
    of_options: Dict[str, Any] = field(default_factory=dict)
    """Options of that source (its defaults when empty); independent of ``reward.<of>`` if that is also selected."""
    of_parsed: Any = field(init=False, repr=False, default=None)
    """``of_options`` parsed by the source's own options dataclass (set at config time)."""

    def __post_init__(self):
        if self.of == "inverse":
            raise ValueError("reward.inverse.of cannot be 'inverse'")
        if self.of not in REWARD_SOURCES:
            raise ValueError(f"reward.inverse.of={self.of}: unknown reward source; available: "
                             f"{', '.join(REWARD_SOURCES.names())}")
        if REWARD_SOURCES.get(self.of).meta.get("advantages"):
            # those scores are advantages for the estimator "none", not rewards; flipping them is meaningless
            raise ValueError(f"reward.inverse.of: '{self.of}' produces advantages, not rewards")
        self.of_parsed = parse_dataclass(REWARD_SOURCES.get(self.of).options, self.of_options,
                                         "reward.inverse.of_options")


@register_reward("inverse", InverseConfig)
def inverse(ctx: ScoringContext, cfg: InverseConfig) -> RewardOutput:
    """Spurious Rewards ``inverse_*`` tasks: ``1 − r`` of the source ``of`` (1/0 rewards become 0/1). The inner
    source's ``extras`` pass through unchanged (e.g. ``of=variance``'s σ, which the query filter reads)."""
    inner = REWARD_SOURCES.get(cfg.of).fn(ctx, cfg.of_parsed)
    if inner.token is not None:
        raise ValueError(f"reward.inverse.of: '{cfg.of}' has dense token scores, which inverse does not flip")
    diagnostics = {f"of_{k}": v for k, v in inner.diagnostics.items()}
    diagnostics["of_mean"] = float(inner.seq.float().mean())
    return RewardOutput(seq=1.0 - inner.seq.float(), diagnostics=diagnostics, extras=dict(inner.extras))


# ------------------------------------------------------------------------------------------ incorrect label

LABELS = ("perturbed", "majority_wrong")


@dataclass
class IncorrectLabelConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    label: Literal[LABELS] = "perturbed"
    """[ours] perturbed: reference + a nonzero integer offset; majority_wrong: the group's most common wrong answer."""
    max_offset: int = 10
    """[ours] perturbed offsets are drawn uniformly from ±{1..max_offset}."""
    label_field: str = "answer"
    """The row field the task's verifier compares against (``target`` for countdown, perturbed only)."""
    correct: float = 1.0
    """Score when the rollout matches the wrong label."""
    incorrect: float = 0.0
    """Score otherwise."""


def perturbed_label(reference: Any, seed: int, problem_id: str, max_offset: int = 10) -> tuple[str, bool]:
    """(wrong label, was the reference a plain number): reference + k, k ≠ 0 fixed per (seed, problem_id).

    Numbers (int, decimal, a/b, \\frac{a}{b}) are shifted exactly; anything else becomes ``(ref)+k``,
    still a wrong answer for the symbolic checker (no rollout is likely to match it).
    """
    if max_offset < 1:
        raise ValueError(f"reward.incorrect_label.max_offset must be >= 1 (got {max_offset})")
    rng = random.Random(f"drox/reward/incorrect_label/{seed}/{problem_id}")
    k = rng.randint(1, max_offset) * rng.choice((-1, 1))
    x = parse_number(str(reference))
    if x is None:
        return f"({reference}){k:+d}", False
    y = x + k
    return (str(y.numerator) if y.denominator == 1 else f"{y.numerator}/{y.denominator}"), True


def majority_wrong_answer(extracted: List[Optional[str]], correct: List[bool]) -> Optional[str]:
    """The most common (after ``clean``) extracted answer among the rollouts the verifier marked wrong.

    Ties go to the answer seen first; None when every rollout is right or no wrong one has an answer.
    """
    wrong = [clean(e) for e, ok in zip(extracted, correct) if not ok and e is not None and clean(e)]
    return Counter(wrong).most_common(1)[0][0] if wrong else None


@register_reward("incorrect_label", IncorrectLabelConfig)
def incorrect_label(ctx: ScoringContext, cfg: IncorrectLabelConfig) -> RewardOutput:
    """Spurious Rewards "incorrect label": the task's verifier against a wrong label per problem.

    Deviation: the paper relabels the data once with wrong majority votes of 64 samples of the initial
    policy; ``majority_wrong`` instead takes the most common wrong answer of the current group (G samples
    of the current policy), recomputed every step, and falls back to ``perturbed`` when there is none.
    """
    if cfg.label not in LABELS:
        raise ValueError(f"reward.incorrect_label.label must be one of {', '.join(LABELS)} (got {cfg.label!r})")
    if cfg.label == "majority_wrong" and cfg.label_field != "answer":
        raise ValueError("reward.incorrect_label: label=majority_wrong uses an extracted answer as the label, "
                         "so it needs label_field=answer (a verifier comparing answers with row['answer'])")
    verifier = ctx.task.verifier
    if verifier is None:
        raise ValueError(f"reward.incorrect_label: task '{ctx.task.name}' has no verifier")
    G = ctx.batch.group_size
    truth = ctx.verify() if cfg.label == "majority_wrong" else None
    wrong_rows, fallbacks, nonnumeric = [], 0, 0
    for q, row in enumerate(ctx.rows):
        if cfg.label_field not in row:
            raise ValueError(f"reward.incorrect_label: rows have no field '{cfg.label_field}' (label_field)")
        label = None
        if truth is not None:
            sl = slice(q * G, (q + 1) * G)
            label = majority_wrong_answer(truth.extracted[sl], truth.correct[sl])
            fallbacks += label is None
        if label is None:
            pid = row.get("problem_id", row.get("prompt", q))
            label, numeric = perturbed_label(row[cfg.label_field], ctx.seed, str(pid), cfg.max_offset)
            nonnumeric += not numeric
        wrong_rows.append({**row, cfg.label_field: label})
    # the task's own verifier on modified rows: answer comparison stays in one place (tasks/verify.py)
    result = verifier(ctx.batch.texts, [r for r in wrong_rows for _ in range(G)])
    hit = torch.tensor(result.correct, dtype=torch.bool).view(ctx.batch.num_groups, G)
    seq = torch.where(hit, torch.tensor(cfg.correct), torch.tensor(cfg.incorrect))
    Q = max(len(ctx.rows), 1)
    diagnostics = {"verifier_timeouts": float(result.timeouts), "nonnumeric_frac": nonnumeric / Q}
    if truth is not None:
        diagnostics["fallback_frac"] = fallbacks / Q
    return RewardOutput(seq=seq, diagnostics=diagnostics)
