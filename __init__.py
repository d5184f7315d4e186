"""drox: a command-line experiment runner for RL post-training of language models.

The repository root is this package (see pyproject.toml); its folders are subpackages:
``drox.cli`` (typer app), ``drox.models`` (policy loading), ``drox.tasks`` (data and verifiers),
``drox.rollout`` (sampling engines), ``drox.evaluation`` (pass@k), ``drox.trainers``,
``drox.rewards``, ``drox.filters``; Hydra configs live in ``conf/``.
"""

__version__ = "0.1.0"
