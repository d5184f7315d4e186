"""``drox verl``: compose a drox experiment as ``drox train`` does and run it on verl 0.9.1 (or print how).

Called by the typer command in :mod:`drox.cli.main`; errors are :class:`drox.errors.ConfigError` (and the task's and
model's own one-line errors), which that command turns into one line and exit code 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from drox.integrations.verl import INSTALL_HINT, SUPPORTED_VERL, installed_verl_version
from drox.integrations.verl.launch import LaunchPlan, Topology, translate

__all__ = ["plan_for", "verl_command"]


def plan_for(cfg, topology: Topology, verl_args: Sequence[str] = ()) -> LaunchPlan:
    """The launch plan of a composed drox config; the run folder is ``run_dir`` or ``runs/verl-<time>``."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path("runs") / time.strftime("verl-%Y-%m-%d_%H-%M-%S")
    return translate(cfg, run_dir=run_dir, topology=topology, extra=list(verl_args))


def _describe(plan: LaunchPlan, echo: Callable[[str], None], written: bool) -> None:
    echo(f"# drox verl: {plan.summary}")
    echo(f"# data: {plan.train_file}, {plan.val_file}" + ("" if written else " (exported at launch, not by --dry-run)"))
    if plan.embedded_model:
        echo(f"# model: {plan.model_path} (the embedded SmolLM2-135M-Instruct, converted once at launch; every node "
             "needs it at this path)")
    for note in plan.notes:
        echo(f"# note: {note}")


def verl_command(cfg, *, dry_run: bool, submit: Optional[str], topology: Topology, verl_args: List[str],
                 echo: Callable[[str], None] = print) -> int:
    """Run (or with ``dry_run`` print) the verl launch of the composed drox config ``cfg``; returns the exit code."""
    plan = plan_for(cfg, topology, verl_args)
    command = plan.render_ray(submit) if submit else plan.render_local()
    if dry_run:
        _describe(plan, echo, written=False)
        echo(command)
        found = installed_verl_version()
        if found != SUPPORTED_VERL:
            what = "not installed here" if found is None else f"verl {found} is installed here"
            echo(f"# the resolved verl config needs verl=={SUPPORTED_VERL} ({what}): {INSTALL_HINT}")
            return 0
        from omegaconf import OmegaConf

        from drox.integrations.verl.resolve import compose_verl_config, validate_verl_config

        config = compose_verl_config(plan.overrides)
        validate_verl_config(config)
        echo(f"# resolved verl {SUPPORTED_VERL} config (passes verl's validate_config):")
        echo(OmegaConf.to_yaml(config).rstrip())
        return 0

    from drox.integrations.verl import check_versions
    from drox.integrations.verl.export import export_task

    check_versions()
    if plan.embedded_model:
        from drox.models.loading import embedded_model_dir

        embedded_model_dir(cfg.model.cache_dir)
    export_task(cfg, plan.data_dir)
    _describe(plan, echo, written=True)
    echo(command)
    env = {**os.environ, **plan.env}
    argv = plan.ray_submit_argv(submit) if submit else plan.argv(sys.executable)  # the head node's own python
    return subprocess.call(argv, env=env)
