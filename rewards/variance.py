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
distribution, 1 = argmax: DRO §4.2.2's hardness filter), the fields of :class:`~drox.signals.r3.VarianceStats`.
The query filter is handed the step's scored batch and reads them from there, so it needs no second pass.

This module is the reward source only. The options, the splice and the math (σ, weights, R3, length penalty) are
:mod:`drox.signals.r3`'s; the teacher-forced pass of steps 1-3 and 5 (and the reward policy) is
:mod:`drox.teacher_forced.r3`'s, which the query filter also runs when no ``variance`` reward scored the step.
"""

from __future__ import annotations

import torch

from drox.rewards.base import RewardOutput, ScoringContext, register_reward
from drox.signals.r3 import VarianceConfig, VarianceStats, length_penalty, r3_rewards
from drox.signals.spans import encode
from drox.teacher_forced.r3 import score_references


@register_reward("variance", VarianceConfig, verl="drox.integrations.verl.mapping:variance")
def variance(ctx: ScoringContext, cfg: VarianceConfig) -> RewardOutput:
    """R3 per rollout: ``seq [Q, G]``; the step's :class:`VarianceStats` go to ``extras`` (where the query filter,
    handed the scored batch, reads them without a second pass)."""
    Q, G = ctx.batch.num_groups, ctx.batch.group_size
    tok = ctx.tokenizer
    refs = score_references(ctx, cfg, with_baseline=cfg.masked_baseline)
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
    return RewardOutput(seq=seq, diagnostics=diagnostics, extras=refs.stats(sigma).as_extras())


__all__ = ["VarianceConfig", "VarianceStats", "variance"]
