"""Group filters on the group's scores: ``dynamic_sampling`` (DAPO) and ``mean_range`` (OpenRLHF).

* ``dynamic_sampling`` (Yu et al., DAPO, arXiv 2503.14476, "Dynamic Sampling", Eq. 11 constraint
  ``0 < |{o_i : is_equivalent(a, o_i)}| < G``; docs/algorithms.md "DAPO dynamic sampling"): drop the groups whose
  rollouts are all correct or all wrong (``metric: acc``, the task verifier via ``ctx.verify()``),
  or whose combined scores are all equal (``metric: score``, std 0, OpenRLHF issue #1270). Such a
  group has zero advantage everywhere under group normalisation, so it only dilutes the batch.
  Registered with ``refill=True``: the trainer samples more prompts to replace dropped groups, up
  to ``max_gen_batches`` generation batches per step. This function only decides ``keep``.
* ``mean_range`` (OpenRLHF ``DynamicFilteringHook``, ``--dynamic_filtering_reward_range lo hi``):
  keep the groups with ``lo < mean < hi`` (strict), the mean of the verifier's 0/1 correctness
  (``acc``) or of the combined score (``score``).

Only valid rollouts (``valid [Q, G]``, i.e. not gated out) count toward a group's accuracy, mean
or std; a group without valid rollouts is always dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Literal, Tuple

import torch

from drox.filters.base import GroupDecision, register_group_filter, statistic_stats
from drox.masked_stats import group_moments

METRICS = ("acc", "score")


@dataclass
class DynamicSamplingConfig:
    metric: Literal[METRICS] = "acc"
    """acc: drop all-correct / all-wrong groups (verifier) | score: drop groups whose combined score std is 0."""
    max_gen_batches: int = 10
    """Most generation batches per step (the first included) before training on a short batch (verl default 10)."""
    std_eps: float = 0.0
    """metric=score: a group whose score std (population, valid rollouts) is <= std_eps counts as constant. [ENG]"""

    def __post_init__(self):
        if self.max_gen_batches < 1:
            raise ValueError(f"filter.dynamic_sampling.max_gen_batches must be >= 1, got {self.max_gen_batches}")
        if self.std_eps < 0:
            raise ValueError(f"filter.dynamic_sampling.std_eps must be >= 0, got {self.std_eps}")


@dataclass
class MeanRangeConfig:
    lo: float = 0.0
    """Keep groups whose mean is strictly greater than lo (OpenRLHF's default range 0 1)."""
    hi: float = 1.0
    """... and strictly less than hi."""
    metric: Literal[METRICS] = "score"
    """score: mean of the combined score (OpenRLHF) | acc: mean verifier correctness (0/1)."""

    def __post_init__(self):
        if not self.lo < self.hi:
            raise ValueError(f"filter.mean_range: lo must be < hi, got lo={self.lo}, hi={self.hi}")


# ------------------------------------------------------------------------------------------------ helpers


def correctness(ctx, Q: int, G: int, name: str) -> torch.Tensor:
    """The verifier's correctness [Q, G] float (0/1), with a hint when the task has no verifier."""
    try:
        correct = ctx.verify().correct
    except ValueError as e:
        raise ValueError(f"filter.{name}.metric=acc needs a verifier ({e}); use filter.{name}.metric=score") from None
    return torch.tensor([bool(c) for c in correct], dtype=torch.float).view(Q, G)


def masked_mean_std(x: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per group over the valid entries: (mean [Q], population std [Q], count [Q]); 0 where count is 0.

    A group whose valid values are all identical gets std exactly 0 (float rounding in the mean
    would otherwise leave ~1e-17).
    """
    v = valid.bool()
    m = group_moments(x.float(), v)
    n = v.sum(-1)
    mean, std = m.mean.squeeze(1), m.std().squeeze(1)
    std = torch.where((n == 0) | m.all_equal.squeeze(1), torch.zeros_like(std), std)
    return torch.where(n > 0, mean, torch.zeros_like(mean)), std, n


# ------------------------------------------------------------------------------------------------ filters


@register_group_filter("dynamic_sampling", DynamicSamplingConfig, refill=True,
                       verl="drox.integrations.verl.mapping:dynamic_sampling")
def dynamic_sampling(ctx, combined, valid: torch.Tensor, opts: DynamicSamplingConfig) -> GroupDecision:
    Q, G = valid.shape
    valid = valid.bool()
    eligible = valid.any(-1)
    stats: Dict[str, float] = {}
    if opts.metric == "acc":
        acc, _, n = masked_mean_std(correctness(ctx, Q, G, "dynamic_sampling"), valid)
        n_correct = (acc * n).round()
        keep = eligible & (n_correct > 0) & (n_correct < n)  # DAPO Eq. 11: 0 < #correct < G
        stat = acc
        stats["all_correct_frac"] = (eligible & (n_correct == n)).float().mean().item()
        stats["all_wrong_frac"] = (eligible & (n_correct == 0)).float().mean().item()
    else:
        _, std, _ = masked_mean_std(combined.seq, valid)
        keep = eligible & (std > opts.std_eps)
        stat = std
        stats["zero_std_frac"] = (eligible & ~(std > opts.std_eps)).float().mean().item()
    stats.update({
        "kept_frac": keep.float().mean().item() if Q else 0.0,
        "kept": float(keep.sum()),
        "groups": float(Q),
        "no_valid_frac": (~eligible).float().mean().item() if Q else 0.0,
        **statistic_stats(stat, eligible),
    })
    return GroupDecision(keep=keep, statistic=stat, stats=stats)


@register_group_filter("mean_range", MeanRangeConfig,
                       verl="verl's group filter drops only zero-variance groups (filter_groups); a mean range needs "
                            "drox's sampler, and drox.integrations.verl does not have it yet (docs/verl.md, 'Not done')")
def mean_range(ctx, combined, valid: torch.Tensor, opts: MeanRangeConfig) -> GroupDecision:
    Q, G = valid.shape
    valid = valid.bool()
    eligible = valid.any(-1)
    x = correctness(ctx, Q, G, "mean_range") if opts.metric == "acc" else combined.seq
    mean, _, _ = masked_mean_std(x, valid)
    keep = eligible & (mean > opts.lo) & (mean < opts.hi)
    stats = {
        "kept_frac": keep.float().mean().item() if Q else 0.0,
        "kept": float(keep.sum()),
        "groups": float(Q),
        "below_frac": (eligible & ~(mean > opts.lo)).float().mean().item() if Q else 0.0,
        "above_frac": (eligible & ~(mean < opts.hi)).float().mean().item() if Q else 0.0,
        **statistic_stats(mean, eligible),
    }
    return GroupDecision(keep=keep, statistic=mean, stats=stats)


__all__ = ["DynamicSamplingConfig", "MeanRangeConfig", "correctness", "dynamic_sampling", "masked_mean_std",
           "mean_range"]
