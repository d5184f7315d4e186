"""Metric sinks: ``metrics.jsonl`` (the source of truth) and W&B (offline by default)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List


class MetricsLogger:
    """Appends one JSON line per step and mirrors it to W&B under ``<prefix>/``.

    ``train`` metrics go to ``metrics.jsonl`` (one line per step); other prefixes to their own
    file (``eval`` -> ``eval.jsonl``, ``filter/query`` -> ``filter_query.jsonl``), so that
    metrics.jsonl stays one line per training step.
    """

    def __init__(self, run_dir: Path, logger_cfg, config_dict: Dict[str, Any], resume_step: int = 0,
                 resume: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.completions_path = self.run_dir / "completions.jsonl"
        if resume or resume_step:
            # a resumed run rewrites history from its checkpoint on: lines after it are dropped (all of them
            # when it was killed before its first checkpoint and starts again from step 0)
            for path in self.run_dir.glob("*.jsonl"):
                _truncate_after(path, resume_step)
        self.wandb = None
        if logger_cfg.wandb_mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb = wandb.init(
                project=logger_cfg.project, name=logger_cfg.run_name or self.run_dir.name,
                group=getattr(logger_cfg, "group", None),
                tags=list(logger_cfg.tags), mode=logger_cfg.wandb_mode, dir=str(self.run_dir),
                config=config_dict, id=wandb_run_id(self.run_dir), resume="allow",
            )

    def log(self, step: int, metrics: Dict[str, Any], prefix: str = "train") -> None:
        line = {"step": step, **metrics}
        path = self.path if prefix == "train" else self.run_dir / f"{prefix.replace('/', '_')}.jsonl"
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
        if self.wandb is not None:
            self.wandb.log({f"{prefix}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def log_completions(self, step: int, rows: List[Dict[str, Any]]) -> None:
        with open(self.completions_path, "a") as f:
            for r in rows:
                f.write(json.dumps({"step": step, **r}) + "\n")
        if self.wandb is not None and rows:
            import wandb

            cols = list(rows[0])
            table = wandb.Table(columns=["step", *cols], data=[[step, *[r[c] for c in cols]] for r in rows])
            self.wandb.log({"train/completions": table}, step=step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def wandb_run_id(run_dir: Path) -> str:
    """The run folder's W&B run id, made once and kept in ``run_dir/wandb_run_id`` so that ``--resume``
    continues the same W&B run instead of starting a second one with the same name."""
    path = Path(run_dir) / "wandb_run_id"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    import secrets

    from drox.atomic import atomic_write_text

    run_id = secrets.token_hex(4)  # W&B's own ids are 8 lowercase alphanumerics
    atomic_write_text(path, run_id + "\n")
    return run_id


def _truncate_after(path: Path, step: int) -> None:
    """Keep only lines with ``step <= step`` (atomic rewrite)."""
    if not path.is_file():
        return
    from drox.atomic import atomic_write_text

    lines = _lines(path)
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:  # a partial last line left by a kill mid-write: it is after the checkpoint
            lines = lines[:-1]
            atomic_write_text(path, "".join(lines))
    keep = [ln for ln, row in zip(lines, read_metrics(path)) if row.get("step", 0) <= step]
    atomic_write_text(path, "".join(keep))


def _lines(path: Path) -> List[str]:
    return [ln for ln in Path(path).read_text().splitlines(keepends=True) if ln.strip()]


def read_metrics(path: Path) -> List[Dict[str, Any]]:
    """The JSON objects of a run's ``*.jsonl`` file; a damaged line is a ValueError naming file and line."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not a JSON line ({e.msg} at column {e.colno}); remove or repair "
                             "that line (a run killed mid-write can leave a partial last line)") from None
    return rows
