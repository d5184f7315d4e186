"""Reading scored samples and writing pass@k reports (summary.json, per_problem.csv, passk.png), and the
reliability diagram of stated confidences (reliability.png, reliability.csv).

pass@k values come from ``drox.evaluation.passk`` (Chen et al. 2021, arXiv 2107.03374, §2.1 Eq. 1); the
calibration numbers from ``drox.signals.calibration`` (RLCR, arXiv 2507.16806).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from drox.atomic import atomic_write

__all__ = ["write_eval_outputs", "write_reliability", "format_reliability_csv", "format_calibration_line",
           "load_samples_jsonl", "format_table"]


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
    atomic_write(paths["per_problem"], lambda fh: per_problem.to_csv(fh, index=False))
    if any(f"pass@{k}" in summary for k in ks):  # a task without a verifier has no pass@k to draw
        _plot(paths["plot"], summary, list(ks), title)
    else:
        del paths["plot"]
    # last: a folder with summary.json is a finished evaluation (the experiment driver keeps it), so a process
    # killed before this line leaves none
    atomic_write(paths["summary"], lambda fh: fh.write(text))
    return paths


def format_reliability_csv(rows: Sequence[Mapping]) -> str:
    """reliability.csv: bin_low, bin_high, count, mean_confidence, accuracy (one line per bin, empty cells for the
    NaN mean/accuracy of an empty bin); ``rows`` from :func:`drox.signals.calibration.reliability_bins`."""
    from drox.signals.calibration import RELIABILITY_COLUMNS

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RELIABILITY_COLUMNS)
    for row in rows:
        writer.writerow(["" if isinstance(row[c], float) and math.isnan(row[c]) else row[c]
                         for c in RELIABILITY_COLUMNS])
    return buffer.getvalue()


def _plot_reliability(path: Path, rows: Sequence[Mapping], heading: str) -> None:
    """Two panels: accuracy per bin (bars) with the bin's mean confidence (points) and the diagonal; count per bin."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 6), dpi=120)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = [r for r in rows if r["count"] > 0]
    lows = [r["bin_low"] for r in rows]
    widths = [r["bin_high"] - r["bin_low"] for r in rows]
    top.bar([r["bin_low"] for r in filled], [r["accuracy"] for r in filled],
            width=[r["bin_high"] - r["bin_low"] for r in filled], align="edge", alpha=0.6, edgecolor="black",
            label="accuracy")
    top.plot([r["mean_confidence"] for r in filled], [r["accuracy"] for r in filled], "o", color="C3",
             label="(mean confidence, accuracy)", clip_on=False)
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_xlim(0.0, 1.0)
    top.set_ylim(0.0, 1.0)
    top.set_ylabel("accuracy")
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(heading, fontsize=10)
    counts = [r["count"] for r in rows]
    bottom.bar(lows, counts, width=widths, align="edge", color="C0", edgecolor="black")
    for low, width, count in zip(lows, widths, counts):
        if count:
            bottom.annotate(str(count), (low + width / 2, count), ha="center", va="bottom", fontsize=7)
    bottom.set_ylim(0, max(counts) * 1.25 if max(counts) else 1)
    bottom.set_xlabel("stated confidence")
    bottom.set_ylabel("samples")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"), mode="wb")


def format_calibration_line(summary: Mapping) -> str | None:
    """One line on the calibration keys of ``summary`` (None when it has none: eval.confidence_tag and
    eval.confidence_score were off)."""
    if "calibration_n" not in summary:
        return None
    fail = f"no usable confidence in {float(summary['confidence_format_fail_frac']):.0%} of the samples"
    if not summary["calibration_n"]:
        return f"calibration: {fail} (check eval.confidence_tag against the completions in samples.jsonl)"
    return (f"calibration over {summary['calibration_n']} stated: brier {summary['brier']:.4f}, ece "
            f"{summary['ece']:.4f}, auroc {summary['auroc']:.4f}, confidence {summary['confidence_mean']:.4f} vs "
            f"accuracy {summary['accuracy_stated']:.4f}; {fail}")


def write_reliability(out_dir: str | os.PathLike, correct: Sequence[bool], q: Sequence[float],
                      title: str | None = None, n_bins: int = 10) -> dict[str, Path]:
    """Write reliability.csv and reliability.png into ``out_dir`` for aligned per-sample ``correct`` [N] and stated
    confidence ``q`` [N] (N >= 1; the samples that stated one), binned into ``n_bins`` equal-width bins on [0, 1]
    as :func:`drox.signals.calibration.ece` bins them. Returns ``{"reliability_csv": ..., "reliability_plot": ...}``.
    """
    from drox.signals.calibration import brier_score, ece, reliability_bins

    out = Path(out_dir)
    rows = reliability_bins(correct, q, n_bins)
    paths = {"reliability_csv": out / "reliability.csv", "reliability_plot": out / "reliability.png"}
    text = format_reliability_csv(rows)
    atomic_write(paths["reliability_csv"], lambda fh: fh.write(text))
    scores = f"ECE {ece(correct, q, n_bins):.3f}, Brier {brier_score(correct, q):.3f}, n={len(q)} stated"
    _plot_reliability(paths["reliability_plot"], rows, f"{title or 'reliability'}\n({scores})")
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
