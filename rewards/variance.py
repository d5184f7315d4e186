"""``variance``: DRO's Reasoning Reflection Reward R3 (Xu et al., arXiv 2506.13351 v1 §4.1;
docs/algorithms.md "R3: DRO's reasoning reflection reward").

For each query with reference outcome ``y`` (``row[reference_field]``, the ``answer`` column; no
verifier is needed, so it works on ``task=revise``) and each rollout ``i`` of its group:

1. reasoning ``ĉ_i`` = the response text before its final answer (:func:`split_reasoning`);
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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Optional, Tuple

import torch

from drox.rewards._spans import encode, final_answer_start, pad_id, right_pad
from drox.masked_stats import ceil_fraction, group_moments
from drox.models.logprobs import logprobs_from_logits
from drox.rewards.base import RewardOutput, ScoringContext, frozen_copy, register_reward
from drox.rollout.base import unpadded
from drox.tasks.verify import extract_answer

WEIGHTINGS = ("sigma_norm", "softmax", "top_p", "uniform")
REWARD_POLICIES = ("policy", "reference", "lagged")


@dataclass
class VarianceConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    weighting: Literal[WEIGHTINGS] = "sigma_norm"
    """w(σ): sigma_norm (σ/Σσ) | softmax (softmax(σ/tau)) | top_p (top mask) | uniform (DRO-Aggr). [ENG]"""
    tau: float = 1.0
    """Temperature of the softmax weighting, in nats of log-prob std. [ENG]"""
    top_p: float = 0.2
    """Fraction of reference tokens (largest σ, at least one) that the top_p weighting keeps. [ENG]"""
    template: str = "{reasoning}\\boxed{{answer}}"
    """Splice: {reasoning} = text before the final answer, {answer} = the reference (only its tokens scored)."""
    reference_field: str = "answer"
    """Dataset column holding the reference outcome y."""
    masked_baseline: bool = False
    """Subtract the reference log-probs given an empty reasoning (DRO v1 §4.1.3 (b); empty = [ENG])."""
    reward_policy: Literal[REWARD_POLICIES] = "policy"
    """policy (current) | reference (frozen initial copy) | lagged (copy refreshed every lag_steps)."""
    lag_steps: int = 10
    """Refresh period of the lagged reward policy, in training steps. [ENG]"""
    length_weight: float = 0.0
    """Weight of DRO's length penalty r_len added to R3 (0 = off; the paper's weights are [NF])."""
    length_beta: float = 1.0
    """β of r_len = 1 - β·||y|-|ŷ||/|y| (the paper's values are [NF])."""

    def __post_init__(self):
        if self.tau <= 0:
            raise ValueError(f"reward.variance.tau must be > 0, got {self.tau}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"reward.variance.top_p must be in (0, 1], got {self.top_p}")
        if self.lag_steps < 1:
            raise ValueError(f"reward.variance.lag_steps must be >= 1, got {self.lag_steps}")
        parse_template(self.template)


# ------------------------------------------------------------------------------------------------ pure math


def sigma_weights(sigma: torch.Tensor, mask: torch.Tensor, weighting: Literal[WEIGHTINGS] = "sigma_norm", tau: float = 1.0,
                  top_p: float = 0.2) -> torch.Tensor:
    """Reasoning-reflective token weights ``w_Δ(σ_j)`` (DRO v1 §4.1.3; the map itself is [ENG], docs/algorithms.md).

    sigma  # [Q, J] cross-rollout std of each reference token's log-prob (0 on padding)
    mask   # [Q, J] 1 on real reference tokens
    returns w  # [Q, J], 0 on padding; sums to 1 per query except ``uniform`` (weight 1 each = DRO-Aggr).
    ``sigma_norm``: σ/Σσ (a query whose σ are all 0 gets w = 0: its rollouts are indistinguishable anyway).
    ``softmax``: softmax(σ/τ) over the real tokens. ``top_p``: 1/k on the k = max(1, ceil(top_p·|y|))
    tokens with the largest σ (ties broken by position).
    """
    m = mask.bool()
    s = torch.where(m, sigma, torch.zeros_like(sigma))
    if weighting == "sigma_norm":
        return s / s.sum(-1, keepdim=True).clamp_min(1e-8)
    if weighting == "softmax":
        if tau <= 0:
            raise ValueError(f"reward.variance.tau must be > 0, got {tau}")
        logits = torch.where(m, s / tau, torch.full_like(s, -float("inf")))
        w = torch.softmax(logits, dim=-1)
        return torch.nan_to_num(w, nan=0.0)  # a query with no reference token: all -inf -> NaN -> 0
    if weighting == "top_p":
        if not 0 < top_p <= 1:
            raise ValueError(f"reward.variance.top_p must be in (0, 1], got {top_p}")
        n = m.sum(-1)  # [Q]
        k = torch.clamp(ceil_fraction(top_p, n), min=1)  # exact: 0.6·25 keeps 15
        # rank tokens by σ (padding last); stable sort keeps earlier positions first among ties
        order = torch.sort(torch.where(m, s, torch.full_like(s, -1.0)), dim=-1, descending=True, stable=True).indices
        rank = torch.empty_like(order)
        rank.scatter_(-1, order, torch.arange(s.shape[-1]).expand_as(order).clone())
        keep = (rank < k[:, None]) & m
        return keep.float() / keep.sum(-1, keepdim=True).clamp_min(1).float()
    if weighting == "uniform":
        return m.float()
    raise ValueError(f"reward.variance.weighting={weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")


def masked_sigma(logprobs: torch.Tensor, ref_mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """σ_j over the VALID rollouts only (population std): logprobs [Q,G,J], ref_mask [Q,J], valid [Q,G] -> [Q,J].

    Equals the variance reward's ``sigma`` when every rollout is valid; a group with fewer than two
    valid rollouts has σ = 0.
    """
    return group_moments(logprobs, valid).std().squeeze(1) * ref_mask.to(logprobs.dtype)


def r3_rewards(logprobs: torch.Tensor, mask: torch.Tensor, weighting: Literal[WEIGHTINGS] = "sigma_norm", tau: float = 1.0,
               top_p: float = 0.2, baseline: Optional[torch.Tensor] = None, valid: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R3 (DRO v1 §4.1.3; docs/algorithms.md) for Q groups at once.

    logprobs  # [Q, G, J] ℓ_{i,j} = log π_rwd(y_j | q, ĉ_i, y_<j) (anything on padding)
    mask      # [Q, J] 1 on real reference tokens
    baseline  # [Q, J] ℓ^mask_j from the masked-CoT pass, or None
    valid     # [Q, G] bool, rollouts a gate accepted (None: all); σ is taken over these only, so rejected
              # garbage cannot set the token weights of the accepted rollouts
    returns (R3 [Q, G], sigma [Q, J], w [Q, J]) with ``σ_j = std_i ℓ_{i,j}`` (population std, [ENG]) and
    ``R3_i = Σ_j w_j (ℓ_{i,j} − ℓ^mask_j)``. σ is taken before the baseline (which is constant in i).
    """
    m = mask.to(logprobs.dtype)
    L = logprobs * m[:, None, :]
    if valid is None:
        sigma = L.std(dim=1, unbiased=False) * m  # [Q, J]
    else:
        sigma = masked_sigma(L, mask, valid)  # [Q, J]
    w = sigma_weights(sigma, mask, weighting, tau, top_p).to(L.dtype)
    if baseline is not None:
        L = L - (baseline * m)[:, None, :]
    return (w[:, None, :] * L).sum(-1), sigma, w


def length_penalty(ref_len: torch.Tensor, answer_len: torch.Tensor, beta: float) -> torch.Tensor:
    """DRO v1 §4.2.1 length penalty on the final outcome: ``1 − β·||y| − |ŷ||/|y|`` (not clamped).

    ref_len, answer_len  # [N] token counts -> [N]. An empty reference (|y| = 0) gives 1.
    """
    ref = ref_len.float()
    return 1.0 - beta * (ref - answer_len.float()).abs() / ref.clamp_min(1.0)


# ------------------------------------------------------------------------------------------------ text -> ids


def split_reasoning(text: str) -> Tuple[str, str]:
    """(reasoning, final answer) of a response; see :func:`drox.rewards._spans.final_answer_start`.

    The reasoning is the text before the last ``\\boxed{`` (else before the last ``Answer:`` line); the
    whole response when it has neither, and then the final answer is the whole response as well
    (open-ended tasks: the rewrite itself is the outcome). The final answer is
    :func:`drox.tasks.verify.extract_answer` of the tail (``""`` when that finds nothing).
    """
    cut = final_answer_start(text)
    if cut >= len(text):
        return text, text.strip()
    return text[:cut], extract_answer(text[cut:]) or ""


def parse_template(template: str) -> str:
    """The part of the splice template before ``{answer}`` (it must contain ``{reasoning}`` once)."""
    if template.count("{answer}") != 1 or template.count("{reasoning}") != 1:
        raise ValueError(f"reward.variance.template must contain {{reasoning}} and {{answer}} once each: {template!r}")
    head = template.split("{answer}")[0]
    if "{reasoning}" not in head:
        raise ValueError(f"reward.variance.template: {{reasoning}} must come before {{answer}}: {template!r}")
    return head


def splice(tokenizer, reasoning: str, ref_ids: List[int], template: str) -> Tuple[List[int], int]:
    """Response ids ``tokens(head(ĉ)) + ref_ids`` and the index where the reference starts.

    The head (template up to ``{answer}`` with ``{reasoning}`` filled in) and the reference are
    tokenised separately and concatenated, so every rollout of a query scores exactly the same
    reference tokens ``y_1..y_|y|`` (σ_j compares the same token across rollouts, DRO §4.1.3) and the
    reasoning's text is never merged with the reference into a different token at the seam.
    """
    head = parse_template(template).replace("{reasoning}", reasoning)
    head_ids = encode(tokenizer, head)
    return head_ids + list(ref_ids), len(head_ids)


# ------------------------------------------------------------------------------------------------ the source


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
    """The model R3 is computed with: None (= the current policy) or a frozen copy kept in ``ctx.state``."""
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


@dataclass
class VarianceStats:
    """R3's per-query statistics of one step: the documented interface through which the query filter
    (and anything else that ranks prompts by σ) reads them. J = the step's longest reference."""

    sigma: torch.Tensor  # [Q, J] σ_j over the (valid) rollouts, 0 on padding
    sigma_max: torch.Tensor  # [Q] max_j σ_j (DRO's query-filter statistic)
    ref_mask: torch.Tensor  # [Q, J] 1 on real reference tokens
    ref_logprobs: torch.Tensor  # [Q, G, J] ℓ_{i,j} = log π_rwd(y_j | q, ĉ_i, y_<j)
    ref_ranks: torch.Tensor  # [Q, G, J] rank of y_j in π_rwd's distribution (1 = argmax)


_STATS_KEY = "variance/stats"  # ctx.cache entry: this step's VarianceStats, whoever computed them first


def variance_stats(ctx: ScoringContext, opts: VarianceConfig) -> VarianceStats:
    """This step's :class:`VarianceStats`: reused when the ``variance`` reward (or an earlier call) already
    computed them in this step, else computed with ``opts`` in one counted forward pass over the ``Q·G``
    spliced rollouts (the masked baseline and the length penalty do not change σ and are skipped)."""
    if _STATS_KEY not in ctx.cache:
        refs = _score_references(ctx, opts, with_baseline=False)
        _, sigma, _ = r3_rewards(refs.logprobs, refs.ref_mask, opts.weighting, opts.tau, opts.top_p, None,
                                 valid=ctx.valid)
        ctx.cache[_STATS_KEY] = _stats(refs, sigma)
    return ctx.cache[_STATS_KEY]


def cached_variance_stats(ctx: ScoringContext) -> Optional[VarianceStats]:
    """This step's :class:`VarianceStats` if something already computed them (no model work), else None."""
    return ctx.cache.get(_STATS_KEY)


def remember_variance_stats(ctx: ScoringContext, stats: VarianceStats) -> None:
    """Make ``stats`` this step's :class:`VarianceStats` (what :func:`variance_stats` then returns)."""
    ctx.cache[_STATS_KEY] = stats


def _stats(refs: "_References", sigma: torch.Tensor) -> VarianceStats:
    J = refs.ref_mask.shape[1]
    sigma_max = sigma.max(-1).values if J else torch.zeros(sigma.shape[0])
    return VarianceStats(sigma=sigma, sigma_max=sigma_max, ref_mask=refs.ref_mask, ref_logprobs=refs.logprobs,
                         ref_ranks=refs.ranks)


@dataclass
class _References:
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


@register_reward("variance", VarianceConfig)
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


__all__ = ["VarianceConfig", "VarianceStats", "cached_variance_stats", "length_penalty", "parse_template", "r3_rewards", "rank_and_logprob",
           "remember_variance_stats", "reward_policy_model", "sigma_weights", "splice", "split_reasoning", "variance", "variance_stats"]
