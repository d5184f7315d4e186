"""`drox report`'s figures: training curves and pass@k curves per group, as PNG files.

matplotlib through ``Figure`` + ``FigureCanvasAgg`` (as ``drox.evaluation.report``): no pyplot, no global
backend or figure registry, no display needed. Every file is written atomically.

* ``curves_step.png``, ``curves_time.png``, ``curves_samples.png``: each chosen metric against the training
  step, the wall-clock seconds of training (``time/elapsed``) and the rollouts generated (``samples_seen``);
  one panel per metric, one line per group: the mean over the group's runs at each step, and a shaded
  band from the lowest to the highest run (min-max over seeds, drawn where at least two runs logged the
  step). On the time and samples axes a step sits at the mean of its runs' x values; an eval at step 0 sits
  at x = 0. Eval metrics are drawn at the eval steps.
* ``passk.png``: pass@k against k (log-2 axis) from the eval each run reports (the last, or the one at
  ``--at-step``); one line per group with a 95% band: the Student-t interval over the runs when a group has
  two or more, else a percentile bootstrap over the problems of the one run's ``per_problem.csv`` (no band
  when that file is missing). The step-0 evals (the policy before training) are drawn once as a separate
  dashed ``base (step 0)`` line, pooled over all runs (one line per value of the group keys under
  ``model.`` when the groups differ in the model).
* ``reliability.png`` (when the evals carry a per-sample ``confidence``: ``eval.confidence_tag`` or
  ``eval.confidence_score``): accuracy against mean confidence in 10 equal-width bins, one line per group over
  the samples of all its runs pooled (the samples.jsonl of the same eval as ``passk.png``), the step-0 evals as
  a dashed base line, the diagonal of perfect calibration; each legend entry gives the pooled ECE and the
  number of samples (drox.signals.calibration.reliability_bins / ece).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from drox.atomic import atomic_write
from drox.evaluation.bootstrap import bootstrap_ci
from drox.evaluation.aggregate import Group, Report, Run, eval_summary_at, group_label, metric_series, summarize_values

__all__ = ["write_plots", "plot_curves", "plot_passk", "plot_reliability", "pooled_confidences", "draw_passk", "format_passk_axes", "new_figure", "save_figure",
           "X_AXES", "BOOTSTRAP_RESAMPLES"]

X_AXES: Dict[str, Tuple[Optional[str], str]] = {
    "step": (None, "training step"),
    "time": ("time/elapsed", "training time (s)"),
    "samples": ("samples_seen", "samples seen (rollouts)"),
}
"""File suffix -> (metrics.jsonl key giving x at each step; None = the step itself, axis label)."""
BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the problems for a one-run pass@k band (seeded: the same files give the same figure)."""


def write_plots(report: Report, out_dir: Path) -> List[Path]:
    """Every figure that the report's runs have data for; the paths written."""
    out_dir = Path(out_dir)
    written = []
    for suffix in X_AXES:
        path = plot_curves(report, suffix, out_dir / f"curves_{suffix}.png")
        if path is not None:
            written.append(path)
    for plot, name in ((plot_passk, "passk.png"), (plot_reliability, "reliability.png")):
        path = plot(report, out_dir / name)
        if path is not None:
            written.append(path)
    return written


# ------------------------------------------------------------------------------------------------ curves


def _x_of_steps(run: Run, x_key: Optional[str]) -> Dict[int, float]:
    """``{step: x}`` for one run: the step itself, or the run's ``x_key`` logged at that step (0 at step 0)."""
    if x_key is None:
        steps = {line.get("step") for line in run.train} | {s for s in run.evals if s is not None}
        return {s: float(s) for s in steps if isinstance(s, int)}
    xs = metric_series(run, x_key)
    xs.setdefault(0, 0.0)  # before the first step nothing has been spent (the base model's eval)
    return xs


def _group_curve(runs: Sequence[Run], metric: str, x_key: Optional[str]
                 ) -> Tuple[List[float], List[float], List[float], List[float]]:
    """(x, mean, low, high) of ``metric`` over ``runs`` at each step; low/high are NaN where one run logged it."""
    by_step: Dict[int, List[Tuple[float, float]]] = {}
    for run in runs:
        xs = _x_of_steps(run, x_key)
        for step, value in metric_series(run, metric).items():
            if step in xs:
                by_step.setdefault(step, []).append((xs[step], value))
    x, mean, low, high = [], [], [], []
    for step in sorted(by_step):
        points = by_step[step]
        values = [v for _, v in points]
        x.append(math.fsum(p for p, _ in points) / len(points))
        mean.append(math.fsum(values) / len(values))
        low.append(min(values) if len(values) > 1 else math.nan)
        high.append(max(values) if len(values) > 1 else math.nan)
    return x, mean, low, high


def new_figure(width: float, height: float):
    """A Figure with its Agg canvas attached (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path) -> Path:
    """Lay out and write ``fig`` as PNG, atomically."""
    fig.tight_layout()
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png"), mode="wb")


def plot_curves(report: Report, suffix: str, path: Path) -> Optional[Path]:
    """The chosen metrics against the x axis ``suffix`` of :data:`X_AXES`; None when nothing can be drawn."""
    x_key, x_label = X_AXES[suffix]
    panels = []
    for metric in report.metrics:
        curves = [(group, _group_curve(group.runs, metric, x_key)) for group in report.groups]
        curves = [(group, curve) for group, curve in curves if curve[0]]
        if curves:
            panels.append((metric, curves))
    if not panels:
        return None
    columns = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / columns)
    fig = new_figure(6.0 * columns, 3.4 * rows)
    colors = _group_colors(report.groups)
    for index, (metric, curves) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, index + 1)
        for group, (x, mean, low, high) in curves:
            color = colors[id(group)]
            ax.plot(x, mean, marker="." if len(x) < 30 else None, color=color,
                    label=f"{group_label(report.group_keys, group)} (n={len(group.runs)})")
            ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
    fig.axes[0].legend(loc="best", fontsize=7)
    fig.suptitle("mean over seeds; band: min-max over seeds", fontsize=9)
    return save_figure(fig, path)


def _group_colors(groups: Sequence[Group]) -> Dict[int, str]:
    """A colour per group (matplotlib's default cycle, repeated when there are more groups)."""
    palette = [f"C{i}" for i in range(10)]
    return {id(group): palette[i % len(palette)] for i, group in enumerate(groups)}


# ------------------------------------------------------------------------------------------------ pass@k


def _pass_ks(summaries: Sequence[dict]) -> List[int]:
    """The k of every ``pass@k`` key in the summaries, sorted."""
    ks = set()
    for summary in summaries:
        for key in summary:
            if key.startswith("pass@") and key[5:].isdigit():
                ks.add(int(key[5:]))
    return sorted(ks)


def _read_per_problem(path: Path, ks: Sequence[int]) -> Dict[int, List[float]]:
    """``{k: [pass@k of each problem]}`` from a per_problem.csv (columns the file lacks are left out)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [float(row[f"pass@{k}"]) for row in rows] for k in ks if rows and f"pass@{k}" in rows[0]}


def _bootstrap_band(per_problem: Dict[int, List[float]], ks: Sequence[int], seed: int = 0
                    ) -> Dict[int, Tuple[float, float]]:
    """95% percentile bootstrap of the mean over problems, per k (:func:`bootstrap_ci`; one seed, so the same
    resampled problems for every k)."""
    return {k: bootstrap_ci(per_problem[k], seed=seed, n_resamples=BOOTSTRAP_RESAMPLES)
            for k in ks if per_problem.get(k)}


def _passk_line(summaries: Sequence[Tuple[Run, Optional[int], dict]], ks: Sequence[int]
                ) -> Tuple[List[int], List[float], Dict[int, Tuple[float, float]]]:
    """(k, mean pass@k, band) over the given evals: Student-t band over runs, or a bootstrap for one run."""
    xs, means, band = [], [], {}
    for k in ks:
        values = [float(s[f"pass@{k}"]) for _, _, s in summaries if f"pass@{k}" in s]
        if not values:
            continue
        stats = summarize_values(values)
        xs.append(k)
        means.append(stats.mean)
        if stats.n > 1:
            band[k] = (stats.ci95_low, stats.ci95_high)
    if len(summaries) == 1:
        run, step, _ = summaries[0]
        if step in run.per_problem:
            band = _bootstrap_band(_read_per_problem(run.per_problem[step], xs), xs)
    return xs, means, band


def draw_passk(ax, xs: List[int], means: List[float], band: Dict[int, Tuple[float, float]], label: str,
                **style) -> None:
    """One pass@k line with its band (where the band is known)."""
    line = ax.plot(xs, means, marker="o", clip_on=False, label=label, **style)[0]
    banded = [k for k in xs if k in band]
    if banded:
        ax.fill_between(banded, [max(0.0, band[k][0]) for k in banded], [min(1.0, band[k][1]) for k in banded],
                        color=line.get_color(), alpha=0.15, linewidth=0)


def _base_lines(report: Report) -> Dict[Tuple, List[Tuple[Run, Optional[int], dict]]]:
    """The step-0 evals of all runs, split by the values of the group keys that start with ``model.``."""
    model_keys = [i for i, key in enumerate(report.group_keys) if key.startswith("model.")]
    lines: Dict[Tuple, List[Tuple[Run, Optional[int], dict]]] = {}
    for group in report.groups:
        identity = tuple(str(group.values[i]) for i in model_keys)
        for run in group.runs:
            if 0 in run.evals:
                lines.setdefault(identity, []).append((run, 0, run.evals[0]))
    return lines


def plot_passk(report: Report, path: Path) -> Optional[Path]:
    """pass@k against k per group, the base model once; None when no run has a pass@k eval."""
    step_of = (lambda run: report.at_step) if report.at_step is not None else (lambda run: run.last_eval_key())
    per_group = []
    for group in report.groups:
        evals = [(run, step_of(run), eval_summary_at(run, report.at_step)) for run in group.runs]
        evals = [e for e in evals if e[2] is not None and _pass_ks([e[2]])]
        if evals:
            per_group.append((group, evals))
    if not per_group:
        return None
    ks = _pass_ks([s for _, evals in per_group for _, _, s in evals])
    fig = new_figure(6.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    colors = _group_colors(report.groups)
    if report.at_step != 0:  # at step 0 the groups' lines are the base model already
        model_keys = [key for key in report.group_keys if key.startswith("model.")]
        for identity, evals in _base_lines(report).items():
            suffix = ", ".join(f"{k}={v}" for k, v in zip(model_keys, identity))
            xs, means, band = _passk_line(evals, ks)
            draw_passk(ax, xs, means, band, f"base (step 0){' ' + suffix if suffix else ''}", color="black",
                        linestyle="--")
    for group, evals in per_group:
        xs, means, band = _passk_line(evals, ks)
        draw_passk(ax, xs, means, band, f"{group_label(report.group_keys, group)} (n={len(evals)})",
                    color=colors[id(group)])
    which = f"eval at step {report.at_step}" if report.at_step is not None else "last eval of each run"
    format_passk_axes(ax, ks, f"pass@k ({which})\nband: 95% Student t over seeds; one seed: bootstrap over problems")
    return save_figure(fig, path)


def format_passk_axes(ax, ks: Sequence[int], title: str) -> None:
    """The pass@k axes every drox figure shares: k on a log-2 axis ticked at the evaluated ks, pass@k in [0, 1]."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ks = sorted(ks)
    ax.set_xscale("log", base=2)
    low, high = ks[0], ks[-1]
    ax.set_xlim(low / 1.25, high * 1.25) if high > low else ax.set_xlim(low / 2, low * 2)
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    ax.set_title(title, fontsize=9)



# ------------------------------------------------------------------------------------------------ reliability


def pooled_confidences(evals: Sequence[Tuple[Run, Optional[int]]]) -> Tuple[List[float], List[float]]:
    """``(correct [N], q [N])`` pooled over the samples.jsonl of each (run, eval step) that carry a confidence
    (samples without one are left out, as the calibration metrics leave them out)."""
    import json

    correct, q = [], []
    for run, step in evals:
        folder = run.eval_dirs.get(step)
        path = None if folder is None else folder / "samples.jsonl"
        if path is None or not path.is_file():
            continue
        for line in path.read_text().splitlines():
            record = json.loads(line) if line.strip() else {}
            if record.get("confidence") is not None and "correct" in record:
                correct.append(float(bool(record["correct"])))
                q.append(float(record["confidence"]))
    return correct, q


def plot_reliability(report: Report, path: Path) -> Optional[Path]:
    """The groups' reliability diagrams in one figure; None when no eval carries a per-sample confidence."""
    from drox.signals.calibration import ece, reliability_bins

    step_of = (lambda run: report.at_step) if report.at_step is not None else (lambda run: run.last_eval_key())
    lines = []
    if report.at_step != 0:
        base = [(run, 0) for group in report.groups for run in group.runs if 0 in run.evals]
        lines.append(("base (step 0)", base, dict(color="black", linestyle="--")))
    colors = _group_colors(report.groups)
    for group in report.groups:
        lines.append((group_label(report.group_keys, group), [(run, step_of(run)) for run in group.runs],
                      dict(color=colors[id(group)])))
    pooled = [(label, pooled_confidences(evals), style) for label, evals, style in lines]
    pooled = [(label, cq, style) for label, cq, style in pooled if cq[1]]
    if not pooled:
        return None
    fig = new_figure(5.5, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="perfect calibration")
    for label, (correct, q), style in pooled:
        rows = [r for r in reliability_bins(correct, q) if r["count"]]
        ax.plot([r["mean_confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", markersize=3,
                label=f"{label}: ECE {ece(correct, q):.3f}, N={len(q)}", **style)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence in the bin (10 equal-width bins)")
    ax.set_ylabel("accuracy in the bin")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    which = f"eval at step {report.at_step}" if report.at_step is not None else "last eval of each run"
    ax.set_title(f"reliability ({which}; samples of a group's runs pooled)", fontsize=9)
    return save_figure(fig, path)
