"""Local JSONL / Parquet tasks: map the configured fields to prompt / answer / problem_id.

Every error is one line naming the file, the line (or row) and the field, because the
user's fix is always "edit that line" or "set task.<x>_field".
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Optional

import datasets

from drox.components import register_task
from drox.errors import first_line

from .common import Task, TaskError, check_split, with_suffix
from .verify import MathVerifier


def _path(cfg: Any, split: str) -> tuple[str, str]:
    """(file, the option it came from) for this split."""
    check_split(split)
    if split == "test":
        if not cfg.test_path:  # training rows are not a held-out split, whatever the folder is called
            raise TaskError(f"task={cfg.name} has no held-out split: give task.test_path=<file> for evaluation, "
                            "or set eval.split=train to evaluate on the training rows (reported as train)")
        path, option = str(cfg.test_path), "task.test_path"
    else:
        path, option = cfg.path, "task.path"
    if not path:
        raise TaskError(f"task={cfg.name} needs {option}")
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise TaskError(f"{option}: no such file: {path}")
    if not os.path.isfile(path):
        raise TaskError(f"{option}: not a file: {path}")
    return path, option


def read_jsonl(path: str) -> list[tuple[str, dict]]:
    """(``"<path> line N"``, object) per non-blank line, parsed one line at a time so a
    broken line is reported by number."""
    records = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path} line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TaskError(f"{where}: not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise TaskError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            records.append((where, obj))
    return records


def read_parquet(path: str) -> list[tuple[str, dict]]:
    """(``"<path> row N"``, row) per row."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        reason = first_line(e, with_type=True, with_cause=False)
        raise TaskError(f"{path}: not a readable Parquet file ({reason})") from None
    return [(f"{path} row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]


def records_to_dataset(records: Iterable[tuple[str, dict]], source: str, cfg: Any) -> datasets.Dataset:
    """Rows -> Dataset with problem_id, prompt (+ suffix), answer and the other fields kept.

    The source columns that were mapped are dropped (they would duplicate prompt/answer),
    and so are unmapped columns named problem_id/prompt/answer (the mapped values win).
    ``source`` names the file in the "no rows" and table-building errors.
    """
    prompt_field, answer_field = str(cfg.prompt_field), str(cfg.answer_field)
    id_field: Optional[str] = str(cfg.id_field) if cfg.id_field else None
    mapped = {prompt_field, answer_field} | ({id_field} if id_field else set())
    rows = []
    for index, (where, obj) in enumerate(records):
        prompt = _field(obj, prompt_field, "prompt_field", where)
        if not isinstance(prompt, str):
            raise TaskError(f"{where}: field '{prompt_field}' must be a string, got {type(prompt).__name__}")
        answer = _field(obj, answer_field, "answer_field", where)
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise TaskError(f"{where}: field '{answer_field}' must be a string or a number (the reference answer), "
                            f"got {type(answer).__name__}: {str(answer)[:60]}")
        if not str(answer).strip():
            raise TaskError(f"{where}: field '{answer_field}' is empty; every row needs a reference answer")
        pid = _field(obj, id_field, "id_field", where) if id_field else index
        extra = {k: v for k, v in obj.items() if k not in mapped and k not in ("problem_id", "prompt", "answer")}
        rows.append({"problem_id": str(pid), "prompt": with_suffix(prompt, cfg), "answer": str(answer), **extra})
    if not rows:
        raise TaskError(f"{source}: no rows")
    try:
        return datasets.Dataset.from_list(rows)
    except Exception as e:  # noqa: BLE001 - arrow type clashes between rows
        reason = first_line(e, with_type=True, with_cause=False)
        raise TaskError(f"{source}: rows do not form a table ({reason})") from None


def _field(obj: dict, name: str, option: str, where: str):
    if name not in obj:
        have = ", ".join(map(str, obj)) or "none"
        raise TaskError(f"{where}: missing field '{name}' (set task.{option}=...; fields here: {have})")
    if obj[name] is None:
        raise TaskError(f"{where}: field '{name}' is null")
    return obj[name]


@register_task("jsonl", verl="drox.integrations.verl.mapping:task")
def build_jsonl(cfg: Any, split: str) -> Task:
    """``task=jsonl``: task.path (train) / task.test_path (test; no test split without it)."""
    path, _ = _path(cfg, split)
    return Task("jsonl", records_to_dataset(read_jsonl(path), path, cfg), MathVerifier(float(cfg.verify_timeout)))


@register_task("parquet", verl="drox.integrations.verl.mapping:task")
def build_parquet(cfg: Any, split: str) -> Task:
    """``task=parquet``: like jsonl, one row per problem."""
    path, _ = _path(cfg, split)
    return Task("parquet", records_to_dataset(read_parquet(path), path, cfg), MathVerifier(float(cfg.verify_timeout)))
