"""One run per folder: a run folder is claimed before anything is written into it.

A folder "holds a run" when drox wrote its ``config.yaml`` or ``metrics.jsonl`` there, or saved checkpoints.
Training into such a folder without ``--resume`` would mix two runs (two "step 1" lines, the config
overwritten), so it is refused with one line naming the three ways out; ``overwrite=true`` deletes the old
run's files first. Hydra's own ``.hydra/`` folder and job log are not a run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from drox.errors import ConfigError

RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints")
"""Entries whose presence means a drox run was started in the folder."""
KEEP_ON_OVERWRITE = (".hydra",)
"""Entries ``overwrite=true`` leaves in place (Hydra's record of the current invocation)."""


def holds_run(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in RUN_MARKERS)


def claim_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create ``run_dir`` for a new run (or check it for a resume); ConfigError when it holds another run."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is a file, not a folder; choose another run_dir")
    if holds_run(run_dir) and not resume:
        if not overwrite:
            raise ConfigError(f"run_dir={run_dir} already holds a run; continue it with `drox train --resume "
                              f"{run_dir}`, choose a new run_dir, or pass overwrite=true to replace it")
        for entry in run_dir.iterdir():
            if entry.name in KEEP_ON_OVERWRITE:
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
