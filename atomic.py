"""Atomic file and folder writes: a crash never leaves a half-written result (temp file or folder beside the
target + rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Optional


def atomic_write(path: str | Path, write: Callable[[IO], None], mode: str = "w") -> Path:
    """Call ``write(fh)`` on a temp file beside ``path``, then rename it into place.

    Same directory so that ``os.replace`` is a rename on one filesystem (atomic on POSIX): a
    crash leaves either the old file or the new one, never a half-written result.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text))


def atomic_write_dir(path: str | Path, write: Callable[[Path], None], tmp_prefix: Optional[str] = None) -> Path:
    """Call ``write(folder)`` on a fresh temp folder beside ``path``, then rename it to ``path`` when whole.

    So any folder named ``path`` was written completely (a crash leaves only a temp folder, named
    ``tmp_prefix`` + random, default ``.tmp-<name>-``, which the caller may sweep up by that prefix). An existing
    ``path`` is replaced whole (removed, then the rename). The folder gets the permissions of any new folder
    (the umask's), not ``mkdtemp``'s private 0700.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix or f".tmp-{path.name}-", dir=path.parent))
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def atomic_write_jsonl(path: str | Path, records: Iterable[Any]) -> Path:
    """One JSON object per line, written atomically."""
    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
