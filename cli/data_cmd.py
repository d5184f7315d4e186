"""`drox data`: write a paper's train/test sets as the local JSONL files ``task=jsonl`` reads (docs/data.md).

The command is declared in cli/main.py (which prints this module's errors as its one-line ``error:``); the registry
of data sets is ``drox.tasks.catalog``, loading and writing are ``drox.tasks.prepare``. ``datasets`` loads only when
a set is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

from drox.tasks.catalog import BY_HAND, SOURCES, where
from drox.tasks.common import TaskError


def listing() -> List[str]:
    """One line per data set (name, source, drox split = source split or file, fields), then its note indented."""
    lines = []
    for source in SOURCES.values():
        splits = ", ".join(f"{split}={'/'.join(theirs.split('/')[-2:])}" for split, theirs in source.splits.items())
        fields = f"prompt={source.prompt} answer={source.answer}" + (f" id={source.id}" if source.id else "")
        lines.append(f"{source.name:<14} {where(source)}  [{splits}]  {fields}")
        if source.note:
            lines.append(f"{'':<14} {source.note}")
    for name, why in BY_HAND.items():
        lines.append(f"{name:<14} not written by drox data: {why}")
    return lines


def write(name: Optional[str], out: Path, from_files: Optional[Path], echo: Callable[[str], None]) -> Path:
    """Write data set ``name`` under ``out`` (from the network, or the local copy in ``from_files``) -> its folder.
    Every refusal is a TaskError of one line."""
    if not name:
        raise TaskError("drox data needs a data set name (drox data --list shows them)")
    source = SOURCES.get(name)
    if name in BY_HAND:
        raise TaskError(f"drox data does not write '{name}': {BY_HAND[name]}; write {Path(out) / name}/train.jsonl "
                        "and test.jsonl yourself, one JSON object per line with the fields prompt and answer")
    if source is None:
        from drox.cli.suggest import nearest

        guess = nearest(name, [*SOURCES, *BY_HAND])
        hint = f" (did you mean {guess}?)" if guess else ""
        raise TaskError(f"unknown data set '{name}'{hint}; choose one of: {', '.join(SOURCES)}")
    if from_files is not None and not Path(from_files).is_dir():
        raise TaskError(f"--from-files {from_files}: not a folder")

    from drox.tasks.prepare import load, write_dataset

    folder = write_dataset(source, load(source, from_files), out, from_files=from_files)
    echo(f"-> {folder} ({', '.join(sorted(p.name for p in folder.iterdir()))})")
    return folder
