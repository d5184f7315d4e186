"""The reward-source contract and the combiner.

A source is a function ``(ctx: ScoringContext, cfg) -> RewardOutput`` registered by name in
``REWARD_SOURCES``; ``conf/reward/<name>.yaml`` nests its options under ``<name>:`` so that
``'+reward=[outcome,format]'`` selects several at once. The combiner checks every output
(shape, NaN, inf) and names the source at fault: a wrong-length score list is an error here,
never silently broadcast (TRL issue #6533).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Dict, List, Optional

import torch

from drox.trainers.algos import check_finite


@dataclass
class ScoringContext:
    """What a reward source may look at. Rows hold one dataset row per prompt (Q of them)."""

    batch: Any  # RolloutBatch, N = Q * G rows
    rows: List[Dict[str, Any]]  # Q dataset rows: prompt, answer, problem_id, metadata
    task: Any  # drox.tasks.Task (task.verifier may be None)
    step: int = 0
    seed: int = 0
    policy: Any = None  # the current policy (for sources that need log-probs), may be None
    tokenizer: Any = None
    cache: Dict[str, Any] = field(default_factory=dict)  # shared results (e.g. the verifier's)

    @property
    def expanded_rows(self) -> List[Dict[str, Any]]:
        """N rows: each prompt's row repeated G times (group-major)."""
        G = self.batch.group_size
        return [r for r in self.rows for _ in range(G)]

    def verify(self):
        """The task verifier's result for every rollout, computed once per step and shared."""
        if "verify" not in self.cache:
            if self.task.verifier is None:
                raise ValueError(
                    f"task '{self.task.name}' has no verifier; choose a reward that needs none "
                    "(e.g. +reward=variance) or a verifiable task"
                )
            self.cache["verify"] = self.task.verifier(self.batch.texts, self.expanded_rows)
        return self.cache["verify"]


@dataclass
class RewardOutput:
    seq: torch.Tensor  # [Q, G] one score per rollout
    token: Optional[torch.Tensor] = None  # [Q, G, T] dense scores (T = response length), or None
    diagnostics: Dict[str, float] = field(default_factory=dict)


@dataclass
class SourceSpec:
    fn: Callable[[ScoringContext, Any], RewardOutput]
    config: type  # dataclass of the source's options (must have a float `weight`)


REWARD_SOURCES: Dict[str, SourceSpec] = {}


def register_reward(name: str, config: type):
    def deco(fn):
        if name in REWARD_SOURCES:
            raise ValueError(f"reward source '{name}' is registered twice")
        REWARD_SOURCES[name] = SourceSpec(fn, config)
        return fn

    return deco


def parse_source_config(name: str, raw: Dict[str, Any] | None):
    """Validate a source's options against its dataclass; unknown keys are a one-line error."""
    if name not in REWARD_SOURCES:
        raise ValueError(f"unknown reward source '{name}'; available: {', '.join(sorted(REWARD_SOURCES))}")
    cls = REWARD_SOURCES[name].config
    raw = dict(raw or {})
    known = {f.name for f in fields(cls)} if is_dataclass(cls) else set()
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"reward.{name}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    try:
        return cls(**raw)
    except TypeError as e:
        raise ValueError(f"reward.{name}: {e}") from None


@dataclass
class Combined:
    seq: torch.Tensor  # [Q, G] weighted sum of sequence scores
    token: Optional[torch.Tensor]  # [Q, G, T] weighted sum of dense scores, or None
    per_source: Dict[str, RewardOutput]
    metrics: Dict[str, float]


def score(ctx: ScoringContext, reward_cfg: Dict[str, Any]) -> Combined:
    """Run every configured source and combine them by their weights.

    ``reward_cfg`` maps source names to raw options; empty means the task's verifier
    (``outcome``), i.e. plain RLVR.
    """
    import drox.rewards  # noqa: F401  (registers the built-in sources)

    selected = dict(reward_cfg) if reward_cfg else {"outcome": {}}
    Q, G, T = ctx.batch.num_groups, ctx.batch.group_size, ctx.batch.response_ids.shape[1]
    seq = torch.zeros(Q, G)
    token: Optional[torch.Tensor] = None
    per_source: Dict[str, RewardOutput] = {}
    metrics: Dict[str, float] = {}
    for name, raw in selected.items():
        opts = parse_source_config(name, raw)
        out = REWARD_SOURCES[name].fn(ctx, opts)
        _check_output(name, out, Q, G, T, ctx.step)
        w = float(opts.weight)
        seq = seq + w * out.seq.float()
        if out.token is not None:
            token = (token if token is not None else torch.zeros(Q, G, T)) + w * out.token.float()
        per_source[name] = out
        metrics[f"reward/{name}/mean"] = out.seq.float().mean().item()
        metrics[f"reward/{name}/std"] = out.seq.float().std().item() if out.seq.numel() > 1 else 0.0
        for k, v in out.diagnostics.items():
            metrics[f"reward/{name}/{k}"] = float(v)
    return Combined(seq=seq, token=token, per_source=per_source, metrics=metrics)


def _check_output(name: str, out: RewardOutput, Q: int, G: int, T: int, step: int) -> None:
    if not isinstance(out.seq, torch.Tensor) or tuple(out.seq.shape) != (Q, G):
        got = tuple(out.seq.shape) if isinstance(out.seq, torch.Tensor) else type(out.seq).__name__
        raise ValueError(f"reward source '{name}' returned scores of shape {got}; expected [Q, G] = [{Q}, {G}]")
    check_finite("rewards", out.seq, step, source=name)
    if out.token is not None:
        if tuple(out.token.shape) != (Q, G, T):
            raise ValueError(
                f"reward source '{name}' returned token scores of shape {tuple(out.token.shape)}; "
                f"expected [Q, G, T] = [{Q}, {G}, {T}]"
            )
        check_finite("token rewards", out.token, step, source=name)
