"""``variance``: DRO's Reasoning Reflection Reward R3 (Xu et al., arXiv 2506.13351 v1 §4.1;
docs/algorithms.md "R3: DRO's reasoning reflection reward").

For each query with reference outcome ``y`` (``row[reference_field]``, the ``answer`` column; no
verifier is needed, so it works on ``task=revise``) and each rollout ``i`` of its group:

1. reasoning ``ĉ_i`` = the response text before its final answer (:func:`drox.signals.spans.split_reasoning`);
2. splice: ``template`` with ``{reasoning}`` = ``ĉ_i`` and ``{answer}`` = ``y``; default
   ``"{reasoning}\\boxed{{answer}}"`` = reasoning + ``\\boxed{`` + y + ``}``. Only the reference's own
   tokens are scored ([ENG]); the template text after ``{answer}`` is not even fed to the model,
   because in a causal LM later tokens cannot change the log-probs of earlier ones;
3. teacher-force ``[prompt ; ĉ_i + template head ; y]`` through the reward policy (one batch of all
   ``Q·G`` rows, chunked and counted by :meth:`ScoringContext.forward`; with ``rollout.backend=vllm`` and
   the current policy, one vLLM request per row with ``prompt_logprobs``, ``ScoringContext.token_scorer``):
   ``ℓ_{i,j} = log π_rwd(y_j | q, ĉ_i, y_<j)``, a ``[G, |y|]`` matrix per query;
4. ``σ_j = std_i ℓ_{i,j}`` (population std, [ENG]), ``R3_i = Σ_j w(σ)_j ℓ_{i,j}``
   (v1 §4.1.3, first display) with ``w`` from ``weighting`` (the paper's ``w_Δ`` is [NF]; all maps
   here are [ENG]): ``sigma_norm`` σ/Σσ (default), ``softmax`` softmax(σ/τ),
   ``top_p`` a uniform mask over the ``top_p`` fraction of tokens with the largest σ, ``uniform``
   weight 1 per token = DRO-Aggr ``Σ_j ℓ_{i,j}`` (v1 §4.1);
5. optional masked-CoT baseline (v1 §4.1.3 (b)): subtract ``ℓ^mask_j = log π_rwd(y_j | q, c_mask, y_<j)``
   with ``c_mask`` the EMPTY reasoning ([ENG]: how the paper masks is [NF]). It does not depend on
   ``i``: a per-query constant ``Σ_j w_j ℓ^mask_j`` that GRPO's group normalisation removes; it
   matters only for the raw reward's scale/sign and for advantage estimators without a group baseline;
6. optional length penalty on the final outcome (v1 §4.2.1) ``r_len = 1 − β·||y| − |ŷ_i||/|y|`` in
   tokens, ``ŷ_i`` = the rollout's extracted final answer (the whole response when it has no answer
   container); reward = ``R3_i + length_weight · r_len`` (combination weights [NF]; 0 = off).

Reward policy ``π_rwd`` (v1 §4.2.1; which one the paper's tables use is [NF]): ``policy`` the
current policy (default), ``reference`` the frozen initial policy (the trainer's, shared with the KL
term and rebuilt from the base config on resume), ``lagged`` a copy refreshed every ``lag_steps``
steps (saved with checkpoints, so a resume continues with the same copy).

Outputs: ``seq [Q, G]``; ``extras``: ``sigma [Q, J]`` and ``ref_mask [Q, J]`` (J = longest reference
of the step, padding has σ = 0 and mask 0), ``sigma_max [Q]`` (DRO §4.2.2 query filter statistic),
``ref_logprobs [Q, G, J]`` and ``ref_ranks [Q, G, J]`` (rank of ``y_j`` in the reward policy's
distribution, 1 = argmax: DRO §4.2.2's hardness filter) so the query filter needs no second pass.

The options, the splice and the math (σ, weights, R3, length penalty) live in :mod:`drox.signals.r3`, shared with
the query filter and the verl backend; this module holds the teacher-forced scoring pass (:func:`variance_stats`,
which the query filter also calls) and the reward source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from drox.models.logprobs import logprobs_from_logits
from drox.rewards.base import RewardOutput, ScoringContext, frozen_copy, register_reward
from drox.rollout.base import unpadded
from drox.signals.r3 import (REWARD_POLICIES, STATS_KEY, VarianceConfig, VarianceStats, length_penalty,
                             parse_template, r3_rewards, remember_variance_stats, sigma_max_of, splice)
from drox.signals.spans import encode, final_answer_start, pad_id, right_pad, split_reasoning


def rank_and_logprob(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per chunk: [b, T', 2] = (log-prob of the teacher-forced token, its rank in the distribution; 1 = argmax).

    Shapes: logits [b, T', V], ids [b, T'], mask [b, T'] -> [b, T', 2]. Tied logits share the better rank.
    Reduced inside the chunk so the [n, T', V] logits are never held whole (ctx.forward).
    """
    lp = logprobs_from_logits(logits, ids)
    picked = logits.float().gather(-1, ids.long().unsqueeze(-1))
    rank = (logits.float() > picked).sum(-1).float() + 1.0
    return torch.stack([lp, rank], -1) * mask.unsqueeze(-1)


def reward_policy_model(ctx: ScoringContext, mode: str, lag_steps: int):
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
    key = f"variance/{mode}_policy"
    held = ctx.state.get(key)
    if held is None or (mode == "lagged" and ctx.step - held["step"] >= lag_steps):
        held = frozen_copy(ctx.policy, ctx.step)
        ctx.state[key] = held
    return held["model"]


def variance_stats(ctx: ScoringContext, opts: VarianceConfig) -> VarianceStats:
    """This step's :class:`VarianceStats`: reused when the ``variance`` reward (or an earlier call) already
    computed them in this step, else computed with ``opts`` in one counted forward pass over the ``Q·G``
    spliced rollouts (the masked baseline and the length penalty do not change σ and are skipped)."""
    if STATS_KEY not in ctx.cache:
        refs = _score_references(ctx, opts, with_baseline=False)
        _, sigma, _ = r3_rewards(refs.logprobs, refs.ref_mask, opts.weighting, opts.tau, opts.top_p, None,
                                 valid=ctx.valid)
        ctx.cache[STATS_KEY] = _stats(refs, sigma)
    return ctx.cache[STATS_KEY]


def _stats(refs: "_References", sigma: torch.Tensor) -> VarianceStats:
    """The :class:`VarianceStats` of scored references ``refs`` and their σ [Q, J]."""
    return VarianceStats(sigma=sigma, sigma_max=sigma_max_of(sigma), ref_mask=refs.ref_mask,
                         ref_logprobs=refs.logprobs, ref_ranks=refs.ranks)


@dataclass
class _References:
    """What :func:`_score_references` gathers: the reference tokens' log-probs and ranks after each rollout."""

    logprobs: torch.Tensor  # [Q, G, J]
    ranks: torch.Tensor  # [Q, G, J]
    ref_mask: torch.Tensor  # [Q, J]
    ref_len: torch.Tensor  # [Q]
    baseline: Optional[torch.Tensor]  # [Q, J] or None
    answers: List[str]  # N extracted final answers
    no_container: int  # responses without a final-answer container


def _score_references(ctx: ScoringContext, cfg: VarianceConfig, with_baseline: bool) -> _References:
    """Steps 1-3 and 5 of the module docstring: splice, one teacher-forced pass, gather the reference tokens."""
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
    return _References(logprobs=picked[: Q * G, :, 0].view(Q, G, J), ranks=picked[: Q * G, :, 1].view(Q, G, J),
                       ref_mask=ref_mask, ref_len=ref_len,
                       baseline=picked[Q * G :, :, 0] if with_baseline else None,
                       answers=answers, no_container=no_container)


@register_reward("variance", VarianceConfig, verl="drox.integrations.verl.mapping:variance")
def variance(ctx: ScoringContext, cfg: VarianceConfig) -> RewardOutput:
    """R3 per rollout: ``seq [Q, G]``; the step's :class:`VarianceStats` go to ``extras`` and to the
    step's cache (so the query filter reuses them without a second pass)."""
    Q, G = ctx.batch.num_groups, ctx.batch.group_size
    tok = ctx.tokenizer
    refs = _score_references(ctx, cfg, with_baseline=cfg.masked_baseline)
    L, ref_mask, ref_len, baseline = refs.logprobs, refs.ref_mask, refs.ref_len, refs.baseline
    J = ref_mask.shape[1]

    r3, sigma, _ = r3_rewards(L, ref_mask, cfg.weighting, cfg.tau, cfg.top_p, baseline, valid=ctx.valid)
    seq = r3
    diagnostics = {
        "r3_mean": r3.mean().item(),
        "sigma_mean": (sigma.sum() / ref_mask.sum().clamp_min(1)).item(),
        "sigma_max_mean": sigma.max(-1).values.mean().item() if J else 0.0,
        "ref_logprob_mean": (L.sum() / (ref_mask.sum() * G).clamp_min(1)).item(),
        "ref_tokens_mean": ref_len.float().mean().item(),
        # DRO discards the rollout's outcome before splicing the reference (v1 §4.1 step 2); without a
        # \boxed{}/Answer: container nothing can be discarded, so watch this on open-ended tasks
        "no_container_frac": refs.no_container / max(1, Q * G),
    }
    if cfg.length_weight != 0:
        answer_len = torch.tensor([len(encode(tok, a)) if a else 0 for a in refs.answers])
        r_len = length_penalty(ref_len.repeat_interleave(G), answer_len, cfg.length_beta).view(Q, G)
        seq = seq + cfg.length_weight * r_len
        diagnostics["length_penalty_mean"] = r_len.mean().item()
    if baseline is not None:
        diagnostics["baseline_logprob_mean"] = (baseline.sum() / ref_mask.sum().clamp_min(1)).item()
    stats = _stats(refs, sigma)
    remember_variance_stats(ctx, stats)
    extras = {"sigma": stats.sigma, "sigma_max": stats.sigma_max, "ref_mask": stats.ref_mask,
              "ref_logprobs": stats.ref_logprobs, "ref_ranks": stats.ref_ranks}
    return RewardOutput(seq=seq, diagnostics=diagnostics, extras=extras)


__all__ = ["VarianceConfig", "VarianceStats", "rank_and_logprob", "reward_policy_model", "variance",
           "variance_stats"]
