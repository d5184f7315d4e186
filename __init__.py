"""drox: a command-line experiment runner for RL post-training of language models.

The repository root is this package (see pyproject.toml); its folders are subpackages:
``drox.cli`` (typer app), ``drox.models`` (policy loading), ``drox.tasks`` (data and verifiers),
``drox.rollout`` (sampling engines), ``drox.evaluation`` (pass@k), ``drox.trainers`` (the loop and the
RL math), ``drox.rewards``, ``drox.filters``, ``drox.gates``, ``drox.signals`` (logic those components share,
below them), ``drox.teacher_forced`` (teacher-forced scoring passes they share); Hydra configs live in ``conf/``.

The names below are the API for components in a user's own files (``plugins=[my_rewards.py]``;
docs/plugins.md). They are imported on first use, so ``import drox`` stays cheap.
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    # reward sources: fn(ctx: ScoringContext, opts) -> RewardOutput
    "register_reward": "drox.rewards.base",
    "RewardOutput": "drox.rewards.base",
    "ScoringContext": "drox.rewards.base",
    # gates: fn(ctx, opts) -> GateResult
    "register_gate": "drox.gates.base",
    "GateResult": "drox.gates.base",
    # filters: group fn(ctx, combined, valid, opts) -> GroupDecision; token fn(entropies, mask, opts)
    "register_filter": "drox.filters.base",
    "GroupDecision": "drox.filters.base",
    "RoundEnv": "drox.filters.base",
    # the RL math: fn(scores [Q, G], eps, valid) -> [Q, G]; combiners; policy losses; KL estimators
    "register_advantage_estimator": "drox.trainers.algos",
    "register_combiner": "drox.trainers.multiobj",
    "POLICY_LOSSES": "drox.trainers.algos",
    "KL_ESTIMATORS": "drox.trainers.algos",
    "LOSS_AGGREGATIONS": "drox.trainers.algos",
    # tasks, rollout engines and shapes, objectives, advantage shapers (drox.components)
    "register_task": "drox.components",
    "register_engine": "drox.components",
    "register_shape": "drox.components",
    "register_objective": "drox.components",
    "register_shaper": "drox.components",
    # errors a component may raise to stop with one line
    "ConfigError": "drox.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'drox' has no attribute {name!r}")
