"""DRO's reasoning-reflection statistics (Xu et al., "Direct Reasoning Optimization", arXiv 2506.13351 v1 §4.1-4.2;
docs/algorithms.md "R3: DRO's reasoning reflection reward" and "DRO query filter").

Shared by the ``variance`` reward (R3, :mod:`drox.rewards.variance`), the ``query`` filter
(:mod:`drox.filters.query`, which ranks prompts by ``max_j σ_j``) and the verl backend
(:mod:`drox.integrations.verl.r3`), so that all three compute the same σ from the same spliced sequences.

- :class:`VarianceConfig`: the options of the σ computation (``reward.variance``; ``filter.query.variance``);
- the math, on tensors: :func:`sigma_weights`, :func:`masked_sigma`, :func:`r3_rewards`, :func:`length_penalty`,
  :func:`sigma_max_of`;
- the splice of the reference after a rollout's reasoning: :func:`parse_template`, :func:`splice`;
- one step's statistics, :class:`VarianceStats`: the ``variance`` reward returns them among its outputs' extras
  (:meth:`VarianceStats.as_extras`) and the query filter reads them back from the scored batch it is handed
  (:meth:`VarianceStats.from_extras`), so one teacher-forced pass serves both. That pass (it needs a model and the
  rollout batch, which this package may not import) is :mod:`drox.teacher_forced.r3`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, List, Literal, Optional, Tuple

import torch

from drox.masked_stats import ceil_fraction, group_moments
from drox.signals.spans import encode

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


def sigma_max_of(sigma: torch.Tensor) -> torch.Tensor:
    """``max_j σ_j`` (DRO v1 §4.2.2's query-filter statistic): sigma [Q, J] -> [Q] (0 when the step's references
    are all empty, J = 0)."""
    return sigma.max(-1).values if sigma.shape[-1] else torch.zeros(sigma.shape[0])


# ------------------------------------------------------------------------------------------------ splice


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


# ------------------------------------------------------------------------------------------------ one step's statistics


@dataclass
class VarianceStats:
    """R3's per-query statistics of one step: the documented interface through which the query filter
    (and anything else that ranks prompts by σ) reads them. J = the step's longest reference."""

    sigma: torch.Tensor  # [Q, J] σ_j over the (valid) rollouts, 0 on padding
    sigma_max: torch.Tensor  # [Q] max_j σ_j (DRO's query-filter statistic)
    ref_mask: torch.Tensor  # [Q, J] 1 on real reference tokens
    ref_logprobs: torch.Tensor  # [Q, G, J] ℓ_{i,j} = log π_rwd(y_j | q, ĉ_i, y_<j)
    ref_ranks: torch.Tensor  # [Q, G, J] rank of y_j in π_rwd's distribution (1 = argmax)

    def as_extras(self) -> Dict[str, torch.Tensor]:
        """The statistics as a reward output's ``extras`` (one entry per field, the same tensors)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_extras(cls, extras: Dict[str, torch.Tensor]) -> Optional["VarianceStats"]:
        """The statistics held in a reward output's ``extras`` (:meth:`as_extras`), or None when it lacks any field."""
        names = [f.name for f in fields(cls)]
        if not all(n in extras for n in names):
            return None
        return cls(**{n: extras[n] for n in names})


__all__ = ["REWARD_POLICIES", "VarianceConfig", "VarianceStats", "WEIGHTINGS", "length_penalty", "masked_sigma",
           "parse_template", "r3_rewards", "sigma_max_of", "sigma_weights", "splice"]
