"""DRO's teacher-forced reference pass (Xu et al., arXiv 2506.13351 v1 §4.1; docs/algorithms.md "R3: DRO's reasoning
reflection reward"): the reference outcome ``y`` spliced after each rollout's reasoning and scored under the reward
policy, ``ℓ_{i,j} = log π_rwd(y_j | q, ĉ_i, y_<j)`` and the rank of ``y_j`` in that distribution.

Used by the ``variance`` reward (:mod:`drox.rewards.variance`, which turns ``ℓ`` into R3) and by the ``query`` filter
(:mod:`drox.filters.query`, which computes σ itself with :func:`variance_stats` when no ``variance`` reward scored
the step, and in its offline rounds). The math and the splice are :mod:`drox.signals.r3`'s.

- :func:`rank_and_logprob`: the per-chunk reduction of the logits (log-prob and rank of the forced token);
- :func:`reward_policy_model`: the model the pass runs on (``reward_policy``: current, reference or lagged copy);
- :func:`score_references`: one counted pass over the ``Q·G`` spliced rollouts (plus ``Q`` masked-CoT rows when
  asked), returning :class:`References`;
- :func:`variance_stats`: that pass reduced to one step's :class:`~drox.signals.r3.VarianceStats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional

import torch

from drox.models.forward import frozen_copy
from drox.models.logprobs import logprobs_from_logits
from drox.rollout.base import unpadded
from drox.signals.r3 import (REWARD_POLICIES, VarianceConfig, VarianceStats, parse_template, r3_rewards,
                             sigma_max_of, splice)
from drox.signals.spans import encode, final_answer_start, pad_id, right_pad, split_reasoning

if TYPE_CHECKING:  # the scoring context is the components' contract; this layer only reads its fields
    from drox.rewards.base import ScoringContext


def rank_and_logprob(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per chunk: [b, T', 2] = (log-prob of the teacher-forced token, its rank in the distribution; 1 = argmax).

    Shapes: logits [b, T', V], ids [b, T'], mask [b, T'] -> [b, T', 2]. Tied logits share the better rank.
    Reduced inside the chunk so the [n, T', V] logits are never held whole (ctx.forward).
    """
    lp = logprobs_from_logits(logits, ids)
    picked = logits.float().gather(-1, ids.long().unsqueeze(-1))
    rank = (logits.float() > picked).sum(-1).float() + 1.0
    return torch.stack([lp, rank], -1) * mask.unsqueeze(-1)


def reward_policy_model(ctx: "ScoringContext", mode: str, lag_steps: int):
    """The model R3 is computed with (DRO v1 §4.2.1's reward policy): None (= the current policy) or a frozen copy
    kept in ``ctx.state`` (``reference``: the trainer's initial policy; ``lagged``: refreshed every ``lag_steps``)."""
    if mode not in REWARD_POLICIES:
        raise ValueError(f"reward.variance.reward_policy={mode!r}; choose one of: {', '.join(REWARD_POLICIES)}")
    if mode == "policy":
        return None
    if mode == "reference" and ctx.reference is not None:
        return ctx.reference()  # the trainer's frozen initial policy (also the KL reference)
    if ctx.policy is None:
        raise ValueError("reward.variance needs a policy to copy for reward_policy=" + mode)
    if mode == "lagged" and lag_steps < 1:
        raise ValueError(f"reward.variance.lag_steps must be >= 1, got {lag_steps}")
    key = f"variance/{mode}_policy"  # the name checkpoints save it under: keep it
    held = ctx.state.get(key)
    if held is None or (mode == "lagged" and ctx.step - held["step"] >= lag_steps):
        held = frozen_copy(ctx.policy, ctx.step)
        ctx.state[key] = held
    return held["model"]


@dataclass
class References:
    """What :func:`score_references` gathers: the reference tokens' log-probs and ranks after each rollout."""

    logprobs: torch.Tensor  # [Q, G, J]
    ranks: torch.Tensor  # [Q, G, J]
    ref_mask: torch.Tensor  # [Q, J]
    ref_len: torch.Tensor  # [Q]
    baseline: Optional[torch.Tensor]  # [Q, J] or None
    answers: List[str]  # N extracted final answers
    no_container: int  # responses without a final-answer container

    def stats(self, sigma: torch.Tensor) -> VarianceStats:
        """The step's :class:`VarianceStats` from these references and their σ [Q, J]."""
        return VarianceStats(sigma=sigma, sigma_max=sigma_max_of(sigma), ref_mask=self.ref_mask,
                             ref_logprobs=self.logprobs, ref_ranks=self.ranks)


def score_references(ctx: "ScoringContext", cfg: VarianceConfig, with_baseline: bool) -> References:
    """Splice the reference after each rollout's reasoning, run one teacher-forced pass (``ctx.forward``, counted; or
    ``ctx.token_scorer`` through the engine for the current policy) and gather the reference tokens; with
    ``with_baseline`` also one row per query with the EMPTY reasoning (the masked-CoT baseline)."""
    batch, tok = ctx.batch, ctx.tokenizer
    if tok is None:
        raise ValueError("reward.variance needs the tokenizer in the scoring context")
    Q, G = batch.num_groups, batch.group_size
    parse_template(cfg.template)  # fail before any model work
    model = reward_policy_model(ctx, cfg.reward_policy, cfg.lag_steps)

    refs = [str(row[cfg.reference_field]) for row in ctx.rows]
    ref_ids = [encode(tok, r) for r in refs]
    rows, starts, answers = [], [], []
    no_container = 0  # responses without a final-answer container: their own outcome stays in the context
    for n, text in enumerate(batch.texts):
        reasoning, answer = split_reasoning(text)
        no_container += final_answer_start(text) >= len(text)
        ids, start = splice(tok, reasoning, ref_ids[n // G], cfg.template)
        rows.append(ids)
        starts.append(start)
        answers.append(answer)
    prompt_rows = torch.arange(Q * G)
    if with_baseline:  # one extra row per query: the same prompt, empty reasoning
        for q in range(Q):
            ids, start = splice(tok, "", ref_ids[q], cfg.template)
            rows.append(ids)
            starts.append(start)
        prompt_rows = torch.cat([prompt_rows, torch.arange(Q) * G])
    resp_ids, resp_mask = right_pad(rows, pad_id(tok))
    if model is None and ctx.token_scorer is not None:  # the current policy, through the engine (vLLM)
        prompts = unpadded(batch.prompt_ids[prompt_rows], batch.prompt_mask[prompt_rows])
        out = ctx.token_scorer(prompts, rows)  # [n, T', 2]
        ctx.counters["engine_passes"] = ctx.counters.get("engine_passes", 0) + 1
    else:
        out = ctx.forward(batch.prompt_ids[prompt_rows], batch.prompt_mask[prompt_rows], resp_ids, resp_mask,
                          reduce=rank_and_logprob, model=model)  # [n, T', 2]

    # gather the reference positions: row n's token j sits at column starts[n] + j
    J = max((len(r) for r in ref_ids), default=0)
    ref_len = torch.tensor([len(r) for r in ref_ids])
    ref_mask = (torch.arange(J)[None, :] < ref_len[:, None]).float()  # [Q, J]
    row_q = torch.cat([torch.arange(Q * G) // G, torch.arange(Q)]) if with_baseline else torch.arange(Q * G) // G
    cols = (torch.tensor(starts)[:, None] + torch.arange(J)[None, :]).clamp_max(max(resp_ids.shape[1] - 1, 0))
    picked = out.gather(1, cols[:, :, None].expand(-1, -1, 2)) * ref_mask[row_q][:, :, None]  # [n, J, 2]
    return References(logprobs=picked[: Q * G, :, 0].view(Q, G, J), ranks=picked[: Q * G, :, 1].view(Q, G, J),
                      ref_mask=ref_mask, ref_len=ref_len,
                      baseline=picked[Q * G :, :, 0] if with_baseline else None,
                      answers=answers, no_container=no_container)


def variance_stats(ctx: "ScoringContext", opts: VarianceConfig) -> VarianceStats:
    """This step's :class:`VarianceStats` computed with ``opts``: one counted pass over the ``Q·G`` spliced rollouts
    (the masked baseline and the length penalty do not change σ and are skipped); σ over ``ctx.valid``. Every call
    runs the pass: a caller that needs the statistics twice keeps them."""
    refs = score_references(ctx, opts, with_baseline=False)
    _, sigma, _ = r3_rewards(refs.logprobs, refs.ref_mask, opts.weighting, opts.tau, opts.top_p, None,
                             valid=ctx.valid)
    return refs.stats(sigma)


__all__ = ["References", "rank_and_logprob", "reward_policy_model", "score_references", "variance_stats"]
