"""``pairwise``: pairwise self-judgment within a group, win rates as the reward (docs/algorithms.md "Pairwise
self-judgment").

The judge (by default the policy itself, as in SERL, Ou et al., arXiv 2511.07922, AAAI 2026, §3: the model is
actor and judge, and its pairwise verdicts over a group of its own responses become the actor's reward) reads the
question and two responses of the same group, shown as A and B, and answers. With ``v(a, b) = p(A) / (p(A) +
p(B))`` at the verdict position when ``a`` is shown first, the probability that response i beats j is

    P_ij = ( v(i, j) + 1 - v(j, i) ) / 2          (both orders; ``both_orders: false`` keeps v(i, j) alone)

which cancels a judge's preference for a position (SERL's position-bias mitigation), so P_ji = 1 - P_ij. It is
computed as ``1/2 + (v(i, j) - v(j, i)) / 2``, which is exactly 1/2 in float32 when both orders give the same
verdict (``(v + 1 - v) / 2`` is not, for about a quarter of the values, and Copeland's sign would turn that
rounding into a full win). The reward of response i over its opponents O(i) is

    win_rate:  r_i = mean_{j in O(i)} P_ij
    copeland:  r_i = mean_{j in O(i)} sign(P_ij - 1/2)      (wins minus losses, a tie counts 0; SERL's Copeland)

Opponents: every other response of the group (``opponents: 0``, a round robin: G (G - 1) judge prompts per group
with both orders) or the next k responses cyclically (``opponents: k``; then each response also meets the k before
it, as their opponent, but only its own k enter its mean) [ENG]. Choices [ENG]: the judge prompt
(``judge_template``), verdict tokens " A" / " B", a written verification (``judge_verify_tokens``) before the
verdict as for the generative step judge, and SERL's judge-side self-consistency reward is not implemented (the
judge is only trained through the actor's updates when it is the policy). The judge is the policy, the frozen
initial policy or a separate LM, as for ``reward.prm kind=generative`` (rewards/prm_judge.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Tuple

import torch

from drox.rewards.base import RewardOutput, ScoringContext, register_reward
from drox.signals.prm import JUDGES

AGGREGATIONS = ("win_rate", "copeland")


@dataclass
class PairwiseConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    judge: Literal[JUDGES] = "policy"
    """policy (self-judgment) | initial (the frozen initial policy) | model (a separate LM at ``judge_path``)."""
    judge_path: str = ""
    """judge=model: a local HF folder or hub id, or ``embedded`` (SmolLM2-135M-Instruct)."""
    judge_template: str = ("Problem: {question}\n\nResponse A:\n{a}\n\nResponse B:\n{b}\n\n"
                           "Which response is correct, A or B?")
    """The judge's user message; {question} = the prompt, {a} / {b} = the two responses in the order shown."""
    judge_verify_tokens: int = 0
    """Tokens of verification the judge writes (greedy) before its verdict; 0 = verdict directly."""
    verdict_prefix: str = "\nAnswer:"
    """Text after the verification, before the verdict token."""
    verdict_a: str = " A"
    """The verdict token meaning 'the first response shown is better' (one token)."""
    verdict_b: str = " B"
    """The verdict token meaning 'the second response shown is better' (one token)."""
    aggregation: Literal[AGGREGATIONS] = "win_rate"
    """win_rate (mean probability of winning) | copeland (mean of wins minus losses, SERL)."""
    opponents: int = 0
    """0 = every other response of the group (round robin); k > 0 = the next k responses, cyclically. [ENG]"""
    both_orders: bool = True
    """Judge each pair in both orders and average (cancels position bias); false halves the judge passes."""

    def __post_init__(self):
        for key in ("{question}", "{a}", "{b}"):
            if key not in self.judge_template:
                raise ValueError(f"reward.pairwise.judge_template must contain {key}, got {self.judge_template!r}")
        if self.opponents < 0 or self.judge_verify_tokens < 0:
            raise ValueError(f"reward.pairwise.opponents and judge_verify_tokens must be >= 0, got "
                             f"{self.opponents} and {self.judge_verify_tokens}")


# ------------------------------------------------------------------------------------------------ pure math


def matchups(G: int, opponents: int = 0) -> List[Tuple[int, int]]:
    """The (i, j) pairs i < j that are judged in a group of G: all of them (``opponents`` 0 or >= G - 1) or, for
    k = ``opponents``, i with i+1 .. i+k (mod G)."""
    if opponents <= 0 or opponents >= G - 1:
        return [(i, j) for i in range(G) for j in range(i + 1, G)]
    return sorted({tuple(sorted((i, (i + d) % G))) for i in range(G) for d in range(1, opponents + 1)})


def win_probabilities(v_first: torch.Tensor, v_second: torch.Tensor = None) -> torch.Tensor:
    """P(i beats j) per judged pair: ``1/2 + (v(i, j) - v(j, i)) / 2``, or ``v(i, j)`` with one order.

    v_first  # [M] judge's P(first shown wins) with i shown first; v_second  # [M] with j shown first -> [M]
    Written so that equal verdicts give exactly 0.5 (a tie): ``v - v`` is exactly 0, ``v + 1 - v`` need not be 1.
    """
    if v_second is None:
        return v_first.float()
    return 0.5 + (v_first.float() - v_second.float()) / 2.0


def pairwise_rewards(G: int, pairs: List[Tuple[int, int]], p_win: torch.Tensor, aggregation: str = "win_rate",
                     opponents: int = 0) -> torch.Tensor:
    """Each response's reward from its matchups (module docstring).

    pairs: M (i, j); p_win  # [M] P(i beats j) -> [G]: win_rate = mean over i's opponents of P_i., copeland = mean
    of sign(P_i. - 1/2). Opponents of i: every j it was paired with (round robin), or its own next k with
    ``opponents`` = k < G - 1.
    """
    per = torch.zeros(G, G)  # per[i, j] = i's result against j
    met = torch.zeros(G, G, dtype=torch.bool)
    for (i, j), p in zip(pairs, p_win.tolist()):
        # copeland: sign(p - 1/2); p is exactly 0.5 when both orders agree (win_probabilities), a tie scoring 0
        a = p if aggregation == "win_rate" else float((p > 0.5) - (p < 0.5))
        per[i, j], per[j, i] = a, (1.0 - p) if aggregation == "win_rate" else -a
        met[i, j] = met[j, i] = True
    if 0 < opponents < G - 1:  # only i's own next k opponents count for i
        own = torch.zeros(G, G, dtype=torch.bool)
        for i in range(G):
            for d in range(1, opponents + 1):
                own[i, (i + d) % G] = True
        met = met & own
    return (per * met).sum(-1) / met.sum(-1).clamp_min(1)


# ------------------------------------------------------------------------------------------------ the source


def check_config(opts: PairwiseConfig, cfg) -> None:
    """Config-time checks (before anything loads)."""
    from drox.rewards.prm_judge import check_judge

    check_judge("reward.pairwise", opts.judge, opts.judge_path, opts.judge_verify_tokens)
    if int(cfg.trainer.samples_per_prompt) < 2:
        raise ValueError("reward.pairwise compares responses of a group; set trainer.samples_per_prompt >= 2")


@register_reward("pairwise", PairwiseConfig, check=check_config,
                 verl="it calls the policy inside the reward, and drox.integrations.verl does not have it yet "
                      "(docs/verl.md, 'Not done')")
def pairwise(ctx: ScoringContext, cfg: PairwiseConfig) -> RewardOutput:
    from drox.rewards.prm_judge import judge_verdicts

    batch = ctx.batch
    Q, G = batch.num_groups, batch.group_size
    pairs = matchups(G, cfg.opponents)
    orders = [(i, j) for i, j in pairs] + ([(j, i) for i, j in pairs] if cfg.both_orders else [])
    prompts = []
    for q in range(Q):
        question = ctx.rows[q]["prompt"]
        texts = batch.texts[q * G:(q + 1) * G]
        prompts += [cfg.judge_template.format(question=question, a=texts[a], b=texts[b]) for a, b in orders]
    v = judge_verdicts(ctx, prompts, judge=cfg.judge, path=cfg.judge_path, verify_tokens=cfg.judge_verify_tokens,
                       verdict_prefix=cfg.verdict_prefix, good_text=cfg.verdict_a, bad_text=cfg.verdict_b,
                       option="reward.pairwise").view(Q, len(orders))
    M = len(pairs)
    seq = torch.stack([
        pairwise_rewards(G, pairs, win_probabilities(v[q, :M], v[q, M:] if cfg.both_orders else None),
                         cfg.aggregation, cfg.opponents)
        for q in range(Q)])  # [Q, G]
    diagnostics = {"judged_pairs": float(Q * M), "first_shown_wins": float(v.mean())}
    if cfg.both_orders:  # share of pairs whose verdict names the same response in both orders (always "A": 0)
        diagnostics["order_consistency"] = float(((v[:, :M] > 0.5) != (v[:, M:] > 0.5)).float().mean())
    return RewardOutput(seq=seq, diagnostics=diagnostics)


__all__ = ["PairwiseConfig", "matchups", "pairwise", "pairwise_rewards", "win_probabilities"]
