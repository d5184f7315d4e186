"""The ``@hydra.main`` function behind `drox train` (kept apart so that importing the CLI is cheap)."""

from __future__ import annotations

import contextlib
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from drox.config import register_configs
from drox.errors import ConfigError, NonFiniteError
from drox.models.loading import ModelError
from drox.pipeline import build_pipeline
from drox.tasks import TaskError
from drox.trainers.loop import run_training

register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def hydra_train(cfg: DictConfig) -> None:
    with user_errors():
        pipeline = build_pipeline(cfg)  # every check, before anything loads
    run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    with user_errors():
        run_training(cfg, run_dir, pipeline=pipeline)


@contextlib.contextmanager
def user_errors():
    """Errors caused by the input (bad config, missing file, malformed data, NaN rewards...) end the run with
    one line on stderr and exit code 2, not a traceback; ``DROX_DEBUG=1`` re-raises them."""
    try:
        yield
    except (ConfigError, TaskError, ModelError, NonFiniteError, ValueError) as e:
        if os.environ.get("DROX_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
