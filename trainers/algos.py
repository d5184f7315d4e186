"""Core RL algorithm math for drox: advantages, loss aggregation, PPO-clip loss, KL, entropy, shaping.

Every function here is a pure function over tensors with documented shapes and no dependence on drox's
own training loop (DESIGN.md "Scale"), so the same functions can be registered into verl unchanged.
Sources are cited as in ``/work/shared/PAPERS.md`` (section numbers refer to that file).

Data layout
-----------
A rollout batch is ``Q`` prompts x ``G`` samples, flattened to ``N = Q * G`` rows in *group-major* order:
rows ``q*G .. q*G + G - 1`` belong to prompt ``q`` (so ``x.view(Q, G, ...)`` recovers the groups).
Response tensors are ``[N, T]`` with a response mask ``[N, T]`` (1 on real completion tokens, 0 on
padding). Sequence scores are ``[Q, G]``; dense (per-token) scores are ``[Q, G, T]`` or ``[N, T]``.

Public API
----------
* advantages: :data:`ADVANTAGE_ESTIMATORS` (``grpo``, ``dr_grpo``, ``rloo``, ``none``) and
  :func:`compute_advantages`; dense scores: :func:`broadcast_to_tokens`, :func:`dense_process_advantages`,
  :func:`combine_advantages`, :func:`token_advantages`.
* loss: :data:`AGG_MODES`, :func:`agg_loss`, :func:`loss_normalisers`, :func:`policy_loss`,
  :data:`KL_ESTIMATORS`, :func:`kl_penalty`.
* log-prob helpers: :func:`entropy_from_logits`, :func:`logprobs_from_logits`, :func:`masked_mean`.
* shaping and guards: :func:`soft_overlong_penalty`, :class:`NonFiniteError`, :func:`check_finite`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

Tensor = torch.Tensor

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "KL_ESTIMATORS",
    "NonFiniteError",
    "agg_loss",
    "broadcast_to_tokens",
    "check_finite",
    "combine_advantages",
    "compute_advantages",
    "dense_process_advantages",
    "dr_grpo_advantages",
    "entropy_from_logits",
    "grpo_advantages",
    "kl_penalty",
    "logprobs_from_logits",
    "loss_normalisers",
    "masked_mean",
    "no_baseline_advantages",
    "policy_loss",
    "register_advantage_estimator",
    "rloo_advantages",
    "soft_overlong_penalty",
    "token_advantages",
]


# ---------------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------------


def _float_dtype(t: Tensor) -> torch.dtype:
    """The dtype results are returned in: the input's own floating dtype, else float32."""
    return t.dtype if t.is_floating_point() else torch.float32


def _check_same_shape(**tensors: Optional[Tensor]) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items() if v is not None}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k} {list(s)}" for k, s in shapes.items())
        raise ValueError(f"shape mismatch: {desc} (expected all equal)")


def masked_mean(x: Tensor, mask: Tensor, dim: Optional[int] = None) -> Tensor:
    """Mean of ``x`` over entries where ``mask`` is 1; 0 (not NaN) where the mask is empty.

    Shapes: ``x`` and ``mask`` broadcastable to the same shape; ``dim=None`` -> scalar, else that dim reduced.
    """
    m = mask.to(x.dtype) if x.is_floating_point() else mask.float()
    x = x if x.is_floating_point() else x.float()
    num = (x * m).sum() if dim is None else (x * m).sum(dim)
    den = m.sum() if dim is None else m.sum(dim)
    return num / den.clamp_min(1.0)


# ---------------------------------------------------------------------------------------------------------------
# 1. sequence-level advantage estimators  (scores [Q, G] -> advantages [Q, G])
# ---------------------------------------------------------------------------------------------------------------

AdvantageFn = Callable[..., Tensor]

#: name -> ``fn(scores [Q, G], eps: float, valid [Q, G] bool) -> [Q, G]``. Register more with
#: :func:`register_advantage_estimator`; :func:`compute_advantages` dispatches by name.
ADVANTAGE_ESTIMATORS: Dict[str, AdvantageFn] = {}


def register_advantage_estimator(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register ``fn(scores [Q, G], eps, valid [Q, G] bool) -> [Q, G]`` under ``name``."""

    def deco(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return deco


def _group_stats(scores: Tensor, valid: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-group statistics over valid entries, in float64.

    Args: ``scores [Q, G]`` (float64, invalid entries already zeroed), ``valid [Q, G]`` bool.
    Returns ``(n [Q,1], total [Q,1], mean [Q,1], constant [Q,1] bool)`` where ``constant`` marks groups whose
    valid entries are all identical (or that have fewer than 2 valid entries).
    """
    v = valid.to(scores.dtype)
    n = v.sum(-1, keepdim=True)
    total = (scores * v).sum(-1, keepdim=True)
    mean = total / n.clamp_min(1.0)
    hi = torch.where(valid, scores, torch.full_like(scores, -float("inf"))).amax(-1, keepdim=True)
    lo = torch.where(valid, scores, torch.full_like(scores, float("inf"))).amin(-1, keepdim=True)
    constant = (n < 2) | (hi == lo)
    return n, total, mean, constant


def _prepare(scores: Tensor, valid: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    if scores.dim() != 2:
        raise ValueError(f"scores must be [Q, G], got shape {list(scores.shape)}")
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    else:
        valid = valid.to(device=scores.device, dtype=torch.bool)
        _check_same_shape(scores=scores, valid=valid)
    # invalid rows may hold anything (even NaN, e.g. a reward never computed for a gated rollout)
    s = torch.where(valid, scores.to(torch.float64), torch.zeros((), dtype=torch.float64, device=scores.device))
    return s, valid


@register_advantage_estimator("grpo")
def grpo_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None) -> Tensor:
    """GRPO outcome supervision, DeepSeekMath (arXiv 2402.03300) §4.1.2 / Eq. 3; PAPERS.md §6.1.

    ``A_i = (r_i - mean_g r) / (std_g r + eps)`` with the *unbiased* std (torch default, as verl and TRL).
    Shapes: ``scores [Q, G]``, ``valid [Q, G] bool | None`` -> ``[Q, G]``.
    Invalid entries are left out of the group mean/std and get 0. A group whose valid scores are all identical,
    or that has fewer than 2 valid entries (e.g. G = 1), gets exactly 0 (never NaN). Note: verl gives a
    singleton group mean 0 / std 1 (advantage = raw score); drox deliberately gives 0 (no contrast, no signal).
    """
    s, valid = _prepare(scores, valid)
    n, _, mean, constant = _group_stats(s, valid)
    dev = torch.where(valid, s - mean, torch.zeros_like(s))
    std = ((dev**2).sum(-1, keepdim=True) / (n - 1).clamp_min(1.0)).sqrt()
    adv = dev / (std + eps)
    adv = torch.where(valid & ~constant, adv, torch.zeros_like(adv))
    return adv.to(_float_dtype(scores))


@register_advantage_estimator("dr_grpo")
def dr_grpo_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None) -> Tensor:
    """Dr. GRPO (Liu et al. 2025, arXiv 2503.20783) mean-centred advantage; PAPERS.md §6.2.

    ``A_i = r_i - mean_g r`` (no std division; ``eps`` unused). Shapes: ``scores [Q, G]`` -> ``[Q, G]``.
    Invalid entries are excluded from the mean and get 0; constant groups get exactly 0.
    """
    s, valid = _prepare(scores, valid)
    _, _, mean, constant = _group_stats(s, valid)
    adv = torch.where(valid & ~constant, s - mean, torch.zeros_like(s))
    return adv.to(_float_dtype(scores))


@register_advantage_estimator("rloo")
def rloo_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None) -> Tensor:
    """RLOO leave-one-out baseline (Ahmadian et al. 2024, arXiv 2402.14740); PAPERS.md §6.4.

    ``A_i = r_i - (sum_{j != i} r_j) / (n - 1)`` over the ``n`` valid members of the group (``eps`` unused).
    Shapes: ``scores [Q, G]`` -> ``[Q, G]``. Groups with fewer than 2 valid entries (G = 1) and constant
    groups get exactly 0; invalid entries get 0.
    """
    s, valid = _prepare(scores, valid)
    n, total, _, constant = _group_stats(s, valid)
    baseline = (total - s) / (n - 1).clamp_min(1.0)
    adv = torch.where(valid & ~constant, s - baseline, torch.zeros_like(s))
    return adv.to(_float_dtype(scores))


@register_advantage_estimator("none")
def no_baseline_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None) -> Tensor:
    """No baseline: ``A_i = r_i`` (REINFORCE; PSR / NSR / W-REINFORCE, Zhu et al. arXiv 2506.01347 §2.2).

    Shapes: ``scores [Q, G]`` -> ``[Q, G]``; invalid entries get 0. The PSR/NSR/W-REINFORCE sample weighting
    (e.g. ``A = R - 1`` for NSR with 0/1 rewards, PAPERS.md §2.2) is applied to the scores by the caller.
    """
    s, valid = _prepare(scores, valid)
    return torch.where(valid, s, torch.zeros_like(s)).to(_float_dtype(scores))


def compute_advantages(
    scores: Tensor, estimator: str = "grpo", eps: float = 1e-6, valid: Optional[Tensor] = None
) -> Tensor:
    """Dispatch to a registered sequence-level advantage estimator.

    Args:
        scores: ``[Q, G]`` per-rollout scores (rewards), one row per prompt.
        estimator: a key of :data:`ADVANTAGE_ESTIMATORS` (``grpo``, ``dr_grpo``, ``rloo``, ``none``).
        eps: added to the group std (``grpo``).
        valid: ``[Q, G]`` bool or None; ``False`` rows (e.g. rejected by a gate) are left out of the group
            statistics and get advantage 0. Their scores may be anything, NaN included.
    Returns:
        ``[Q, G]`` advantages, in the scores' floating dtype (float32 for integer/bool scores).
    Raises:
        ValueError: unknown estimator (the message lists the registered ones) or bad shapes.
    """
    try:
        fn = ADVANTAGE_ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {estimator!r}; available: {', '.join(sorted(ADVANTAGE_ESTIMATORS))}"
        ) from None
    return fn(scores, eps=eps, valid=valid)


# ---------------------------------------------------------------------------------------------------------------
# 2. dense (per-token) advantages
# ---------------------------------------------------------------------------------------------------------------


def broadcast_to_tokens(adv: Tensor, mask: Tensor) -> Tensor:
    """Give every valid token of a rollout its sequence advantage (GRPO §4.1.2: ``Â_{i,t} = r̃_i``).

    Shapes: ``adv [N]`` (or ``[Q, G]``, flattened group-major), ``mask [N, T]`` -> ``[N, T]`` (0 on padding).
    """
    adv = adv.reshape(-1)
    if mask.dim() != 2 or adv.shape[0] != mask.shape[0]:
        raise ValueError(f"adv has {adv.shape[0]} rows but mask is {list(mask.shape)}; expected [N] and [N, T]")
    out_dtype = _float_dtype(adv)
    return adv.to(out_dtype)[:, None] * mask.to(out_dtype)


def _rows_valid(valid: Optional[Tensor], n: int, device: torch.device) -> Tensor:
    if valid is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    valid = valid.reshape(-1).to(device=device, dtype=torch.bool)
    if valid.shape[0] != n:
        raise ValueError(f"valid has {valid.shape[0]} entries, expected N = {n}")
    return valid


def dense_process_advantages(
    token_rewards: Tensor,
    mask: Tensor,
    group_size: int,
    eps: float = 1e-6,
    reward_mask: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
) -> Tensor:
    """GRPO process supervision, DeepSeekMath (arXiv 2402.03300) §4.1.3; PAPERS.md §6.1.

    Step rewards sit at the end token of each step. They are normalised over *all* step rewards of *all* G
    outputs of the group, ``r̃ = (r - mean(R)) / (std(R) + eps)`` (unbiased std, as in :func:`grpo_advantages`;
    the paper writes ``std(R)`` without saying which, [ENG]), and each token gets the sum of the normalised
    rewards at its own and later positions (reward-to-go): ``Â_{i,t} = sum_{index(j) >= t} r̃_i^{index(j)}``.

    Args:
        token_rewards: ``[N, T]`` step rewards, ``N = Q * G`` group-major (``[Q, G, T]`` is also accepted).
        mask: ``[N, T]`` response mask.
        group_size: ``G``.
        eps: added to the group std.
        reward_mask: ``[N, T]`` bool or None: which positions carry a step reward. None -> the nonzero entries
            of ``token_rewards`` (so a step reward of exactly 0 is only counted when ``reward_mask`` says so).
            Positions are always intersected with ``mask``.
        valid: ``[N]`` or ``[Q, G]`` bool or None: rows left out of the group statistics; they get 0.
            (Rows whose ``mask`` is all 0 are left out automatically.)
    Returns:
        ``[N, T]`` token advantages (0 on padding). Groups with fewer than 2 step rewards, or whose step rewards
        are all identical, get exactly 0.
    """
    if token_rewards.dim() == 3:
        token_rewards = token_rewards.reshape(-1, token_rewards.shape[-1])
    if reward_mask is not None and reward_mask.dim() == 3:
        reward_mask = reward_mask.reshape(-1, reward_mask.shape[-1])
    _check_same_shape(token_rewards=token_rewards, mask=mask, reward_mask=reward_mask)
    N, T = token_rewards.shape
    G = int(group_size)
    if G < 1 or N % G != 0:
        raise ValueError(f"N = {N} rows is not a multiple of group_size {G}")
    Q = N // G
    rows = _rows_valid(valid, N, token_rewards.device)

    r = token_rewards.to(torch.float64)
    pos = (r != 0) if reward_mask is None else reward_mask.to(torch.bool)
    pos = pos & mask.to(torch.bool) & rows[:, None]
    r = torch.where(pos, r, torch.zeros_like(r))

    # group statistics over all step rewards of the group's G outputs: view each group as one row of G*T
    norm = grpo_advantages(r.reshape(Q, G * T), eps=eps, valid=pos.reshape(Q, G * T)).to(torch.float64)
    norm = norm.reshape(N, T)
    # reward-to-go: reverse cumulative sum along T (includes the reward at position t itself)
    rtg = norm.flip(-1).cumsum(-1).flip(-1)
    return (rtg * mask.to(torch.float64)).to(_float_dtype(token_rewards))


def combine_advantages(
    seq_adv: Optional[Tensor],
    token_adv: Optional[Tensor],
    seq_weight: float = 1.0,
    token_weight: float = 1.0,
) -> Tensor:
    """Sum a broadcast sequence advantage and a dense token advantage: ``w_s * seq_adv + w_t * token_adv``.

    Shapes: ``seq_adv [N, T] | None``, ``token_adv [N, T] | None`` -> ``[N, T]``. One of them may be None
    (then the other, times its weight, is returned); both None -> ValueError.
    """
    if seq_adv is None and token_adv is None:
        raise ValueError("combine_advantages needs at least one of seq_adv / token_adv")
    if seq_adv is None:
        return token_weight * token_adv
    if token_adv is None:
        return seq_weight * seq_adv
    _check_same_shape(seq_adv=seq_adv, token_adv=token_adv)
    return seq_weight * seq_adv + token_weight * token_adv


def token_advantages(
    seq_adv: Optional[Tensor],
    token_scores: Optional[Tensor],
    mask: Tensor,
    group_size: Optional[int] = None,
    eps: float = 1e-6,
    reward_mask: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
) -> Tensor:
    """Per-token advantages from per-rollout advantages and/or per-token scores.

    Args:
        seq_adv: ``[Q, G]`` or ``[N]`` sequence advantages (already from :func:`compute_advantages`), or None.
        token_scores: ``[Q, G, T]`` or ``[N, T]`` raw dense scores (step rewards), or None; turned into
            advantages by :func:`dense_process_advantages` (DeepSeekMath §4.1.3 process supervision).
        mask: ``[N, T]`` response mask.
        group_size: ``G``; needed only when ``token_scores`` is ``[N, T]`` and ``seq_adv`` is not ``[Q, G]``.
        eps, reward_mask, valid: passed to :func:`dense_process_advantages`.
    Returns:
        ``[N, T]``: ``broadcast_to_tokens(seq_adv) + dense_process_advantages(token_scores)`` (missing terms
        are omitted; both None -> ValueError).
    """
    seq_tok = broadcast_to_tokens(seq_adv, mask) if seq_adv is not None else None
    dense_tok = None
    if token_scores is not None:
        G = group_size
        if token_scores.dim() == 3:
            G = token_scores.shape[1] if G is None else G
            if G != token_scores.shape[1]:
                raise ValueError(f"group_size {G} disagrees with token_scores {list(token_scores.shape)}")
        elif G is None and seq_adv is not None and seq_adv.dim() == 2:
            G = seq_adv.shape[1]
        if G is None:
            raise ValueError("token_scores is [N, T]: pass group_size (or seq_adv as [Q, G])")
        dense_tok = dense_process_advantages(token_scores, mask, G, eps=eps, reward_mask=reward_mask, valid=valid)
    return combine_advantages(seq_tok, dense_tok)


# ---------------------------------------------------------------------------------------------------------------
# 3. loss aggregation
# ---------------------------------------------------------------------------------------------------------------

#: aggregation modes accepted by :func:`agg_loss` (names as in verl's ``loss_agg_mode``).
AGG_MODES: Tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "seq-mean-token-sum")


def loss_normalisers(mask: Tensor) -> Dict[str, float]:
    """Global normalisers of a mini-batch, to pass to every micro-batch's :func:`agg_loss` / :func:`policy_loss`.

    Shapes: ``mask [N, T]`` -> ``{"num_tokens": sum of mask, "num_seqs": number of rows with >= 1 valid token}``.
    """
    m = mask.float()
    return {"num_tokens": float(m.sum().item()), "num_seqs": float((m.sum(-1) > 0).sum().item())}


def agg_loss(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    max_len: Optional[int] = None,
    num_seqs: Optional[float] = None,
    num_tokens: Optional[float] = None,
) -> Tensor:
    """Aggregate a per-token loss matrix into a scalar; PAPERS.md §6.5.

    Modes (``m`` = mask, ``n_i = sum_t m_it``, ``S`` = sequences with ``n_i > 0``):
      * ``token-mean``: ``sum_{i,t} L m / sum_{i,t} m`` — DAPO Eq. 12 (token-level loss; verl default).
      * ``seq-mean-token-mean``: ``(1/|S|) sum_{i in S} (sum_t L m) / n_i`` — GRPO Eq. 3 (1/G · 1/|o_i|).
      * ``seq-mean-token-sum-norm``: ``(1/|S|) sum_{i in S} (sum_t L m) / max_len`` — Dr. GRPO as coded in oat
        (per-sequence token sum over the constant max generation length, then mean over sequences; PAPERS.md
        §6.6). verl's mode of the same name omits the 1/|S| (a constant learning-rate factor).
      * ``seq-mean-token-sum``: ``(1/|S|) sum_{i in S} sum_t L m``.

    Empty sequences (``n_i = 0``) contribute 0 and are *excluded* from the sequence count ``|S|``; an all-empty
    batch gives 0 (never NaN), still attached to the graph.

    Gradient accumulation: pass the *global* normalisers of the whole mini-batch (``num_tokens`` = its total
    valid tokens, ``num_seqs`` = its number of non-empty sequences; :func:`loss_normalisers`) to each
    micro-batch call; then the sum of the micro-batch losses equals the loss of the full mini-batch in every
    mode. Without them each micro-batch is normalised by its own counts (only right for one micro-batch).

    Args:
        loss_mat: ``[N, T]`` per-token loss. mask: ``[N, T]`` (0/1, any dtype).
        mode: one of :data:`AGG_MODES`. max_len: the constant normaliser of ``seq-mean-token-sum-norm``
            (required there: the max generation length, not a micro-batch's padded T).
        num_seqs, num_tokens: optional global normalisers (counts; clamped at >= 1).
    Returns:
        scalar tensor.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; available: {', '.join(AGG_MODES)}")
    _check_same_shape(loss_mat=loss_mat, mask=mask)
    m = mask.to(loss_mat.dtype)
    masked = loss_mat * m

    if mode == "token-mean":
        denom = m.sum() if num_tokens is None else torch.as_tensor(float(num_tokens), dtype=loss_mat.dtype)
        return masked.sum() / denom.to(loss_mat.device).clamp_min(1.0)

    tok_count = m.sum(-1)  # [N]
    seq_sum = masked.sum(-1)  # [N]
    if mode == "seq-mean-token-mean":
        per_seq = seq_sum / tok_count.clamp_min(1.0)
    elif mode == "seq-mean-token-sum-norm":
        if max_len is None or max_len <= 0:
            raise ValueError("seq-mean-token-sum-norm needs max_len > 0 (the max generation length, Dr. GRPO)")
        per_seq = seq_sum / float(max_len)
    else:  # seq-mean-token-sum
        per_seq = seq_sum
    if num_seqs is None:
        denom = (tok_count > 0).sum().to(loss_mat.dtype)
    else:
        denom = torch.as_tensor(float(num_seqs), dtype=loss_mat.dtype, device=loss_mat.device)
    return per_seq.sum() / denom.clamp_min(1.0)


# ---------------------------------------------------------------------------------------------------------------
# 4. PPO clipped surrogate
# ---------------------------------------------------------------------------------------------------------------


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token-mean",
    max_len: Optional[int] = None,
    num_seqs: Optional[float] = None,
    num_tokens: Optional[float] = None,
    log_ratio_clamp: float = 20.0,
) -> Tuple[Tensor, Dict[str, float]]:
    """PPO clipped surrogate (Schulman et al. 2017) with clip-higher (DAPO Eq. 10); GRPO Eq. 3 without the KL.

    ``ratio = exp(logprobs - old_logprobs)``,
    ``L = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)`` per token, aggregated by
    :func:`agg_loss` (``agg``, ``max_len``, ``num_seqs``, ``num_tokens``). No dual clip (PAPERS.md §6.5, §12.12).

    The per-token loss is computed as ``where(clipped, clipped_branch, unclipped_branch)`` with
    ``clipped = clipped_branch > unclipped_branch`` (strict), so the gradient w.r.t. ``logprobs`` is exactly
    zero on clipped tokens and exactly ``-A * ratio`` elsewhere (ties at the boundary count as unclipped).
    ``old_logprobs`` and ``advantages`` are treated as constants (detached). The log-ratio is clamped to
    ``[-log_ratio_clamp, log_ratio_clamp]`` before ``exp`` (as verl does) so extreme ratios cannot overflow.

    Args:
        logprobs, old_logprobs, mask: ``[N, T]``. advantages: ``[N, T]`` (or ``[N]``, broadcast over T).
        clip_low, clip_high: epsilons below / above 1 (DAPO: 0.2 / 0.28).
    Returns:
        ``(loss scalar, stats)``; stats are python floats over valid tokens (0.0 when there are none):
        ``clip_frac`` (fraction of valid tokens on the clipped branch, i.e. zero gradient), ``clip_frac_high``
        (ratio > 1 + clip_high with A > 0), ``clip_frac_low`` (ratio < 1 - clip_low with A < 0),
        ``ratio_mean``, ``ratio_max``, ``adv_mean``, ``ppo_kl`` (mean of ``old_logprobs - logprobs``).
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    if clip_low < 0 or clip_high < 0 or clip_low >= 1:
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
    adv = advantages.detach().to(logprobs.dtype)
    log_ratio = (logprobs - old_logprobs.detach()).clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped_branch = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    is_clipped = clipped_branch > unclipped
    loss_mat = torch.where(is_clipped, clipped_branch, unclipped)
    loss = agg_loss(loss_mat, mask, agg, max_len=max_len, num_seqs=num_seqs, num_tokens=num_tokens)

    with torch.no_grad():
        valid = mask.to(torch.bool)
        r = ratio.detach()
        neg_inf = torch.full_like(r, -float("inf"))
        values = torch.stack(
            [
                masked_mean(is_clipped.float(), valid),
                masked_mean((is_clipped & (adv > 0)).float(), valid),
                masked_mean((is_clipped & (adv < 0)).float(), valid),
                masked_mean(r.float(), valid),
                torch.where(valid, r, neg_inf).max().float().clamp_min(0.0),  # 0.0 when no valid token
                masked_mean(adv.float(), valid),
                masked_mean(-log_ratio.detach().float(), valid),
            ]
        ).tolist()  # one device sync
        names = ("clip_frac", "clip_frac_high", "clip_frac_low", "ratio_mean", "ratio_max", "adv_mean", "ppo_kl")
        stats = {k: float(v) for k, v in zip(names, values)}
    return loss, stats


# ---------------------------------------------------------------------------------------------------------------
# 5. KL estimators
# ---------------------------------------------------------------------------------------------------------------


def _kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return logprobs - ref_logprobs


def _kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return 0.5 * (logprobs - ref_logprobs).square()


def _kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    d = ref_logprobs - logprobs
    return (torch.exp(d) - d - 1.0).clamp(-10.0, 10.0)


#: name -> ``fn(logprobs [N, T], ref_logprobs [N, T]) -> [N, T]``; ``low_var_kl`` / ``mse`` / ``kl`` are verl's
#: names for k3 / k2 / k1.
KL_ESTIMATORS: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k1": _kl_k1,
    "k2": _kl_k2,
    "k3": _kl_k3,
    "kl": _kl_k1,
    "mse": _kl_k2,
    "low_var_kl": _kl_k3,
}


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from sampled-token log-probs (Schulman, "Approximating KL").

    * ``k1``: ``logp - logp_ref``
    * ``k2``: ``0.5 * (logp - logp_ref)^2``
    * ``k3``: ``exp(logp_ref - logp) - (logp_ref - logp) - 1`` — GRPO Eq. 4 (>= 0); clamped to ``[-10, 10]`` as
      verl's ``low_var_kl`` does (only the upper bound can bind; beyond it the gradient is 0).

    Shapes: ``logprobs [N, T]``, ``ref_logprobs [N, T]`` -> ``[N, T]`` (unmasked; aggregate with
    :func:`agg_loss`). Unknown estimator -> ValueError listing :data:`KL_ESTIMATORS`.
    """
    try:
        fn = KL_ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(f"unknown KL estimator {estimator!r}; available: {', '.join(KL_ESTIMATORS)}") from None
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    return fn(logprobs, ref_logprobs)


# ---------------------------------------------------------------------------------------------------------------
# 6. log-probs and entropy from logits
# ---------------------------------------------------------------------------------------------------------------


def _row_chunks(n: int, chunk_size: Optional[int]):
    step = n if not chunk_size or chunk_size <= 0 else int(chunk_size)
    for start in range(0, n, max(step, 1)):
        yield slice(start, min(start + step, n))


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def entropy_from_logits(logits: Tensor, temperature: float = 1.0, chunk_size: Optional[int] = None) -> Tensor:
    """Per-token entropy ``H = -sum_v p_v log p_v`` of ``softmax(logits / temperature)`` (PAPERS.md A1).

    Math in float32 whatever the logits dtype; ``chunk_size`` rows of N at a time bound the float32
    temporaries to ``chunk_size * T * V``. Differentiable. Shapes: ``logits [N, T, V]`` -> ``[N, T]`` float32.
    """
    _check_temperature(temperature)
    outs = []
    for sl in _row_chunks(logits.shape[0], chunk_size):
        z = logits[sl].float() / temperature
        logp = torch.log_softmax(z, dim=-1)
        outs.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(outs, 0) if len(outs) != 1 else outs[0]


def logprobs_from_logits(
    logits: Tensor, tokens: Tensor, temperature: float = 1.0, chunk_size: Optional[int] = None
) -> Tensor:
    """Log-probability of ``tokens`` under ``softmax(logits / temperature)``, in float32.

    Computed as ``z[token] - logsumexp(z)`` with ``z = logits.float() / temperature`` — the same value as a
    gather after ``log_softmax`` without materialising the ``[N, T, V]`` log-softmax; ``chunk_size`` rows of N
    at a time bound the float32 copy. Use the rollout's sampling temperature so the values match the behaviour
    policy. Differentiable. Shapes: ``logits [N, T, V]``, ``tokens [N, T]`` long -> ``[N, T]`` float32.
    """
    _check_temperature(temperature)
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(f"tokens {list(tokens.shape)} do not match logits {list(logits.shape)}")
    outs = []
    for sl in _row_chunks(logits.shape[0], chunk_size):
        z = logits[sl].float() / temperature
        picked = z.gather(-1, tokens[sl].long().unsqueeze(-1)).squeeze(-1)
        outs.append(picked - torch.logsumexp(z, dim=-1))
    return torch.cat(outs, 0) if len(outs) != 1 else outs[0]


# ---------------------------------------------------------------------------------------------------------------
# 7. DAPO soft overlong punishment
# ---------------------------------------------------------------------------------------------------------------


def soft_overlong_penalty(lengths: Tensor, max_len: int, buffer: int, factor: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment, Eq. 13 (arXiv 2503.14476 §3.4; PAPERS.md §6.3, A7), added to the reward.

    With ``L_max = max_len``, ``L_cache = buffer``::

        0                                     if len <= L_max - L_cache
        ((L_max - L_cache) - len) / L_cache * factor   if L_max - L_cache < len <= L_max
        -factor                               if len > L_max

    ``buffer = 0`` is the limit of the formula: 0 up to ``max_len``, ``-factor`` beyond (so with lengths capped
    at ``max_len`` by generation it disables the penalty). Shapes: ``lengths [N]`` integer -> ``[N]`` float32.
    """
    if buffer < 0 or buffer > max_len:
        raise ValueError(f"need 0 <= buffer <= max_len, got buffer={buffer}, max_len={max_len}")
    length = lengths.to(torch.float64)
    start = float(max_len - buffer)
    zero = torch.zeros_like(length)
    over = torch.full_like(length, -float(factor))
    if buffer == 0:
        out = torch.where(length <= max_len, zero, over)
    else:
        ramp = (start - length) / float(buffer) * float(factor)
        out = torch.where(length <= start, zero, torch.where(length <= max_len, ramp, over))
    return out.to(torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# 8. finiteness guard
# ---------------------------------------------------------------------------------------------------------------


class NonFiniteError(RuntimeError):
    """A tensor that must be finite holds NaN or inf. Attributes: ``name``, ``step``, ``source``,
    ``num_nan``, ``num_inf``, ``numel``."""

    def __init__(
        self, message: str, name: str, step: int, source: Optional[str], num_nan: int, num_inf: int, numel: int
    ):
        super().__init__(message)
        self.name, self.step, self.source = name, step, source
        self.num_nan, self.num_inf, self.numel = num_nan, num_inf, numel


def check_finite(name: str, t: Tensor, step: int, source: Optional[str] = None) -> Tensor:
    """Raise :class:`NonFiniteError` if ``t`` has NaN or inf entries; return ``t`` unchanged otherwise.

    The message is one line, e.g.
    ``step 3: NaN in rewards (source 'outcome'): 2 NaN, 0 inf of 8 entries; first at index (1, 0)``.
    Integer/bool tensors are always finite. Costs one device sync.
    """
    if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or t.is_complex()):
        return t
    with torch.no_grad():
        nan = torch.isnan(t)
        inf = torch.isinf(t)
        num_nan = int(nan.sum().item())
        num_inf = int(inf.sum().item())
    if num_nan == 0 and num_inf == 0:
        return t
    kind = "NaN/inf" if num_nan and num_inf else ("NaN" if num_nan else "inf")
    src = f" (source {source!r})" if source is not None else ""
    first = torch.nonzero(nan | inf)[0].tolist()
    where = f"; first at index {tuple(first)}" if first else ""
    msg = f"step {step}: {kind} in {name}{src}: {num_nan} NaN, {num_inf} inf of {t.numel()} entries{where}"
    raise NonFiniteError(msg, name, step, source, num_nan, num_inf, t.numel())
