"""``rubric``: boolean checks on each rollout's final answer / response, used as a gate (DRO rubric gating).

DRO v3 abstract (arXiv 2506.13351; docs/algorithms.md "Rubric gate"): "rubric-gating ... hard accept/reject checks on
final answers". How a failed gate changes the advantage, and what the rubric contains, are [NF]; the mechanics
here are drox's own (**ours** in docs/algorithms.md): a rollout passes when it passes *every* configured check; the
trainer excludes failing rollouts from the advantage (``on_fail: exclude``) or gives them their group's floor
score (``on_fail: floor``), and drops a group where all fail (``drox.filters.base``). The checks never add to the
reward: that is the point of gating.

Checks (``checks:`` entries): built-ins ``answer_present``, ``format_valid``, ``length``, ``no_repeat_ngram``,
``regex``, or ``"module:function"`` / ``"file.py:function"`` naming a callable ``fn(text: str, row: dict) -> bool``
(``row``: the dataset row of the rollout's prompt). They run in :mod:`drox.signals.rubric`, which ``+reward=rubric``
shares. See docs/gates.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Literal

import torch

from drox.gates.base import ON_FAIL, GateResult, register_gate

# The checks live below the components (drox.signals.rubric) because the rubric reward runs them too; the names
# are re-exported here, where they lived before.
from drox.signals.rubric import (  # noqa: F401
    BUILTIN_CHECKS,
    RubricChecks,
    check_batch,
    max_ngram_count,
    resolve_callable,
    rubric_vs_correct,
    run_checks,
)


@dataclass
class RubricConfig(RubricChecks):
    """The checks' options (:class:`drox.signals.rubric.RubricChecks`: checks, format_pattern, min/max_tokens,
    ngram_*, regex*), plus:"""

    on_fail: Literal[ON_FAIL] = "exclude"
    """exclude: failing rollouts leave the group statistics (advantage 0); floor: they get the group's min score."""

    _option: ClassVar[str] = "gate.rubric"

    def __post_init__(self):
        super().__post_init__()
        if self.on_fail not in ON_FAIL:
            raise ValueError(f"{self._option}.on_fail must be one of {', '.join(ON_FAIL)}, got {self.on_fail!r}")


@register_gate("rubric", RubricConfig, verl="gates are not ported; drox.integrations.verl does not have it yet "
                                            "(docs/verl.md, 'Not done')")
def rubric_gate(ctx, opts: RubricConfig) -> GateResult:
    """Shapes: ``ctx.batch`` N = Q·G rollouts -> ``passed [Q, G]`` bool (all checks pass).

    Stats: ``pass/<check>`` (fraction of rollouts passing that check), ``pass_rate`` (all checks),
    ``pass_incorrect`` (all checks pass but the verifier says wrong; tasks with a verifier),
    ``all_fail_groups`` (fraction of groups where no rollout passes; the trainer drops those).
    """
    batch = ctx.batch
    Q, G = batch.num_groups, batch.group_size
    results = check_batch(ctx, opts)
    passed = torch.ones(Q * G, dtype=torch.bool)
    stats: Dict[str, float] = {}
    for name, res in results.items():
        r = torch.tensor(res, dtype=torch.bool)
        passed &= r
        stats[f"pass/{name}"] = r.float().mean().item()
    stats.update(rubric_vs_correct(passed, ctx))
    passed = passed.view(Q, G)
    stats["all_fail_groups"] = (~passed.any(-1)).float().mean().item()
    return GateResult(passed=passed, stats=stats)

