"""``python -m drox.integrations.verl.main [verl Hydra overrides]``: verl 0.9.1's PPO trainer with drox's wiring.

The config is ``config/drox_ppo_trainer.yaml`` (verl's ``ppo_trainer`` plus drox's reward manager, estimator options
and plugin environment); ``drox verl`` writes the overrides. The run is verl's own ``run_ppo`` with
:class:`~drox.integrations.verl.runner.DroxTaskRunner`. A wrong verl version, a missing registration or a config that
verl's ``validate_config`` refuses stops here with one line (exit 2), before Ray starts.
"""

from __future__ import annotations

import os
import sys

import hydra

from drox.errors import ConfigError


@hydra.main(config_path="config", config_name="drox_ppo_trainer", version_base=None)
def main(config) -> None:
    from drox.integrations.verl import check_versions

    try:
        check_versions()
        import drox.integrations.verl.register as register  # this process (the driver) too

        register.assert_registered()
        from verl.utils.device import auto_set_device

        from drox.integrations.verl.resolve import validate_verl_config

        auto_set_device(config)
        validate_verl_config(config)
    except ConfigError as e:
        if os.environ.get("DROX_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from verl.trainer.main_ppo import run_ppo

    from drox.integrations.verl.runner import DroxTaskRunner

    run_ppo(config, task_runner_class=DroxTaskRunner)


if __name__ == "__main__":
    main()
