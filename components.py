"""The registries of the extension points that have no base module of their own to live in, and where their
built-ins are: tasks, rollout engines, rollout shapes, objectives, advantage shapers, and the RL math chosen by a
plain string (advantage estimators, multi-objective combiners, policy losses, loss aggregations, KL estimators;
their functions are in ``trainers/algos.py`` and ``trainers/multiobj.py``). They live here, below every layer, so
that the config checks (drox.pipeline) read them without importing the trainers.

(Reward sources, gates and filters have theirs in ``rewards/base.py``, ``gates/base.py`` and ``filters/base.py``.)

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

Components chosen by a plain string (an engine, an objective, an estimator, a shaper, a policy loss) read their
options from ``<options_root>.<name>`` of the config (``trainer.advantage.verl`` for the ``verl`` shaper,
``trainer.gspo`` for the ``gspo`` policy loss; a plugin's: ``+trainer.advantage.<name>.<option>=...``) unless they
declare ``options_key`` (another key, e.g. ``gspo_token`` reads ``trainer.gspo``) or ``options_from(cfg) -> dict``.
A policy loss registered with options receives them as keyword arguments in place of ``trainer.clip_low`` /
``trainer.clip_high`` (trainers/objectives.py).
"""

from __future__ import annotations

from typing import Callable, Optional

from drox.registry import Registry

__all__ = ["ADVANTAGE_ESTIMATORS", "ADVANTAGE_SHAPERS", "COMBINERS", "KL_ESTIMATORS", "LOSS_AGGREGATIONS", "OBJECTIVES",
           "POLICY_LOSSES", "ROLLOUT_ENGINES", "ROLLOUT_SHAPES", "SUM", "TASKS", "combine_choices", "multiturn_tasks",
           "register_engine", "register_objective", "register_shape", "register_shaper", "register_task"]

TASKS = Registry("task.name", "task")
ROLLOUT_ENGINES = Registry("rollout.backend", "rollout engine", options_root="rollout")
ROLLOUT_SHAPES = Registry("rollout shape", "rollout shape")
OBJECTIVES = Registry("trainer.objective", "objective", options_root="trainer")
ADVANTAGE_SHAPERS = Registry("trainer.advantage", "advantage shaper", options_root="trainer.advantage")
ADVANTAGE_ESTIMATORS = Registry("trainer.advantage.estimator", "advantage estimator", options_root="trainer.advantage")
COMBINERS = Registry("trainer.advantage.combine", "multi-objective combiner")
POLICY_LOSSES = Registry("trainer.policy_loss", "policy loss", options_root="trainer")
LOSS_AGGREGATIONS = Registry("trainer.loss_agg", "loss aggregation")
KL_ESTIMATORS = Registry("trainer.kl_estimator", "KL estimator")
SUM = "sum"  # trainer.advantage.combine=sum: no combiner (the weighted sum of the scores, then the estimator)


def combine_choices() -> tuple:
    """The allowed values of ``trainer.advantage.combine``: ``sum`` and every registered combiner."""
    return (SUM, *COMBINERS.names())


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

for _registry, _names, _module in (
        (ADVANTAGE_ESTIMATORS, ("grpo", "dr_grpo", "rloo", "none", "tree", "tree_2norm", "psr", "nsr", "w_reinforce",
                                "passk", "pkpo", "maxrl"), "drox.trainers.algos"),
        (POLICY_LOSSES, ("ppo_clip", "gspo", "gspo_token", "cispo"), "drox.trainers.algos"),
        (LOSS_AGGREGATIONS, ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "seq-mean-token-sum"),
         "drox.trainers.algos"),
        (KL_ESTIMATORS, ("k1", "k2", "k3", "kl", "mse", "low_var_kl"), "drox.trainers.algos"),
        (COMBINERS, ("dvao", "sum_then_normalize", "normalize_then_sum_no_batch", "normalize_then_sum"),
         "drox.trainers.multiobj")):
    for _name in _names:
        _registry.declare(_name, _module)
