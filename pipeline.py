"""The typed pipeline: every configured component resolved and its options parsed, once, before any model loads.

:func:`build_pipeline` is the one place a composed config is validated (``drox train``, ``drox eval``,
``drox config`` and ``--resume`` all call it): plain values (:func:`drox.config.validate`), the names of
registered components (task, rollout engine and shape, estimator, combiner, advantage shapers, objective, policy
loss, loss aggregation, KL estimator, every reward source, filter and gate) and every component's options (types, ranges, unknown keys), plus the checks a
component declares against the rest of the config. Errors are one :class:`~drox.errors.ConfigError` line
naming the key. The result, a :class:`Pipeline`, is what the training loop reads; it never parses options.

Importing this module registers the built-in reward sources, filters and gates (``drox.rewards``,
``drox.filters``, ``drox.gates``); the components declared in drox.components (tasks, engines, shapes,
estimators, combiners, shapers, objectives, losses, KL estimators) are imported when resolved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from omegaconf import OmegaConf

import drox.filters  # noqa: F401  (registers the built-in filters)
import drox.gates  # noqa: F401  (registers the built-in gates)
import drox.rewards  # noqa: F401  (registers the built-in reward sources)
from drox.components import (ADVANTAGE_ESTIMATORS, ADVANTAGE_SHAPERS, COMBINERS, KL_ESTIMATORS, LOSS_AGGREGATIONS,
                             OBJECTIVES, POLICY_LOSSES, ROLLOUT_ENGINES, ROLLOUT_SHAPES, SUM, combine_choices)
from drox.config import validate
from drox.errors import ConfigError
from drox.filters.base import FILTERS
from drox.gates.base import GATES
from drox.plugins import import_plugins
from drox.registry import Registry, parse_dataclass
from drox.rewards.base import REWARD_SOURCES

__all__ = ["Pipeline", "Stage", "build_pipeline"]

#: plain-string config keys whose value must be a registered name
NAMED = {
    "trainer.advantage.estimator": ADVANTAGE_ESTIMATORS,
    "trainer.policy_loss": POLICY_LOSSES,
    "trainer.loss_agg": LOSS_AGGREGATIONS,
    "trainer.kl_estimator": KL_ESTIMATORS,
    "trainer.objective": OBJECTIVES,
    "rollout.backend": ROLLOUT_ENGINES,
}  # task.name is checked when the task is built (drox.tasks.build_task), as before


@dataclass
class Stage:
    """One configured component: its registered function, parsed options and declared needs."""

    name: str
    fn: Callable
    opts: Any
    meta: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Pipeline:
    """What one training step runs, in order (trainers/loop.py)."""

    rewards: Dict[str, Any]  # source name -> parsed options, in config order; {"outcome": ...} when none is set
    gates: List[Stage]  # run before scoring, verdicts applied by drox.gates.apply_gates
    group_filters: List[Stage]  # per query keep/drop, after the gates
    batch_token_filters: List[Stage]  # narrow the policy-gradient mask once per step
    micro_token_filters: List[Stage]  # ... per micro-batch of the update (``scope: micro_batch``)
    before_step: List[Stage]  # group filters with a ``before_step`` hook (DRO's offline rounds)
    max_gen_batches: int  # generation batches per step: 1, or the refill filters' max_gen_batches
    refill: List[str] = field(default_factory=list)  # group filters that ask for more prompts (DAPO)
    srl_rewards: Optional[Dict[str, Any]] = None  # {"srl": options}: the SRL stage's only source (trainer.srl_steps)
    engine: Optional[Stage] = None  # rollout.backend: builds the engine that samples (step 2)
    shape: Optional[Stage] = None  # flat | tree | episodes: what one group of rollouts is (step 2)
    estimator: Optional[Stage] = None  # trainer.advantage.estimator (step 4)
    combiner: Optional[Stage] = None  # trainer.advantage.combine, None for ``sum`` (step 4)
    shapers: List[Stage] = field(default_factory=list)  # advantage shapers after step 4 (VERL)
    objective: Optional[Stage] = None  # trainer.objective: the update (step 6)
    policy_loss: Optional[Stage] = None  # trainer.policy_loss, its options parsed (step 6, objective pg)
    needs_reference: bool = False  # the frozen initial policy is loaded (the objective's KL term or DPO)

    @property
    def gate_on_fail(self) -> Dict[str, str]:
        return {g.name: g.opts.on_fail for g in self.gates}


def build_pipeline(cfg) -> Pipeline:
    """Validate ``cfg`` completely and resolve its components (see the module docstring).

    Imports ``cfg.plugins`` first (a no-op when the CLI already did, before composing).
    """
    import_plugins(OmegaConf.select(cfg, "plugins") or [])
    validate(cfg)
    for key, registry in NAMED.items():
        _check_name(key, OmegaConf.select(cfg, key), registry)
    estimator = OmegaConf.select(cfg, "trainer.advantage.estimator")
    if ADVANTAGE_ESTIMATORS.get(estimator).meta.get("group_baseline") and cfg.trainer.samples_per_prompt < 2:
        raise ConfigError(f"trainer.samples_per_prompt={cfg.trainer.samples_per_prompt} with "
                          f"trainer.advantage.estimator={estimator}: its baseline is the group's other samples, so "
                          "every advantage would be 0 and nothing would be learned; use samples_per_prompt >= 2 "
                          "(or estimator=none)")
    if ADVANTAGE_ESTIMATORS.get(estimator).meta.get("tree_ids") and not OmegaConf.select(cfg, "rollout.tree.enabled"):
        raise ConfigError(f"trainer.advantage.estimator={estimator} normalises among the leaves of each rollout tree, "
                          "which flat rollouts do not have: set rollout.tree.enabled=true (Tree-GRPO) or choose "
                          "estimator=grpo")
    combine = OmegaConf.select(cfg, "trainer.advantage.combine")
    if combine not in combine_choices():
        raise ConfigError(f"trainer.advantage.combine={combine} is not allowed; choose one of: "
                          f"{', '.join(combine_choices())}")

    rewards = {name: opts for name, opts, _ in _stages(cfg, "reward", REWARD_SOURCES)}
    srl_rewards = None
    if OmegaConf.select(cfg, "trainer.srl_steps"):  # SRL then RLVR: reward.srl belongs to the first stage only
        srl_rewards = {"srl": rewards.pop("srl", None) or REWARD_SOURCES.parse("srl", {})}
    rewards = rewards or {"outcome": REWARD_SOURCES.parse("outcome", {})}  # no source configured: plain RLVR
    gates = [Stage(n, GATES.get(n).fn, o, m) for n, o, m in _stages(cfg, "gate", GATES)]
    filters = [Stage(n, FILTERS.get(n).fn, o, m) for n, o, m in _stages(cfg, "filter", FILTERS)]
    group = [f for f in filters if f.meta["kind"] == "group"]
    token = [f for f in filters if f.meta["kind"] == "token"]
    refill = [f for f in group if f.meta.get("refill")]
    shape = next((n for n in ROLLOUT_SHAPES.names() if ROLLOUT_SHAPES.get(n).meta.get("when", _never)(cfg)), "flat")
    objective = _named(cfg, OBJECTIVES, OmegaConf.select(cfg, "trainer.objective"))
    return Pipeline(
        rewards=rewards,
        gates=gates,
        group_filters=group,
        batch_token_filters=[f for f in token if getattr(f.opts, "scope", "batch") != "micro_batch"],
        micro_token_filters=[f for f in token if getattr(f.opts, "scope", "batch") == "micro_batch"],
        before_step=[f for f in group if f.meta.get("before_step") is not None],
        max_gen_batches=max([int(f.opts.max_gen_batches) for f in refill], default=1),
        refill=[f.name for f in refill],
        srl_rewards=srl_rewards,
        engine=_named(cfg, ROLLOUT_ENGINES, OmegaConf.select(cfg, "rollout.backend")),
        shape=_named(cfg, ROLLOUT_SHAPES, shape),
        estimator=_named(cfg, ADVANTAGE_ESTIMATORS, estimator),
        combiner=None if combine == SUM else _named(cfg, COMBINERS, combine),
        shapers=[_named(cfg, ADVANTAGE_SHAPERS, n) for n in ADVANTAGE_SHAPERS.names()
                 if ADVANTAGE_SHAPERS.get(n).meta.get("enabled", _never)(cfg)],
        objective=objective,
        policy_loss=_named(cfg, POLICY_LOSSES, OmegaConf.select(cfg, "trainer.policy_loss")),
        needs_reference=bool(objective.meta.get("reference", _never)(cfg)),
    )


def _never(cfg) -> bool:
    return False


def _named(cfg, registry: Registry, name: str) -> Stage:
    """The component ``name`` chosen by a plain string, its options parsed from ``<options_root>.<name>`` (or its
    declared ``options_key``, or ``options_from(cfg)``), and its declared ``check(opts, cfg)`` run."""
    component = registry.get(name)
    opts = None
    if component.options is not None:
        where = component.meta.get("options_key") or f"{registry.options_root}.{name}"
        raw = component.meta["options_from"](cfg) if "options_from" in component.meta else OmegaConf.select(cfg, where)
        opts = parse_dataclass(component.options, raw, where)
    check = component.meta.get("check")
    if check is not None:
        try:
            check(opts, cfg)
        except ValueError as e:
            raise ConfigError(str(e).splitlines()[0]) from None
    return Stage(name, component.fn, opts, component.meta)


def _check_name(key: str, value: Any, registry: Registry) -> None:
    if value not in registry:
        raise ConfigError(f"{key}={value} is not allowed; choose one of: {', '.join(registry.names())}")


def _stages(cfg, group: str, registry: Registry):
    """(name, parsed options, meta) of every ``<group>.<name>`` block, in config order; runs each
    component's declared ``check(opts, cfg)``."""
    blocks = OmegaConf.to_container(cfg[group], resolve=True) if OmegaConf.select(cfg, group) else {}
    out = []
    for name, raw in (blocks or {}).items():
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{group}.{name}={raw}: expected the options of {registry.what} '{name}' "
                              f"(select it with +{group}={name})")
        opts = registry.parse(name, raw)
        component = registry.get(name)
        check = component.meta.get("check")
        if check is not None:
            try:
                check(opts, cfg)
            except ValueError as e:
                msg = str(e).splitlines()[0]
                raise ConfigError(msg if msg.startswith(f"{group}.{name}") else f"{group}.{name}: {msg}") from None
        out.append((name, opts, component.meta))
    return out
