"""Reading scored samples and writing pass@k reports (summary.json, per_problem.csv, passk.png).

pass@k values come from ``drox.evaluation.passk`` (Chen et al. 2021, arXiv 2107.03374, §2.1 Eq. 1).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from drox.atomic import atomic_write

__all__ = ["write_eval_outputs", "load_samples_jsonl", "format_table"]


def _json_default(obj):
    # Summaries built by hand or by pandas may hold numpy scalars, which json cannot serialise.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _metric_series(summary: Mapping, prefix: str, ks: Sequence[int]) -> tuple[list[int], list[float]]:
    xs = [k for k in ks if f"{prefix}@{k}" in summary]
    return xs, [float(summary[f"{prefix}@{k}"]) for k in xs]


def _n_caption(summary: Mapping) -> str:
    """'n=64, problems=500': the sample count and problem count a score was computed from."""
    parts = [f"{label}={summary[key]}" for key, label in (("n", "n"), ("num_problems", "problems")) if key in summary]
    return ", ".join(parts)


def _plot(path: Path, summary: Mapping, ks: Sequence[int], title: str | None) -> None:
    # Figure + FigureCanvasAgg is the Agg backend without pyplot: no global backend switch and no
    # global figure registry, so this is safe from threads and never needs a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for prefix, marker in (("pass", "o"), ("maj", "s")):
        xs, ys = _metric_series(summary, prefix, ks)
        if xs:
            # clip_on=False keeps markers at exactly 0 or 1 whole instead of cut by the axes edge.
            ax.plot(xs, ys, marker=marker, label=f"{prefix}@k", clip_on=False)
    ax.set_xscale("log", base=2)
    ks_sorted = sorted(ks)
    if ks_sorted:
        lo, hi = ks_sorted[0], ks_sorted[-1]
        ax.set_xlim(lo / 1.25, hi * 1.25) if hi > lo else ax.set_xlim(lo / 2, lo * 2)
        # Tick exactly at the evaluated k, labelled as plain integers rather than 2^x.
        ax.xaxis.set_major_locator(FixedLocator(ks_sorted))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(k) for k in ks_sorted])
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("k")
    ax.set_ylabel("score")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    # The n used is part of the result (pass@k is only defined for k <= n), so it always goes in the title.
    detail = _n_caption(summary)
    heading = title or "pass@k"
    ax.set_title(f"{heading}\n({detail})" if detail else heading, fontsize=10)
    fig.tight_layout()

    atomic_write(path, lambda fh: fig.savefig(fh, format="png"), mode="wb")


def write_eval_outputs(
    out_dir: str | os.PathLike,
    summary: Mapping,
    per_problem: pd.DataFrame,
    ks: Sequence[int],
    title: str | None = None,
) -> dict[str, Path]:
    """Write summary.json, per_problem.csv and passk.png into ``out_dir`` (created if missing).

    Each file is written atomically (temp file + os.replace). Returns ``{"summary": ..., "per_problem":
    ..., "plot": ...}`` paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": out / "summary.json",
        "per_problem": out / "per_problem.csv",
        "plot": out / "passk.png",
    }
    # Keys in the order given (pass@k before maj@k before n): that order is the readable one.
    text = json.dumps(dict(summary), indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write(paths["summary"], lambda fh: fh.write(text))
    atomic_write(paths["per_problem"], lambda fh: per_problem.to_csv(fh, index=False))
    if any(f"pass@{k}" in summary for k in ks):  # a task without a verifier has no pass@k to draw
        _plot(paths["plot"], summary, list(ks), title)
    else:
        del paths["plot"]
    return paths


def load_samples_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read scored samples, one JSON object per line with ``problem_id``, ``correct`` and optional ``answer``.

    ``problem_id`` (int or str) is returned as str; a numeric ``answer`` is returned as str. Blank lines
    are skipped; line numbers in errors count them. Every problem raises a one-line ``ValueError``.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such file")
    if p.is_dir():
        raise ValueError(f"{p}: is a directory, expected a JSONL file of samples")
    samples: list[dict] = []
    with p.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{p} line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{where}: not valid JSON") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            for field in ("problem_id", "correct"):
                if field not in obj:
                    raise ValueError(f"{where}: missing field {field!r}")
            if not isinstance(obj["correct"], bool):
                # 1/0 or "yes" are refused rather than guessed: a wrongly read grade silently skews pass@k.
                raise ValueError(f"{where}: field 'correct' must be true/false, got {obj['correct']!r}")
            pid = obj["problem_id"]
            if isinstance(pid, bool) or not isinstance(pid, (int, str)):
                raise ValueError(f"{where}: field 'problem_id' must be a string or integer, got {pid!r}")
            obj["problem_id"] = str(pid)
            if "answer" in obj:
                ans = obj["answer"]
                if isinstance(ans, (int, float)) and not isinstance(ans, bool):
                    obj["answer"] = str(ans)
                elif ans is not None and not isinstance(ans, str):
                    raise ValueError(f"{where}: field 'answer' must be a string or null, got {ans!r}")
            samples.append(obj)
    if not samples:
        raise ValueError(f"{p}: no samples")
    return samples


def format_table(summary: Mapping, ks: Sequence[int]) -> Table:
    """A rich table with one row per k: k | pass@k | maj@k (the maj column only when maj@k was computed)."""
    has_maj = any(f"maj@{k}" in summary for k in ks)
    caption = _n_caption(summary)
    table = Table(title="pass@k", caption=caption or None)
    table.add_column("k", justify="right")
    table.add_column("pass@k", justify="right")
    if has_maj:
        table.add_column("maj@k", justify="right")

    def cell(key: str) -> str:
        return f"{float(summary[key]):.4f}" if key in summary else "-"

    for k in sorted(ks):
        row = [str(k), cell(f"pass@{k}")]
        if has_maj:
            row.append(cell(f"maj@{k}"))
        table.add_row(*row)
    return table
