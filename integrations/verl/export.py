"""drox tasks -> the parquet files verl's ``RLHFDataset`` reads (no verl import).

One row per problem, with the columns verl 0.9.1 uses (``data.prompt_key=prompt``, ``data.reward_fn_key=
data_source``) and what drox's reward manager needs to verify a response without the drox config::

    data_source   "drox/<task>"
    prompt        [{"role": "system", "content": model.system_prompt}?, {"role": "user", "content": <prompt>}]
                  (verl applies the tokenizer's chat template itself, as drox does with model.chat_template=true)
    reward_model  {"style": "rule", "ground_truth": <answer as text>}
    extra_info    {"index": i, "problem_id", "split", "drox_task", "drox_verifier": "math" | "countdown",
                   "drox_row": <the row's other columns as JSON, e.g. countdown's numbers and target>}

Files are deterministic (same task config and seed -> byte-identical files: a fixed schema, rows in the task's own
seeded order, JSON with sorted keys, no timestamps) and written atomically (temp file beside the target + rename,
:func:`drox.atomic.atomic_write`), so a killed export never leaves a half-written file that verl would read.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["ExportResult", "export_task", "parquet_schema", "task_records", "write_parquet"]


@dataclass
class ExportResult:
    train: Path
    val: Path
    num_train: int
    num_val: int
    val_is_train: bool = False
    """True when the task has no held-out split and the validation file repeats the training rows."""


def parquet_schema():
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(message)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("index", pa.int64()), ("problem_id", pa.string()), ("split", pa.string()),
                                  ("drox_task", pa.string()), ("drox_verifier", pa.string()),
                                  ("drox_row", pa.string())])),
    ])


def _plain(value: Any) -> Any:
    """A JSON-able copy of a dataset cell (numpy scalars and tuples made plain)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def task_records(task, split: str, system_prompt: Optional[str] = None, limit: Optional[int] = None) -> List[Dict]:
    """verl rows for the ``split`` rows of a built drox ``task`` (``drox.tasks.Task``); ``limit`` keeps the first N."""
    if task.verifier is None:
        raise ValueError(f"task {task.name} has no verifier; drox's verl reward manager scores with one")
    verifier = getattr(task.verifier, "name", "math")
    records = []
    for i, row in enumerate(task.dataset):
        if limit is not None and i >= limit:
            break
        row = _plain(dict(row))
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
        messages.append({"role": "user", "content": str(row["prompt"])})
        rest = {k: v for k, v in row.items() if k != "prompt"}
        records.append({
            "data_source": f"drox/{task.name}",
            "prompt": messages,
            "ability": task.name,
            "reward_model": {"style": "rule", "ground_truth": str(row.get("answer", ""))},
            "extra_info": {"index": i, "problem_id": str(row.get("problem_id", i)), "split": split,
                           "drox_task": task.name, "drox_verifier": verifier,
                           "drox_row": json.dumps(rest, sort_keys=True, ensure_ascii=False, default=str)},
        })
    return records


def write_parquet(records: List[Dict], path: Path) -> Path:
    """Write ``records`` with :func:`parquet_schema` to ``path`` atomically; returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from drox.atomic import atomic_write

    table = pa.Table.from_pylist(records, schema=parquet_schema())
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()), mode="wb")


def export_task(cfg, out_dir: Path) -> ExportResult:
    """Export the drox config's task: ``out_dir/train.parquet`` (training split) and ``out_dir/val.parquet`` (the
    split and size ``drox eval`` would use: ``eval.split``, ``eval.num_problems``)."""
    from drox.tasks import build_task

    out_dir = Path(out_dir)
    system = cfg.model.system_prompt if cfg.model.chat_template else None
    train = task_records(build_task(cfg.task, "train"), "train", system)
    val_is_train = False
    split = str(cfg.eval.split)
    if split == "test" and cfg.task.name in ("jsonl", "parquet") and not cfg.task.test_path:
        val, val_is_train = train, True  # a file task without test_path: verl still needs a validation file
    else:
        val = task_records(build_task(cfg.task, split), split, system, cfg.eval.num_problems)
    train_path = write_parquet(train, out_dir / "train.parquet")
    val_path = write_parquet(val, out_dir / "val.parquet")
    return ExportResult(train_path, val_path, len(train), len(val), val_is_train)
