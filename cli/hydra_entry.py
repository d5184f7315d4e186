"""The ``@hydra.main`` function behind `drox train` (kept apart so that importing the CLI is cheap)."""

from __future__ import annotations

import contextlib
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from drox.config import ConfigError, register_configs, validate

register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def hydra_train(cfg: DictConfig) -> None:
    try:
        validate(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    from drox.trainers.loop import run_training

    with user_errors():
        run_training(cfg, run_dir)


@contextlib.contextmanager
def user_errors():
    """Errors caused by the input (missing file, malformed data, NaN rewards...) end the run with one
    line on stderr and exit code 2, not a traceback; ``DROX_DEBUG=1`` re-raises them."""
    from drox.models.loading import ModelError
    from drox.tasks import TaskError
    from drox.trainers.algos import NonFiniteError

    try:
        yield
    except (ConfigError, TaskError, ModelError, NonFiniteError, ValueError) as e:
        if os.environ.get("DROX_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
