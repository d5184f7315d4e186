"""The gate contract: accept/reject checks on each rollout (DRO's rubric gates), and how a verdict is applied.

A gate is ``fn(ctx: ScoringContext, opts) -> GateResult`` registered with :func:`register_gate`; its options
dataclass has ``on_fail: exclude | floor``. Gates judge the text, so the loop runs them before scoring
(sources can then ignore rejected rollouts, e.g. R3's σ). :func:`apply_gates` turns the verdicts into the
rollouts that count: ``exclude`` leaves failing rollouts out of the advantage and the loss; ``floor`` gives
them their group's lowest score (per objective too); a group where every rollout fails is dropped. A gate
never becomes reward: that is the point of DRO's rubric gating.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch

from drox.registry import Registry

ON_FAIL = ("exclude", "floor")

#: ``+gate=<name>``: ``fn(ctx, opts) -> GateResult``; options need ``on_fail``.
GATES = Registry("gate", "gate", config_group="gate")


@dataclass
class GateResult:
    passed: torch.Tensor  # [Q, G] bool, True = the rollout passes every check of this gate
    stats: Dict[str, float] = field(default_factory=dict)  # logged as gate/<name>/<key>


def register_gate(name: str, options: type, **meta):
    """Decorator: register ``fn(ctx: ScoringContext, opts) -> GateResult``; ``options`` must have ``on_fail``;
    ``meta``: other facts, e.g. ``verl=`` (how it runs under the verl backend)."""
    if not any(f.name == "on_fail" for f in dataclasses.fields(options)):
        raise TypeError(f"gate {name!r}: its options dataclass {options.__name__} needs on_fail: exclude | floor")
    return GATES.register(name, options, **meta)


def accepted(results: Dict[str, GateResult]) -> torch.Tensor | None:
    """[Q, G] bool: the rollouts every gate passed (None when no gate is configured)."""
    if not results:
        return None
    return torch.stack([r.passed.bool() for r in results.values()]).all(dim=0)


def apply_gates(results: Dict[str, GateResult], on_fail: Dict[str, str], scores: torch.Tensor,
                table: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Dict[str, float]]:
    """Apply every gate's verdict, in order.

    scores  # [Q, G] combined scores;  table  # [Q, G, K] per-source scores
    returns (scores [Q, G], table [Q, G, K], valid [Q, G] bool, stats): ``floor`` replaces failing
    rollouts' scores by their group's minimum (and drops groups where all fail); ``exclude`` marks them
    invalid. ``stats`` are each gate's, as ``gate/<name>/<key>``.
    """
    Q, G = scores.shape
    valid = torch.ones(Q, G, dtype=torch.bool)
    stats: Dict[str, float] = {}
    for name, result in results.items():
        passed = result.passed.bool()
        if on_fail[name] == "floor":  # failing rollouts get their group's lowest score (per objective too)
            floor = scores.min(dim=1, keepdim=True).values.expand(Q, G)
            scores = torch.where(passed, scores, floor)
            table = torch.where(passed[..., None], table, table.min(dim=1, keepdim=True).values.expand_as(table))
            valid &= passed.any(dim=1, keepdim=True).expand(Q, G)  # a group where all fail is dropped
        else:
            valid &= passed
        stats.update({f"gate/{name}/{k}": v for k, v in result.stats.items()})
    return scores, table, valid, stats
