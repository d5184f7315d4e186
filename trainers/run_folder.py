"""One run per folder: a run folder is claimed before anything is written into it.

A folder "holds a run" when drox wrote its ``config.yaml`` or ``metrics.jsonl`` there, or saved checkpoints.
Training into such a folder without ``--resume`` would mix two runs (two "step 1" lines, the config
overwritten), so it is refused with one line naming the three ways out; ``overwrite=true`` deletes the old
run's files first. Hydra's own ``.hydra/`` folder and job log are not a run.

Two processes started together (a Hydra multirun or a job array with a fixed run_dir) would both pass that
check before either writes, so the claim is an exclusive ``flock`` on ``.drox.lock`` in the folder, taken before
the check and held until the run ends. The kernel drops it when its process dies, so a kill -9 leaves no stale
lock in the way of ``--resume``; the file itself stays (removing it would let a waiter lock a deleted inode).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from drox.errors import ConfigError

RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints")
"""Entries whose presence means a drox run was started in the folder."""
LOCK_FILE = ".drox.lock"
"""Held (flock) by the process writing the folder; holds that process's pid, for the message of a second one."""
KEEP_ON_OVERWRITE = (".hydra", LOCK_FILE)
"""Entries ``overwrite=true`` leaves in place (Hydra's record of the current invocation)."""


RESUMES_FILE = "resumes.jsonl"
"""One line per ``drox train --resume`` of the run: when, from which step, with which overrides, which drox."""


def source_commit() -> str | None:
    """The git commit drox runs from (``abc1234``, ``+dirty`` with uncommitted changes), or None when drox is not
    a git checkout (an installed wheel) or git is missing."""
    import subprocess

    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit or None


def append_resume_record(run_dir: Path, from_step: int, overrides) -> dict:
    """Append this resume to ``RUN/resumes.jsonl`` (config.yaml holds the config the run goes on with; this file
    says when each resume happened, from which checkpoint step, and what its command line changed)."""
    import json
    import time

    from drox import __version__

    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_step": int(from_step),
              "overrides": [str(o) for o in overrides], "drox": __version__, "commit": source_commit()}
    with open(Path(run_dir) / RESUMES_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return record


def holds_run(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in RUN_MARKERS)


@contextlib.contextmanager
def claim_run_dir(run_dir: Path, resume: bool, overwrite: bool):
    """Lock ``run_dir`` for this process while the ``with`` block runs, creating it for a new run (or checking it
    for a resume); ConfigError when another process writes it or it holds another run."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is a file, not a folder; choose another run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = lock_run_dir(run_dir)
    try:
        if holds_run(run_dir) and not resume:
            if not overwrite:
                raise ConfigError(f"run_dir={run_dir} already holds a run; continue it with `drox train --resume "
                                  f"{run_dir}`, choose a new run_dir, or pass overwrite=true to replace it")
            for entry in run_dir.iterdir():
                if entry.name in KEEP_ON_OVERWRITE:
                    continue
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        yield run_dir
    finally:
        os.close(fd)  # releases the flock


def lock_run_dir(run_dir: Path) -> int:
    """The open descriptor of ``run_dir``'s lock file, exclusively flocked by this process (closing it releases
    the lock); ConfigError naming the holder's pid when another process has it."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(f"run_dir={run_dir} is being written by another drox process (pid {holder}); wait for it "
                          "to end or choose another run_dir (in a sweep, leave run_dir unset so that each job gets "
                          "its own folder)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
