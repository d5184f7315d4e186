"""``delta_belief``: ΔBelief-RL's turn rewards, the change in the agent's own belief in the secret (docs/algorithms.md
"ΔBelief-RL and the 20-Questions task").

Source: Auzina et al., "Intrinsic Credit Assignment for Long Horizon Interaction", arXiv 2602.12342, and the
authors' code (bethgelab/delta-belief-rl: ``llm_agent/generation.py`` ``belief_log_prob`` / ``get_scores``,
``llm_agent/prompts.py`` ``get_elicitation``). In a multi-turn episode with secret ``s`` (``task=twenty_questions``,
the row's ``answer``), the belief after turn t is the log-probability the agent gives the secret's tokens when
its history up to and including the environment's reply to turn t is followed by an assistant message that names
the secret (the *elicitation*):

    b_t = log p_θ(s | history_≤t, elicitation)        t = 0 .. T_episode, b_0 on the prompt alone
    r_t = b_t − b_{t−1}                                t = 1 .. T_episode

so a question earns credit by how much its answer moved the agent toward the secret, and Σ_t r_t = b_T − b_0.

``dense: true`` (default) places r_t at the last policy token of turn t (``RewardOutput.token`` / ``token_mask``),
turned into group-normalised reward-to-go advantages as the dense PRM's step rewards; the sequence score is then 0
so that the gain is not counted twice (the convention of every dense source here). ``dense: false`` gives
Σ_t r_t = b_T − b_0 as one score per episode (the authors' trajectory-level attribution).

Authors' choices followed: the elicitation is an assistant message ``Is it '{secret}'?`` (their
``ELICITATION_PROMPT``), the belief sums the log-probs of the secret's tokens (``agg: sum`` in their
``config/base_multiturn.yaml``; ``mean`` is their other option), read under the agent itself (``base_model:
actor``; ``model: initial`` reads the frozen initial policy). [ENG]: the secret's tokens are those of the
tokenised elicitation that overlap its characters (the authors search for the secret's own tokenisation);
``clip`` bounds each r_t (their code can clip to [−2, 2] or squash with tanh, and centre per episode; the centring
is not implemented). Cost: one teacher-forced pass per turn and episode, plus one for b_0, over the elicitation
tokens only (the history is the pass's prompt), counted in ``scoring/forward_*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Optional, Sequence, Tuple

import torch

from drox.components import multiturn_tasks
from drox.signals.spans import TokenCharMap, encode, left_pad, pad_id, right_pad
from drox.rewards.base import RewardOutput, ScoringContext, register_reward
from drox.rollout.base import unpadded

AGGREGATES = ("sum", "mean")
MODELS = ("current", "initial")


@dataclass
class DeltaBeliefConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    elicitation: str = "Is it '{secret}'?"
    """The assistant message after the history whose {secret} tokens give the belief (the authors' wording)."""
    aggregate: Literal[AGGREGATES] = "sum"
    """The belief over the secret's tokens: sum (log p of the whole secret; the authors' default) | mean."""
    model: Literal[MODELS] = "current"
    """Whose belief: current (the agent being trained, as the paper) | initial (the frozen initial policy)."""
    dense: bool = True
    """true: r_t at each turn's last policy token (reward-to-go) | false: b_T - b_0 as one score per episode."""
    clip: Optional[float] = None
    """Bound each r_t to [-clip, clip]; null = unbounded. [ENG]"""

    def __post_init__(self):
        if self.elicitation.count("{secret}") != 1:
            raise ValueError(f"reward.delta_belief.elicitation must contain {{secret}} once, got {self.elicitation!r}")
        if self.clip is not None and self.clip <= 0:
            raise ValueError(f"reward.delta_belief.clip must be > 0 or null, got {self.clip}")


def check_task(opts: DeltaBeliefConfig, cfg) -> None:
    """Config time: the source needs episodes with a secret (a multi-turn task)."""
    task = cfg.task.name
    if task not in multiturn_tasks():
        raise ValueError(f"reward.delta_belief reads beliefs about a secret after each turn of a multi-turn episode; "
                         f"task={task} has none: use task={multiturn_tasks()[0]}")


def elicitation_tokens(tokenizer, template: str, secret: str) -> Tuple[List[int], Tuple[int, int]]:
    """(token ids of the elicitation message's text, [first, last] token index of the secret in them)."""
    text = template.format(secret=secret)
    start = len(template.split("{secret}", 1)[0].format())
    ids = encode(tokenizer, text)
    span = TokenCharMap(tokenizer, ids).span(start, start + len(secret))
    if span is None:
        raise ValueError(f"reward.delta_belief: the secret {secret!r} has no tokens in the elicitation {text!r}")
    return ids, span


def belief_points(action_mask: torch.Tensor, response_mask: torch.Tensor,
                  turn_ends: Sequence[Sequence[int]]) -> List[List[int]]:
    """For each row, the response lengths after which beliefs are read: 0 (the prompt alone, b_0) and, for each
    turn t, the end of the environment's reply to it (b_t): the next turn's first policy token, or the row's end.

    action_mask, response_mask  # [N, T]
    """
    points = []
    for n, ends in enumerate(turn_ends):
        length = int(response_mask[n].sum().item())
        action = action_mask[n].tolist()
        row = [0]
        for e in ends:
            j = int(e) + 1
            while j < length and action[j] == 0:
                j += 1
            row.append(j)
        points.append(row)
    return points


def aggregate_beliefs(logprobs: torch.Tensor, secret_mask: torch.Tensor, how: str = "sum") -> torch.Tensor:
    """Beliefs from the elicitation's token log-probs: sum (or mean) over the secret's tokens.

    logprobs, secret_mask  # [M, E] -> [M]
    """
    total = (logprobs * secret_mask).sum(-1)
    return total if how == "sum" else total / secret_mask.sum(-1).clamp_min(1)


def turn_rewards(beliefs: Sequence[torch.Tensor], turn_ends: Sequence[Sequence[int]], T: int,
                 clip: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """r_t = b_t − b_{t−1} at each turn's last policy token.

    beliefs: N tensors [K_n + 1] (b_0 .. b_K); turn_ends: N lists of K_n response indices -> (token rewards [N, T],
    token mask [N, T] bool).
    """
    token = torch.zeros(len(beliefs), T)
    placed = torch.zeros(len(beliefs), T, dtype=torch.bool)
    for n, (b, ends) in enumerate(zip(beliefs, turn_ends)):
        if not len(ends):
            continue
        r = b[1:] - b[:-1]  # [K]
        if clip is not None:
            r = r.clamp(-clip, clip)
        idx = torch.tensor(list(ends), dtype=torch.long)
        token[n, idx] = r.float()
        placed[n, idx] = True
    return token, placed


@register_reward("delta_belief", DeltaBeliefConfig, check=check_task,
                 verl="it scores multi-turn episodes, which the verl backend does not run")
def delta_belief(ctx: ScoringContext, cfg: DeltaBeliefConfig) -> RewardOutput:
    batch = ctx.batch
    Q, G, T = batch.num_groups, batch.group_size, batch.response_ids.shape[1]
    if batch.turn_ends is None or batch.action_mask is None:
        raise ValueError("reward.delta_belief needs multi-turn episodes with turn boundaries and a secret; this batch "
                         f"has none (task {getattr(ctx.task, 'name', '?')}): use task={multiturn_tasks()[0]}")
    if ctx.tokenizer is None:
        raise ValueError("reward.delta_belief needs the tokenizer to encode the elicitation")
    points = belief_points(batch.action_mask, batch.response_mask, batch.turn_ends)
    prompts = unpadded(batch.prompt_ids, batch.prompt_mask)
    responses = unpadded(batch.response_ids, batch.response_mask)
    elicit = {}
    for row in ctx.rows:
        secret = str(row["answer"])
        if secret not in elicit:
            elicit[secret] = elicitation_tokens(ctx.tokenizer, cfg.elicitation, secret)
    histories, queries, spans, owner = [], [], [], []  # one entry per belief read
    for n, row_points in enumerate(points):
        ids, span = elicit[str(ctx.rows[n // G]["answer"])]
        for length in row_points:
            histories.append(prompts[n] + responses[n][:length])
            queries.append(ids)
            spans.append(span)
            owner.append(n)
    pad = pad_id(ctx.tokenizer)
    h_ids, h_mask = left_pad(histories, pad, min_width=1)  # [M, P'] each read's history (prompt + transcript prefix)
    e_ids, e_mask = right_pad(queries, pad)  # [M, E] its elicitation
    secret_mask = torch.zeros_like(e_mask)  # [M, E]
    for m, (first, last) in enumerate(spans):
        secret_mask[m, first:last + 1] = 1.0
    model = ctx.reference() if cfg.model == "initial" else None
    logprobs = ctx.logprobs(h_ids, h_mask, e_ids, e_mask, model=model)  # [M, E]
    flat = aggregate_beliefs(logprobs, secret_mask, cfg.aggregate)  # [M]
    beliefs = list(flat.split([len(p) for p in points]))  # N x [K_n + 1]
    token, placed = turn_rewards(beliefs, batch.turn_ends, T, cfg.clip)
    gains = token.sum(-1)  # [N] Σ_t r_t (= b_T − b_0 unclipped)
    turns = sum(len(e) for e in batch.turn_ends)
    diagnostics = {"b0_mean": float(torch.stack([b[0] for b in beliefs]).mean()),
                   "bT_mean": float(torch.stack([b[-1] for b in beliefs]).mean()),
                   "turn_reward_mean": float(token.sum() / max(turns, 1)),
                   "gain_mean": float(gains.mean())}
    if not cfg.dense:
        return RewardOutput(seq=gains.view(Q, G), diagnostics=diagnostics)
    return RewardOutput(seq=torch.zeros(Q, G), token=token.view(Q, G, T), token_mask=placed.view(Q, G, T),
                        diagnostics=diagnostics)


__all__ = ["DeltaBeliefConfig", "aggregate_beliefs", "belief_points", "delta_belief", "elicitation_tokens",
           "turn_rewards"]
