"""The filter contract: registered functions that decide which queries and which tokens the gradient sees.

Order in one step (trainers/loop.py): scores -> gates (drox.gates: per rollout accept/reject) ->
group filters (per query: keep/drop, optionally refilled by sampling more prompts) -> advantages ->
token filters (per token: which positions the policy-gradient term sees).

A filter declares what it needs from the loop when it registers (``meta``), instead of the loop naming it:

* ``kind="group"``: ``fn(ctx: ScoringContext, combined: Combined, valid [Q, G] bool, opts) -> GroupDecision``.
  ``refill=True`` (DAPO dynamic sampling): the loop samples further prompts until the batch holds
  ``prompts_per_step`` kept groups or ``opts.max_gen_batches`` generation batches were drawn.
  ``before_step=fn(env: RoundEnv, opts, steps_done) -> (kept prompt indices, stats) | None``: run before a
  training step (DRO's offline filtering rounds); a list restricts the prompts the loop samples from.
* ``kind="token"``: ``fn(entropies [N, T], mask [N, T], opts) -> (mask [N, T], stats)``, pure. Options with
  ``scope: micro_batch`` are applied per micro-batch of the update (else once to the whole batch).

Option files nest their content under their own name (``conf/filter/query.yaml`` holds ``query: {...}``),
so several filters combine: ``'+filter=[query,entropy]'``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Dict, List, Optional

import torch

from drox.registry import Registry

FILTER_KINDS = ("group", "token")

#: ``+filter=<name>``: group and token filters (``meta["kind"]``), see the module docstring.
FILTERS = Registry("filter", "filter", config_group="filter")


def statistic_stats(stat: Optional[torch.Tensor], among: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """``statistic/min|mean|max`` over the entries where ``among`` is True (0.0 when there are none): the logged
    summary of a group filter's statistic [Q] (``among`` [Q] bool, None = all)."""
    if stat is None:
        return {}
    s = stat.detach().float().cpu()
    if among is not None:
        s = s[among.bool().cpu()]
    s = s[torch.isfinite(s)]
    if s.numel() == 0:
        return {"statistic/min": 0.0, "statistic/mean": 0.0, "statistic/max": 0.0}
    return {"statistic/min": s.min().item(), "statistic/mean": s.mean().item(), "statistic/max": s.max().item()}


@dataclass
class GroupDecision:
    keep: torch.Tensor  # [Q] bool, True = train on this query's group
    statistic: Optional[torch.Tensor] = None  # [Q] float, what the filter ranked/thresholded (logged)
    stats: Dict[str, float] = field(default_factory=dict)  # logged as filter/<name>/<key>


@dataclass
class RoundEnv:
    """What a ``before_step`` hook may use: the sampler, a scoring-context factory and the training prompts."""

    engine: Any  # the rollout engine (``generate(prompts, G, max_new_tokens=..., temperature=..., top_p=..., seed=...)``)
    make_ctx: Callable[[Any, List[Dict[str, Any]]], Any]  # (batch, rows) -> ScoringContext with the current policy
    dataset: Any  # the training split (a datasets.Dataset); ``rows`` lists it on first use
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int  # the round's own sampling seed
    previous_keep: Optional[List[int]] = None  # the prompts the previous round kept (None: no round yet)

    @cached_property
    def rows(self) -> List[Dict[str, Any]]:
        """Every training row, as dicts: built only by a hook that runs a round, not on every step."""
        return self.dataset.to_list()


def register_filter(name: str, options: type, kind: str = "group", refill: bool = False,
                    before_step: Optional[Callable] = None, **meta):
    """Decorator: register a group or token filter (contracts in the module docstring); ``meta``: other facts, e.g.
    ``verl=`` (how it runs under the verl backend, drox.integrations.verl.mapping)."""
    if kind not in FILTER_KINDS:
        raise ValueError(f"filter {name!r}: kind must be one of {', '.join(FILTER_KINDS)}, got {kind!r}")
    if kind == "token" and (refill or before_step is not None):
        raise ValueError(f"filter {name!r}: refill and before_step are for group filters")
    return FILTERS.register(name, options, kind=kind, refill=refill, before_step=before_step, **meta)


def register_group_filter(name: str, options: type, refill: bool = False, before_step: Optional[Callable] = None,
                          **meta):
    """``fn(ctx: ScoringContext, combined: Combined, valid [Q,G] bool, opts) -> GroupDecision``."""
    return register_filter(name, options, "group", refill, before_step, **meta)


def register_token_filter(name: str, options: type, **meta):
    """``fn(entropies [N,T], mask [N,T], opts) -> (mask [N,T], stats dict)``; pure, no model calls."""
    return register_filter(name, options, "token", **meta)
