"""The ``@hydra.main`` function behind `drox train` (kept apart so that importing the CLI is cheap)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import List, Tuple

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
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
    label_sweep_run(cfg)
    with user_errors():
        run_training(cfg, run_dir, pipeline=pipeline)


def label_sweep_run(cfg: DictConfig) -> None:
    """In a Hydra multirun, name the W&B run after its swept values, group it by the sweep folder and tag it
    with the swept overrides (a name, group or tag given on the command line is kept)."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    name, tags = sweep_labels(list(hydra_cfg.overrides.task), sys.argv[1:])
    cfg.logger.group = cfg.logger.group or str(hydra_cfg.sweep.dir)
    cfg.logger.run_name = cfg.logger.run_name or name or None
    cfg.logger.tags = [*cfg.logger.tags, *(tag for tag in tags if tag not in cfg.logger.tags)]


def sweep_labels(job_overrides: List[str], command_line: List[str]) -> Tuple[str, List[str]]:
    """(name, tags) of one job of a sweep: tags are the job's overrides of the keys that ``command_line`` sweeps
    (``seed=0,1`` -> ``seed=1``; W&B's 64-character limit applied), the name is them joined with commas (all the
    job's overrides when nothing is swept)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    try:
        swept = {o.key_or_group for o in parser.parse_overrides([a for a in command_line if "=" in a
                                                                  and not a.startswith("-")]) if o.is_sweep_override()}
        job = [(o.key_or_group, text) for o, text in zip(parser.parse_overrides(job_overrides), job_overrides)]
    except HydraException:
        return ",".join(job_overrides), []
    swept_values = [text for key, text in job if key in swept]
    return ",".join(swept_values or job_overrides), [text[:64] for text in swept_values]


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def hydra_eval(cfg: DictConfig) -> None:
    """One point of `drox eval -m ...`: evaluate into the job's folder (config.yaml + summary.json ...)."""
    from pathlib import Path

    from drox.evaluation.runner import evaluate_to

    with user_errors():
        build_pipeline(cfg)
        out = Path(HydraConfig.get().runtime.output_dir)
        evaluate_to(cfg, out, title=f"{cfg.model.path or cfg.model.name} on {cfg.task.name}", progress=False)
        print(f"eval -> {out / 'summary.json'}")


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def hydra_sft(cfg: DictConfig) -> None:
    """`drox sft`: supervised fine-tuning (drox.trainers.sft), with Hydra's overrides and ``-m`` sweeps."""
    from drox.config import validate
    from drox.trainers.sft import run_sft

    with user_errors():
        validate(cfg)  # the plain values, the sft section included, before anything loads
    run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    with user_errors():
        run_sft(cfg, run_dir)


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
