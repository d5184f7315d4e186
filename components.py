"""The registries of the extension points that have no base module of their own to live in, and where their
built-ins are: tasks, rollout engines, rollout shapes, objectives and advantage shapers.

(Reward sources, gates, filters, advantage estimators, combiners, policy losses, loss aggregations and KL
estimators have theirs in ``rewards/base.py``, ``gates/base.py``, ``filters/base.py``, ``trainers/algos.py`` and
``trainers/multiobj.py``.)

Each built-in is *declared* here by name and module, with the facts the config checks read before anything
loads (a task's ``multiturn``); its module registers it, with its options dataclass, the first time it is
used (lm-evaluation-harness style: importing this module imports neither torch nor the components). A
component in a user's own file registers with the decorators below exactly like a built-in; contracts:

- task: ``fn(task_cfg, split) -> Task`` (tasks/common.py), selected by ``task.name``; ``multiturn=True`` when
  its rollouts are episodes with the Task's ``env``;
- rollout engine: ``fn(rollout_cfg, model, tokenizer, model_cfg, opts) -> RolloutEngine`` (rollout/base.py),
  selected by ``rollout.backend``;
- rollout shape: ``fn(engine, tokenizer, task, rows, group_size, rollout_cfg, seed) -> (RolloutBatch, tokens
  sampled)``, declared with ``when(cfg) -> bool`` (the first shape whose ``when`` holds is taken, else ``flat``)
  and ``describe(cfg) -> (text, completion tokens per rollout at most)``;
- objective: ``fn(trainer, step, data, token_adv, loss_mask, pg_mask, opts) -> metrics``: the update of step 6
  (it steps the optimizer itself), selected by ``trainer.objective``; ``reference(cfg) -> bool``: whether it
  needs the frozen initial policy;
- advantage shaper: ``fn(trainer, data, seq_adv, token_adv, opts, state) -> (seq_adv, token_adv, state,
  metrics)``, run after the advantages when its ``enabled(cfg)`` holds; ``state`` is carried across steps
  and saved in checkpoints.

Components chosen by a plain string (an engine, an objective, an estimator, a shaper) read their options
from ``<options_root>.<name>`` of the config (``trainer.advantage.verl`` for the ``verl`` shaper; a plugin's:
``+trainer.advantage.<name>.<option>=...``) unless they declare ``options_from(cfg) -> dict``.
"""

from __future__ import annotations

from typing import Callable, Optional

from drox.registry import Registry

__all__ = ["ADVANTAGE_SHAPERS", "OBJECTIVES", "ROLLOUT_ENGINES", "ROLLOUT_SHAPES", "TASKS", "multiturn_tasks", "register_engine",
           "register_objective", "register_shape", "register_shaper", "register_task"]

TASKS = Registry("task.name", "task")
ROLLOUT_ENGINES = Registry("rollout.backend", "rollout engine", options_root="rollout")
ROLLOUT_SHAPES = Registry("rollout shape", "rollout shape")
OBJECTIVES = Registry("trainer.objective", "objective", options_root="trainer")
ADVANTAGE_SHAPERS = Registry("trainer.advantage", "advantage shaper", options_root="trainer.advantage")


def multiturn_tasks() -> tuple:
    """The tasks whose rollouts are episodes with an environment (declared ``multiturn=True``)."""
    return tuple(n for n in TASKS.names() if TASKS.meta(n).get("multiturn"))


def register_task(name: str, **meta) -> Callable[[Callable], Callable]:
    """Decorator: ``fn(task_cfg, split) -> Task`` as ``task.name=<name>`` (``multiturn=True``: episodes)."""
    return TASKS.register(name, **meta)


def register_engine(name: str, options: Optional[type] = None, **meta) -> Callable[[Callable], Callable]:
    """Decorator: ``fn(rollout_cfg, model, tokenizer, model_cfg, opts) -> engine`` as ``rollout.backend=<name>``."""
    return ROLLOUT_ENGINES.register(name, options, **meta)


def register_shape(name: str, **meta) -> Callable[[Callable], Callable]:
    """Decorator: a rollout shape (``when``, ``describe`` in ``meta``; see the module docstring)."""
    return ROLLOUT_SHAPES.register(name, **meta)


def register_objective(name: str, options: Optional[type] = None, **meta) -> Callable[[Callable], Callable]:
    """Decorator: an update ``fn(trainer, step, data, token_adv, loss_mask, pg_mask, opts) -> metrics`` as
    ``trainer.objective=<name>``."""
    return OBJECTIVES.register(name, options, **meta)


def register_shaper(name: str, options: Optional[type] = None, **meta) -> Callable[[Callable], Callable]:
    """Decorator: an advantage shaper (``enabled(cfg)`` in ``meta``; see the module docstring)."""
    return ADVANTAGE_SHAPERS.register(name, options, **meta)


# ------------------------------------------------------------------------------------------------ built-ins
for _name, _module in (("arithmetic", "arithmetic"), ("countdown", "countdown"), ("revise", "revise"),
                       ("jsonl", "files"), ("parquet", "files"), ("hub", "hub")):
    TASKS.declare(_name, f"drox.tasks.{_module}", multiturn=False)
TASKS.declare("twenty_questions", "drox.tasks.twenty_questions", multiturn=True)

ROLLOUT_ENGINES.declare("hf", "drox.rollout.hf", token_prefixes=True)
ROLLOUT_ENGINES.declare("vllm", "drox.rollout.vllm_engine", token_prefixes=False)

ROLLOUT_SHAPES.declare("flat", "drox.rollout.base")
ROLLOUT_SHAPES.declare("tree", "drox.rollout.tree")
ROLLOUT_SHAPES.declare("episodes", "drox.rollout.multiturn")

OBJECTIVES.declare("pg", "drox.trainers.objectives")
OBJECTIVES.declare("dpo", "drox.trainers.preference")

ADVANTAGE_SHAPERS.declare("verl", "drox.trainers.verl_shaping")
