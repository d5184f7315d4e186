"""`drox data <name>`: load a data set of :mod:`drox.tasks.catalog` and write ``<out>/<name>/{train,test}.jsonl``
with the fields ``task=jsonl`` reads, plus ``source.json`` (docs/data.md).

:func:`fetch` is the only function that reaches the network; :func:`load_local` reads a folder of local files
(``--from-files``) through the same ``datasets.load_dataset`` builders; :func:`write_dataset` takes the loaded
``datasets.Dataset`` of each split, so both paths write the same way. The folder ``<out>/<name>`` is written whole
or not at all (built beside it, then renamed into place).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from drox.atomic import atomic_write, atomic_write_dir, atomic_write_text

from .catalog import DataSource, get, where
from .common import TaskError

UNKNOWN = "unknown"
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class OfflineError(TaskError):
    """The source could not be reached (no network, or the hub refused)."""


def offline_message(source: DataSource, error: BaseException) -> str:
    return (f"drox data {source.name}: cannot download {where(source)} ({_first_line(error)}); run the same command "
            "where a network exists, or give --from-files <folder> with a local copy")


def hub_revision(repo: str) -> Optional[str]:
    """The commit sha of hub dataset ``repo`` now (None when the hub cannot say)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo).sha or None
    except Exception:  # noqa: BLE001 - offline, gated, or an old hub client: the load below decides
        return None


def fetch(source: DataSource, split: str) -> Tuple[Any, str]:
    """(the ``datasets.Dataset`` of drox split ``split``, the revision it was read at) from the hub or GitHub.

    A hub dataset is read at the commit the hub names now, so the recorded revision is the one read ("unknown"
    when the hub gives none); a GitHub file at the commit pinned in the catalog."""
    import datasets

    try:
        if source.on_github:
            url = source.file_url(split)
            return datasets.load_dataset(source.builder, data_files={split: url}, split=split), str(source.revision)
        sha = hub_revision(source.repo)
        loaded = datasets.load_dataset(source.repo, source.config, split=source.splits[split], revision=sha)
        return loaded, sha or UNKNOWN
    except Exception as e:  # noqa: BLE001 - offline shows up as many types (ConnectionError, OSError, hub errors)
        if network_error(e):
            raise OfflineError(offline_message(source, e)) from None
        # e.g. an unknown split or config, or a source the installed `datasets` cannot read: not the network
        raise TaskError(f"drox data {source.name}: cannot load {where(source)} split '{source.splits[split]}' "
                        f"({_first_line(e)})") from None


NETWORK_MODULES = {"httpx", "requests", "urllib3", "aiohttp", "huggingface_hub", "fsspec"}


def network_error(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) is a failure to reach the source: an OSError (ConnectionError,
    timeouts, a file the hub would not serve) or an exception of an HTTP or hub client."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) or type(error).__module__.split(".")[0] in NETWORK_MODULES:
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def local_file(folder: Path, split: str) -> Path:
    """``<folder>/<split>.jsonl`` (or .json / .parquet): the local stand-in for drox split ``split``."""
    for suffix in LOCAL_SUFFIXES:
        path = folder / f"{split}{suffix}"
        if path.is_file():
            return path
    raise TaskError(f"--from-files {folder}: no {split}.jsonl, {split}.json or {split}.parquet there")


def load_local(source: DataSource, split: str, folder: Path) -> Tuple[Any, str]:
    """(the ``datasets.Dataset`` read from ``<folder>/<split>.<ext>``, "unknown"): the rows keep the source's own
    field names, so they go through the same mapping as a download."""
    import datasets

    path = local_file(Path(folder), split)
    try:
        loaded = datasets.load_dataset(LOCAL_SUFFIXES[path.suffix], data_files={split: str(path)}, split=split)
    except Exception as e:  # noqa: BLE001 - a broken file shows up as several types
        raise TaskError(f"--from-files: cannot read {path} ({_first_line(e)})") from None
    return loaded, UNKNOWN


def load(source: DataSource, from_files: Optional[Path] = None) -> Dict[str, Tuple[Any, str]]:
    """``{drox split: (Dataset, revision)}`` for every split of ``source``."""
    if from_files:
        return {split: load_local(source, split, from_files) for split in source.splits}
    return {split: fetch(source, split) for split in source.splits}


# ---------------------------------------------------------------- mapping and writing


def records(source: DataSource, rows: Iterable[Mapping[str, Any]], counts: Dict[str, int]) -> Iterator[dict]:
    """The JSONL objects for ``rows``: ``problem_id`` (where the source has ids), ``prompt``, ``answer``,
    ``solution`` (where the source has one), in that order. Rows without a prompt or answer are left out and
    counted in ``counts`` (as are repeats of an id when ``source.dedupe``)."""
    seen = set()
    for row in rows:
        counts["source_rows"] += 1
        pid = get(row, source.id) if source.id else None
        if source.dedupe and pid is not None:
            if str(pid) in seen:
                counts["repeated_id"] += 1
                continue
            seen.add(str(pid))
        prompt = get(row, source.prompt)
        prompt = prompt.strip() if isinstance(prompt, str) else None
        if prompt and source.fix_prompt is not None:
            prompt = source.fix_prompt(prompt)
        raw = get(row, source.answer)
        answer = source.fix_answer(raw) if source.fix_answer is not None else _text(raw)
        if not prompt or not answer or not str(answer).strip():
            counts["no_prompt_or_answer"] += 1
            continue
        out: Dict[str, Any] = {}
        if source.id:
            if pid is None:
                counts["no_prompt_or_answer"] += 1  # an id column with a hole: the row cannot be named
                continue
            out["problem_id"] = str(pid)
        out["prompt"] = prompt
        out["answer"] = str(answer).strip()
        solution = get(row, source.solution) if source.solution else None
        if isinstance(solution, str) and solution.strip():
            out["solution"] = solution
        yield out


def _text(value: Any) -> Optional[str]:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def _columns(source: DataSource) -> List[str]:
    """The top-level columns the mapping reads (the others are not decoded)."""
    paths = [source.prompt, source.answer, source.id, source.solution]
    return sorted({p.split(".")[0] for p in paths if p})


def write_split(source: DataSource, dataset: Any, path: Path) -> Dict[str, Any]:
    """Write the JSONL of one split to ``path`` -> its entry of source.json (rows, dropped rows, sha256)."""
    counts = {"source_rows": 0, "repeated_id": 0, "no_prompt_or_answer": 0}
    wanted = [c for c in _columns(source) if c in set(dataset.column_names)]
    missing = sorted(set(c for c in (source.prompt.split(".")[0], source.answer.split(".")[0])) - set(wanted))
    if missing:
        raise TaskError(f"drox data {source.name}: the rows have no field '{missing[0]}' (fields: "
                        f"{', '.join(dataset.column_names) or 'none'}); the source changed its layout")
    digest = hashlib.sha256()
    rows = 0

    def write(fh) -> None:
        nonlocal rows
        for obj in records(source, dataset.select_columns(wanted), counts):
            line = json.dumps(obj, ensure_ascii=False) + "\n"
            fh.write(line)
            digest.update(line.encode("utf-8"))
            rows += 1

    atomic_write(path, write)
    if rows == 0:
        raise TaskError(f"drox data {source.name}: no usable rows in {counts['source_rows']} source rows "
                        f"(fields {source.prompt} / {source.answer})")
    return {"file": path.name, "rows": rows, "sha256": digest.hexdigest(), **counts}


def write_dataset(source: DataSource, loaded: Mapping[str, Tuple[Any, str]], out: Path,
                  from_files: Optional[Path] = None) -> Path:
    """Write ``<out>/<source.name>/`` (``<split>.jsonl`` per split and ``source.json``), whole or not at all ->
    the folder. ``loaded`` is ``{drox split: (datasets.Dataset, revision)}`` (:func:`load`)."""
    splits: Dict[str, Any] = {}
    revisions = sorted({rev for _, rev in loaded.values()})

    def write(folder: Path) -> None:
        for split, (dataset, _) in loaded.items():
            entry = write_split(source, dataset, folder / f"{split}.jsonl")
            splits[split] = {"source_split": source.splits[split], **entry}
        record = {
            "dataset": source.name,
            "source": source.repo,
            "config": source.config,
            "revision": revisions[0] if len(revisions) == 1 else revisions,
            "from_files": str(from_files) if from_files else None,
            "fields": {"prompt": source.prompt, "answer": source.answer, "problem_id": source.id,
                       "solution": source.solution},
            "note": source.note,
            "mapping_read_from": source.source,
            "splits": splits,
        }
        atomic_write_text(folder / "source.json", json.dumps(record, indent=2, ensure_ascii=False) + "\n")

    target = Path(out) / source.name
    return atomic_write_dir(target, write, tmp_prefix=f".tmp-{source.name}-")

