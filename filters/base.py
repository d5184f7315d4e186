"""The filter and gate contracts: registries of small functions the trainer calls in order.

Order in one step (trainers/loop.py): scores -> gates (per rollout: accept/reject) ->
group filters (per query: keep/drop, optionally refilled by sampling more prompts) ->
advantages -> token filters (per token: which positions the loss sees).

* A **gate** returns ``passed [Q, G] bool``. Failing rollouts are excluded from the
  advantage computation (``on_fail: exclude``) or given their group's floor score
  (``on_fail: floor``); a group where every rollout fails is dropped. Gates never turn into
  reward: that is the point of DRO's rubric gates.
* A **group filter** returns ``keep [Q] bool`` plus the statistic it ranked by. With
  ``refill=True`` (DAPO dynamic sampling) the trainer samples further prompts until the
  batch holds ``prompts_per_step`` kept groups or ``max_gen_batches`` is reached.
* A **token filter** returns a new loss mask ``[N, T]`` from the rollouts' entropies.

Option files nest their content under their own name (``conf/filter/query.yaml`` holds
``query: {...}``), so ``+filter=query +filter=entropy`` style selections combine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch

from drox.config import parse_options  # noqa: F401  (re-exported: filters and gates use it)


@dataclass
class GroupDecision:
    keep: torch.Tensor  # [Q] bool, True = train on this query's group
    statistic: Optional[torch.Tensor] = None  # [Q] float, what the filter ranked/thresholded (logged)
    stats: Dict[str, float] = field(default_factory=dict)  # logged as filter/<name>/<key>


@dataclass
class GateResult:
    passed: torch.Tensor  # [Q, G] bool, True = the rollout passes every check of this gate
    stats: Dict[str, float] = field(default_factory=dict)  # logged as gate/<name>/<key>


@dataclass
class Spec:
    fn: Callable
    config: type  # options dataclass
    kind: str  # "group" | "token" | "gate"
    refill: bool = False  # group filters: sample more prompts to replace dropped groups


FILTERS: Dict[str, Spec] = {}  # group and token filters, selected with +filter=<name>
GATES: Dict[str, Spec] = {}  # gates, selected with +gate=<name>


def register_group_filter(name: str, config: type, refill: bool = False):
    """``fn(ctx: ScoringContext, combined: Combined, valid [Q,G] bool, opts) -> GroupDecision``."""
    return _register(FILTERS, name, config, "group", refill)


def register_token_filter(name: str, config: type):
    """``fn(entropies [N,T], mask [N,T], opts) -> (mask [N,T], stats dict)``; pure, no model calls."""
    return _register(FILTERS, name, config, "token", False)


def register_gate(name: str, config: type):
    """``fn(ctx: ScoringContext, opts) -> GateResult``; opts must have ``on_fail: exclude|floor``."""
    return _register(GATES, name, config, "gate", False)


def _register(registry, name, config, kind, refill):
    def deco(fn):
        if name in registry:
            raise ValueError(f"'{name}' is registered twice")
        registry[name] = Spec(fn, config, kind, refill)
        return fn

    return deco
