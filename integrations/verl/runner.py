"""drox's TaskRunner: verl's V1 TaskRunner (a Ray actor), with drox's registrations checked in its own process.

The trainer, its estimator calls and the replay buffer live in this actor (docs/verl.md "Where each piece runs"), so
this is where drox's estimators must be in verl's registry. Kept in its own module (not ``main.py``, which runs as
``__main__``) so that Ray ships the class by reference.
"""

from __future__ import annotations

import ray
from verl.trainer.main_ppo import TaskRunnerV1

__all__ = ["DroxTaskRunner", "DroxTaskRunnerActor"]


class DroxTaskRunnerActor(TaskRunnerV1.__ray_actor_class__):
    """``run(config)``: register drox's components in this process (estimators, the ``drox_sync`` trainer), check
    them, then verl's own run."""

    def run(self, config):
        from drox.integrations.verl import check_versions
        from drox.integrations.verl.register import assert_registered

        check_versions()
        assert_registered()
        import drox.integrations.verl.trainer  # noqa: F401  (registers trainer_mode drox_sync in this process)

        return super().run(config)


DroxTaskRunner = ray.remote(DroxTaskRunnerActor)
"""The Ray actor class handed to verl's ``run_ppo(config, task_runner_class=...)``."""
