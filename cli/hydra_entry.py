"""The ``@hydra.main`` function behind `drox train` (kept apart so that importing the CLI is cheap)."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from drox.config import check_environment, register_configs
from drox.errors import ConfigError, NonFiniteError
from drox.models.loading import ModelError
from drox.pipeline import build_pipeline
from drox.tasks import TaskError
from drox.trainers.loop import run_training
from drox.trainers.preemption import Preempted

register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def hydra_train(cfg: DictConfig) -> None:
    run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    # every check before anything loads; a run stopped here leaves no folder of its own behind
    with user_errors(discard=None if cfg.run_dir else run_dir):
        pipeline = build_pipeline(cfg)
        check_environment(cfg)
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
    from drox.evaluation.runner import evaluate_to

    with user_errors():
        build_pipeline(cfg)
        check_environment(cfg)
        out = Path(HydraConfig.get().runtime.output_dir)
        evaluate_to(cfg, out, title=f"{cfg.model.path or cfg.model.name} on {cfg.task.name}", progress=False)
        print(f"eval -> {out / 'summary.json'}")


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def hydra_sft(cfg: DictConfig) -> None:
    """`drox sft`: supervised fine-tuning (drox.trainers.sft), with Hydra's overrides and ``-m`` sweeps."""
    from drox.config import validate
    from drox.trainers.sft import run_sft

    run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    with user_errors(discard=None if cfg.run_dir else run_dir):
        validate(cfg)  # the plain values, the sft section included, before anything loads
        check_environment(cfg)
    with user_errors():
        run_sft(cfg, run_dir)


@contextlib.contextmanager
def user_errors(discard: Optional[str] = None):
    """Errors caused by the input (bad config, missing file, malformed data, NaN rewards, a folder that cannot be
    written...) end the run with one line on stderr and exit code 2, not a traceback; ``DROX_DEBUG=1`` re-raises
    them. A run stopped by a preemption signal prints its one line and exits with 143. ``discard``: Hydra's fresh output folder of this invocation, removed on such an error when it holds
    nothing but Hydra's own files, so that a run that never started leaves no folder that looks like one."""
    try:
        yield
    except Preempted as e:  # SIGTERM/SIGUSR1: checkpointed at a step boundary (trainers/preemption.py)
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except (ConfigError, TaskError, ModelError, NonFiniteError, ValueError, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, WRITE_ERRORS) and e.errno not in WRITE_ERRNOS:
            raise
        if os.environ.get("DROX_DEBUG"):
            raise
        if discard is not None:
            _discard_unstarted(Path(discard))
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)


WRITE_ERRORS = (PermissionError,)
WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR)
"""OS errors that are the user's to fix (a folder that cannot be written, a full disk, a run_dir under a
file): one line, exit 2."""


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        fix = "no space left: free some or choose run_dir on another disk" if e.errno in (errno.ENOSPC, errno.EDQUOT) \
            else "choose a writable run_dir (run_dir=...) or fix the folder's permissions"
        return f"{e.filename}: {e.strerror}; {fix}"
    return str(e) or type(e).__name__


def _discard_unstarted(folder: Path) -> None:
    """Remove Hydra's output folder of a run that stopped before it started (only Hydra's files in it)."""
    import shutil

    if not folder.is_dir():
        return
    entries = list(folder.iterdir())
    if all(e.name == ".hydra" or (e.suffix == ".log" and e.is_file()) for e in entries):
        shutil.rmtree(folder, ignore_errors=True)
