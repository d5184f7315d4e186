"""``query``: DRO's query-level filter (Xu et al., arXiv 2506.13351 v1 §4.2.2; docs/algorithms.md "DRO query filter").

The statistic is ``sigma_max = max_j σ_j``, the largest cross-rollout std of a reference token's
log-prob (the same σ_j the ``variance`` reward R3 weights tokens by). A prompt whose rollouts all
predict the reference equally well (small ``sigma_max``) carries little signal for comparing its
rollouts, so it is dropped.

Two modes (docs/filters.md):

* ``online`` (default): a group filter. Each step, drop the groups whose ``sigma_max`` is below
  ``threshold`` and/or the lowest-ranked ``drop_fraction`` of the batch. With ``+reward=variance`` active the σ
  are that source's: the filter is handed the step's scored batch (``combined``) and reads them from the source's
  ``extras`` (:meth:`~drox.signals.r3.VarianceStats.from_extras`; no extra forward pass). Otherwise the filter runs
  the same teacher-forced pass itself (:func:`drox.teacher_forced.r3.variance_stats`, with
  ``filter.query.variance``'s options: one counted forward pass over the ``Q·G`` spliced rollouts) and keeps the
  result for the rest of the step.
* ``offline``: rounds over the whole training set (before training and every ``every`` steps): the
  filter's ``before_step`` hook (:func:`offline_round_hook`) runs :func:`offline_round` with an
  :class:`OfflineScorer` and hands the kept prompts to the loop.
  A round drops the "too hard" prompts (no trace has its worst-ρ% reference-token ranks within
  ``top_k``), then the lowest ``drop_fraction`` by ``sigma_max``, and carries ``carry_fraction``
  of the previous kept set forward. The per-step group filter is then a no-op (keeps every group).

Ranking and ties (both modes): prompts are sorted by the statistic, descending, with a stable sort
(earlier batch/dataset position first among equals), and the last ``floor(drop_fraction · n)`` are
dropped, so among tied prompts at the cut the LATER ones are dropped; exactly that many are dropped.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import torch

from drox.filters.base import GroupDecision, RoundEnv, register_group_filter, statistic_stats
from drox.masked_stats import ceil_fraction
from drox.registry import parse_dataclass
from drox.signals.r3 import VarianceConfig, VarianceStats, masked_sigma, sigma_max_of
from drox.teacher_forced.r3 import rank_and_logprob, variance_stats

MODES = ("online", "offline")
STATISTICS = ("sigma_max",)


@dataclass
class QueryFilterConfig:
    mode: Literal[MODES] = "online"
    """online (filter each step's groups) | offline (rounds over the training set, run by the trainer)."""
    statistic: Literal[STATISTICS] = "sigma_max"
    """What groups are ranked by: sigma_max = max_j σ_j over reference tokens (DRO §4.2.2)."""
    threshold: Optional[float] = None
    """Drop groups whose statistic is < threshold (None = no threshold). [ENG: the paper has none]"""
    drop_fraction: float = 0.25
    """Drop the lowest-ranked floor(drop_fraction·n) groups/prompts (0 = off). [NF -> ENG]"""
    min_keep: int = 1
    """Never keep fewer (the best-ranked dropped ones are restored). [ENG]"""
    every: int = 0
    """offline: training steps between rounds; 0 = one round before training only. [NF -> ENG]"""
    samples: int = 8
    """offline: N traces sampled per prompt (the paper: "typically 16 or 32"). [ENG for CPU]"""
    chunk_prompts: int = 8
    """offline: prompts per generate/score call. [ENG]"""
    rho: float = 0.2
    """offline: fraction of a trace's reference tokens with the worst (largest) ranks that are averaged. [NF -> ENG]"""
    top_k: Optional[float] = 10
    """offline: too hard if no trace's worst-ρ average rank is <= top_k (null = no hardness rule). [NF -> ENG]"""
    carry_fraction: float = 0.1
    """offline: fraction of the previous kept set carried into the new one (the paper: 10%)."""
    variance: Dict[str, Any] = field(default_factory=dict)
    """Options of the σ computation when +reward=variance is not active (keys of reward.variance:
    template, reference_field, reward_policy, lag_steps); with the reward active its σ are used as they are."""
    variance_options: Any = field(init=False, repr=False, default=None)
    """``variance`` parsed into :class:`VarianceConfig` (set by __post_init__, checked at config time)."""

    def __post_init__(self):
        if not 0.0 <= self.drop_fraction < 1.0:
            raise ValueError(f"filter.query.drop_fraction must be in [0, 1), got {self.drop_fraction}")
        if self.min_keep < 0:
            raise ValueError(f"filter.query.min_keep must be >= 0, got {self.min_keep}")
        if self.every < 0:
            raise ValueError(f"filter.query.every must be >= 0, got {self.every}")
        if self.samples < 2:
            raise ValueError(f"filter.query.samples must be >= 2 (σ over one trace is 0), got {self.samples}")
        if self.chunk_prompts < 1:
            raise ValueError(f"filter.query.chunk_prompts must be >= 1, got {self.chunk_prompts}")
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"filter.query.rho must be in (0, 1], got {self.rho}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"filter.query.top_k must be >= 1 (rank 1 = argmax), got {self.top_k}")
        if not 0.0 <= self.carry_fraction <= 1.0:
            raise ValueError(f"filter.query.carry_fraction must be in [0, 1], got {self.carry_fraction}")
        self.variance = dict(self.variance or {})
        self.variance_options = parse_dataclass(VarianceConfig, self.variance, "filter.query.variance")


# ------------------------------------------------------------------------------------------------ pure math


def token_ranks(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rank of each teacher-forced token in its distribution: ``(logits > logits[y]).sum() + 1``.

    logits [..., T, V], ids [..., T] -> [..., T] float; rank 1 = the argmax. Tied logits share the
    better rank (a token tied with the argmax has rank 1). The reduction of the teacher-forced reference pass
    (:func:`drox.teacher_forced.r3.rank_and_logprob`) is used, so both agree by construction.
    """
    return rank_and_logprob(logits, ids, torch.ones(ids.shape, dtype=logits.dtype))[..., 1]


def worst_rank_average(ranks: torch.Tensor, ref_mask: torch.Tensor, rho: float) -> torch.Tensor:
    """Per trace, the mean of the ``k = max(1, ceil(rho·|y|))`` largest reference-token ranks.

    ranks [Q, G, J] (1 = argmax; anything on padding), ref_mask [Q, J] -> [Q, G] float
    (DRO §4.2.2 "avg(max_ρ y_j^(r))"). A query with an empty reference gets 0 (never too hard).
    """
    m = ref_mask.bool()[:, None, :].expand_as(ranks)
    r = torch.where(m, ranks.float(), torch.full_like(ranks, -float("inf"), dtype=torch.float))
    ordered = torch.sort(r, dim=-1, descending=True).values  # padding last
    n = ref_mask.sum(-1).float()  # [Q]
    k = torch.clamp(ceil_fraction(rho, ref_mask.sum(-1).long()), min=1).float()  # [Q]; exact: 0.2·15 is 3
    take = torch.arange(ranks.shape[-1])[None, :] < k[:, None]  # [Q, J]
    take = take[:, None, :].expand_as(ordered) & torch.isfinite(ordered)
    total = torch.where(take, ordered, torch.zeros_like(ordered)).sum(-1)
    return torch.where(n[:, None] > 0, total / k[:, None], torch.zeros_like(total))


def hardness_ok(ranks: torch.Tensor, ref_mask: torch.Tensor, rho: float, top_k: float,
                valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[Q] bool: True unless the prompt is "too hard" = no (valid) trace has worst-ρ average rank <= top_k."""
    avg = worst_rank_average(ranks, ref_mask, rho)  # [Q, G]
    ok = avg <= top_k
    if valid is not None:
        ok = ok & valid.bool()
    return ok.any(-1)


def select_by_statistic(stat: torch.Tensor, eligible: torch.Tensor, threshold: Optional[float],
                        drop_fraction: float, min_keep: int) -> Tuple[torch.Tensor, Dict[str, float]]:
    """keep [n] bool among ``eligible``: drop ``stat < threshold`` and the lowest ``floor(drop_fraction·n_eligible)``.

    Ranking: stable sort of the eligible entries by ``stat`` descending (NaN last); the last
    ``floor(drop_fraction·n_eligible)`` are dropped (ties at the cut: the later position goes).
    Threshold and fraction drops are combined (a union). If fewer than ``min_keep`` remain, the
    best-ranked dropped eligible entries are restored. Ineligible entries are never kept.
    """
    stat = stat.detach().float().cpu()
    eligible = eligible.bool().cpu()
    s = torch.nan_to_num(stat, nan=-float("inf"))
    order = [i for i in sorted(range(len(s)), key=lambda i: -s[i].item()) if eligible[i]]  # stable
    keep = eligible.clone()
    below = torch.zeros_like(keep)
    if threshold is not None:
        below = eligible & ~(s >= threshold)
        keep &= ~below
    n_drop = int(math.floor(drop_fraction * len(order) + 1e-9))
    lowest = order[len(order) - n_drop:] if n_drop else []
    keep[lowest] = False
    restored = 0
    for i in order:
        if int(keep.sum()) >= min_keep:
            break
        if not keep[i]:
            keep[i] = True
            restored += 1
    info = {"dropped_threshold": float(below.sum()), "dropped_fraction": float(len(lowest)),
            "restored": float(restored), "eligible": float(eligible.sum())}
    return keep, info


# ------------------------------------------------------------------------------------------------ online filter


def query_filter(ctx, combined, valid: torch.Tensor, opts: QueryFilterConfig) -> GroupDecision:
    """Online: keep the groups whose ``sigma_max`` (over the valid rollouts) survives the threshold and the
    ``drop_fraction`` cut; offline: keep every group (the round chose the prompts) and log σ if it is free.
    ``combined``: the step's scored batch, where a ``variance`` reward left σ (:func:`known_variance_stats`).
    Shapes: ``valid [Q, G]`` -> ``GroupDecision(keep [Q], statistic [Q])``."""
    Q = valid.shape[0]
    valid = valid.bool()
    eligible = valid.any(-1)
    passes_before = float(ctx.counters.get("forward_passes", 0))
    known = known_variance_stats(ctx, combined)
    reused = known is not None

    if opts.mode == "offline":  # the selection happened in the round; log σ if it is free
        stat = _sigma_max_valid(known, valid) if reused else None
        keep = eligible.clone()
        stats = {"kept_frac": keep.float().mean().item() if Q else 0.0, "reused_variance": float(reused),
                 "extra_forward_passes": 0.0, **statistic_stats(stat, eligible)}
        return GroupDecision(keep=keep, statistic=stat, stats=stats)

    if known is None:  # no variance reward scored this step: the filter's own pass, kept for the step
        known = ctx.cache[_OWN_STATS_KEY] = variance_stats(ctx, opts.variance_options)
    stat = _sigma_max_valid(known, valid)
    keep, info = select_by_statistic(stat, eligible, opts.threshold, opts.drop_fraction, opts.min_keep)
    stats = {
        "kept_frac": keep.float().mean().item() if Q else 0.0,
        "kept": float(keep.sum()),
        "groups": float(Q),
        **info,
        "reused_variance": float(reused),
        "extra_forward_passes": float(ctx.counters.get("forward_passes", 0)) - passes_before,
        **statistic_stats(stat, eligible),
    }
    return GroupDecision(keep=keep, statistic=stat, stats=stats)


_OWN_STATS_KEY = "filter/query/variance_stats"  # ctx.cache: the statistics this filter computed itself this step


def known_variance_stats(ctx, combined) -> Optional[VarianceStats]:
    """This step's :class:`VarianceStats` if they cost no model work: those a reward source returned in its
    ``extras`` (the ``variance`` reward; the first such source of the scored batch ``combined``), else those this
    filter computed itself earlier in the step (``ctx.cache[_OWN_STATS_KEY]``); None when neither."""
    for out in (getattr(combined, "per_source", None) or {}).values():
        stats = VarianceStats.from_extras(getattr(out, "extras", None) or {})
        if stats is not None:
            return stats
    return ctx.cache.get(_OWN_STATS_KEY)


def _sigma_max_valid(stats: VarianceStats, valid: torch.Tensor) -> torch.Tensor:
    """``sigma_max`` [Q]: as computed when every rollout is valid, else σ over the valid rollouts only."""
    if bool(valid.all()):
        return stats.sigma_max.detach().float().cpu()
    sigma = masked_sigma(stats.ref_logprobs.float().cpu(), stats.ref_mask.cpu(), valid.cpu())
    return sigma_max_of(sigma)


# ------------------------------------------------------------------------------------------------ offline rounds


ScoreFn = Callable[[Sequence[Dict[str, Any]]], Tuple[torch.Tensor, torch.Tensor]]


def offline_round_due(opts: QueryFilterConfig, steps_done: int) -> bool:
    """Whether an offline round runs before the next step: at 0 steps done and every ``every`` steps."""
    if opts.mode != "offline":
        return False
    return steps_done == 0 or (opts.every > 0 and steps_done % opts.every == 0)


def offline_round(score_fn: ScoreFn, rows: Sequence[Dict[str, Any]], opts: QueryFilterConfig,
                  previous_keep: Optional[Sequence[int]] = None, seed: int = 0
                  ) -> Tuple[List[int], Dict[str, float]]:
    """One DRO filtering round over ``rows`` (the whole training set); returns (kept indices, stats).

    ``score_fn(rows_chunk) -> (sigma_max [q] float, hardness_ok [q] bool)`` is called on consecutive
    chunks of ``opts.chunk_prompts`` rows, in order. Then:

    1. too hard: prompts with ``hardness_ok`` False are dropped;
    2. low variation: of the rest, the lowest-ranked ``floor(drop_fraction · n)`` by ``sigma_max``
       (ties: the later index goes) and those below ``threshold`` are dropped;
    3. carry-forward: ``ceil(carry_fraction · |previous_keep|)`` indices drawn uniformly without
       replacement from ``previous_keep`` (a ``torch.Generator`` seeded with ``seed``) join the
       kept set (a union: a carried prompt may already be kept);
    4. if fewer than ``min_keep`` remain, the best-ranked dropped prompts are restored (non-too-hard
       ones first, then too-hard ones by ``sigma_max``).

    Returns sorted indices into ``rows`` and stats (``kept_frac``, counts, ``statistic/*``), plus the
    scorer's ``counters`` (forward passes, generated rollouts) when it has them.
    """
    rows = list(rows)  # a list of row dicts (a datasets.Dataset iterates as rows; its slices would be columns)
    n = len(rows)
    counters_before = dict(getattr(score_fn, "counters", {}))
    sig_parts, ok_parts = [], []
    for start in range(0, n, opts.chunk_prompts):
        chunk = rows[start:start + opts.chunk_prompts]
        s, ok = score_fn(chunk)
        s, ok = torch.as_tensor(s).float().flatten().cpu(), torch.as_tensor(ok).bool().flatten().cpu()
        if s.numel() != len(chunk) or ok.numel() != len(chunk):
            raise ValueError(f"filter.query: score_fn returned {s.numel()} sigma_max / {ok.numel()} hardness "
                             f"values for a chunk of {len(chunk)} prompts")
        sig_parts.append(s)
        ok_parts.append(ok)
    sigma = torch.cat(sig_parts) if sig_parts else torch.zeros(0)
    ok = torch.cat(ok_parts) if ok_parts else torch.zeros(0, dtype=torch.bool)

    keep, info = select_by_statistic(sigma, ok, opts.threshold, opts.drop_fraction, 0)
    selected = keep.clone()

    prev = sorted({int(i) for i in previous_keep}) if previous_keep else []
    bad = [i for i in prev if not 0 <= i < n]
    if bad:
        raise ValueError(f"filter.query: previous_keep holds indices outside the {n} rows: {bad[:5]}")
    carried: List[int] = []
    n_carry = int(math.ceil(opts.carry_fraction * len(prev) - 1e-9)) if prev else 0
    if n_carry:
        g = torch.Generator().manual_seed(int(seed))
        carried = sorted(prev[i] for i in torch.randperm(len(prev), generator=g)[:n_carry].tolist())
        keep[carried] = True

    restored = 0
    if n and not bool(selected.any()):
        warnings.warn(f"filter.query: the offline round selected none of {n} prompts ({int((~ok).sum())} too hard, "
                      f"top_k={opts.top_k}, rho={opts.rho}); keeping {max(opts.min_keep, len(carried))} "
                      "(carried / min_keep). Raise filter.query.top_k or set it to null to skip the hardness rule.",
                      stacklevel=2)
    if int(keep.sum()) < opts.min_keep:
        s = torch.nan_to_num(sigma, nan=-float("inf"))
        order = sorted(range(n), key=lambda i: (not bool(ok[i]), -s[i].item()))  # stable
        for i in order:
            if int(keep.sum()) >= opts.min_keep:
                break
            if not keep[i]:
                keep[i] = True
                restored += 1

    kept = torch.nonzero(keep).flatten().tolist()
    stats = {
        "kept_frac": len(kept) / n if n else 0.0,
        "kept": float(len(kept)),
        "scored": float(n),
        "too_hard": float((~ok).sum()),
        "dropped_threshold": info["dropped_threshold"],
        "dropped_fraction": info["dropped_fraction"],
        "selected": float(selected.sum()),
        "carried": float(len(carried)),
        "carried_new": float(sum(1 for i in carried if not selected[i])),
        "restored": float(restored),
        **statistic_stats(sigma),
    }
    for k, v in getattr(score_fn, "counters", {}).items():  # this round's share of the scorer's counters
        stats[k] = float(v) - float(counters_before.get(k, 0.0))
    return kept, stats


class OfflineScorer:
    """``score_fn`` for :func:`offline_round`: samples ``opts.samples`` traces per prompt and scores them.

    Per chunk of rows: ``engine.generate(prompts, opts.samples, ...)`` -> ``make_ctx(batch, rows)``
    (a :class:`~drox.rewards.base.ScoringContext` holding the current policy and tokenizer) -> σ and the
    reference-token ranks of the teacher-forced reference pass (:func:`drox.teacher_forced.r3.variance_stats`,
    one counted forward pass) -> ``(sigma_max [q], hardness_ok [q])``. ``counters`` accumulates
    ``forward_passes``, ``forward_tokens`` and ``generated_rollouts`` over calls. Call ``k`` generates with seed
    ``seed + k``.
    """

    def __init__(self, engine, make_ctx: Callable[[Any, List[Dict[str, Any]]], Any], opts: QueryFilterConfig, *,
                 max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0):
        self.engine, self.make_ctx, self.opts = engine, make_ctx, opts
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
        self.calls = 0
        self.counters: Dict[str, float] = {}

    def __call__(self, rows_chunk: Sequence[Dict[str, Any]]) -> Tuple[torch.Tensor, torch.Tensor]:
        rows_chunk = list(rows_chunk)
        batch = self.engine.generate([row["prompt"] for row in rows_chunk], self.opts.samples,
                                     max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                     top_p=self.top_p, seed=self.seed + self.calls)
        self.calls += 1
        ctx = self.make_ctx(batch, rows_chunk)
        stats = variance_stats(ctx, self.opts.variance_options)
        for k in ("forward_passes", "forward_tokens"):
            self.counters[k] = self.counters.get(k, 0.0) + float(ctx.counters.get(k, 0))
        self.counters["generated_rollouts"] = self.counters.get("generated_rollouts", 0.0) + batch.num_rows
        if self.opts.top_k is None:
            ok = torch.ones(len(rows_chunk), dtype=torch.bool)
        else:
            ok = hardness_ok(stats.ref_ranks, stats.ref_mask, self.opts.rho, self.opts.top_k)
        return stats.sigma_max.float().cpu(), ok


def make_offline_score_fn(engine, make_ctx, opts: QueryFilterConfig, *, max_new_tokens: int,
                          temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> OfflineScorer:
    """The ``score_fn`` for :func:`offline_round` (see :class:`OfflineScorer`)."""
    return OfflineScorer(engine, make_ctx, opts, max_new_tokens=max_new_tokens, temperature=temperature,
                         top_p=top_p, seed=seed)


def offline_round_hook(env: RoundEnv, opts: QueryFilterConfig, steps_done: int):
    """The filter's ``before_step`` hook: a round over the whole training set when one is due
    (:func:`offline_round_due`), returning (kept prompt indices, stats); None when none is due."""
    if not offline_round_due(opts, steps_done):
        return None
    score_fn = make_offline_score_fn(env.engine, env.make_ctx, opts, max_new_tokens=env.max_new_tokens,
                                     temperature=env.temperature, top_p=env.top_p, seed=env.seed)
    return offline_round(score_fn, env.rows, opts, previous_keep=env.previous_keep, seed=env.seed)


register_group_filter("query", QueryFilterConfig, before_step=offline_round_hook,
                      verl="drox.integrations.verl.mapping:query")(query_filter)

__all__ = ["OfflineScorer", "QueryFilterConfig", "hardness_ok", "known_variance_stats", "make_offline_score_fn",
           "masked_sigma", "offline_round", "offline_round_due", "offline_round_hook", "query_filter",
           "select_by_statistic", "token_ranks", "worst_rank_average"]
