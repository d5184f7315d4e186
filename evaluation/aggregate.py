"""`drox report`'s core: find run folders, group them by config, aggregate metrics over seeds, write tables.

Pure Python (no numpy, no pandas, no scipy) and local files only. The steps, one function each:

1. :func:`discover_runs`: a PATH is a run folder or any folder holding run folders (searched recursively,
   e.g. a Hydra multirun folder ``multirun/<date>/<time>/`` with ``0/``, ``1/``...). A *run folder* has
   ``config.yaml`` and ``metrics.jsonl`` or ``eval/`` (written by ``drox train``), or ``summary.json``
   (written by ``drox eval --out``; its ``config.yaml`` is optional). The search does not go into a run
   folder nor into hidden folders (``.hydra/``).
2. :func:`load_run`: the flattened config (``{"trainer.lr": 1e-05, ...}``; empty when there is no
   config.yaml), the training lines of ``metrics.jsonl`` and the eval summaries ``eval/step-N/summary.json``
   (an eval-only folder's ``summary.json`` is its one eval, at an unknown step).
3. :func:`default_group_keys` / :func:`group_runs`: runs with the same values of the group keys form a
   group; the runs in a group are taken as seeds of one configuration.
4. :func:`aggregate`: per group and metric, mean, sample std and a Student-t 95% interval over the runs.
5. :func:`write_tables`: ``table.csv`` and ``table.md``, atomically.

Metric names. Training metrics keep their ``metrics.jsonl`` names (``reward/mean``, ``accuracy``,
``time/elapsed``, ``samples_seen``...). Eval summary keys get the prefix ``eval/`` (``eval/pass@1``,
``eval/maj@8``, ``eval/mean_length``), the names W&B shows them under.

A run's value of a metric is the last one logged: the last line of ``metrics.jsonl`` that holds the
metric, or the eval summary of the highest step. With ``at_step=N`` it is the value logged at step N
(``eval/step-N/summary.json`` for eval metrics). A run with no value (at that step) is left out of its
group with a warning naming the run and the metric, so ``n`` counts the runs that had it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from drox.atomic import atomic_write_text

__all__ = [
    "ReportError", "Run", "Group", "Stats", "Row", "Report", "EVAL_PREFIX", "EXCLUDED_KEYS", "EXCLUDED_PREFIXES",
    "discover_runs", "is_run_folder", "load_run", "flatten_config", "default_group_keys", "group_runs",
    "available_metrics", "default_metrics", "metric_value", "metric_series", "eval_summary_at",
    "regularized_incomplete_beta", "student_t_cdf", "student_t_quantile", "summarize_values", "aggregate",
    "build_report", "format_csv", "format_markdown", "write_tables", "group_label",
]

EVAL_PREFIX = "eval/"
"""Prefix of the metrics read from eval summaries (``eval/pass@1``)."""
EXCLUDED_KEYS = ("seed", "run_dir", "resume")
"""Config keys never used as default group keys: they differ between the seeds of one configuration."""
EXCLUDED_PREFIXES = ("logger.",)
"""Config key prefixes never used as default group keys (W&B project/name/tags/group: labels, not settings)."""
DEFAULT_TRAIN_METRICS = ("reward/mean", "accuracy")
"""Training metrics reported when no metric is named (with every eval pass@k and maj@k)."""
_EVAL_STEP_DIR = re.compile(r"^step-(\d+)$")
_DEFAULT_EVAL_METRIC = re.compile(r"^(pass|maj)@\d+$")


class ReportError(ValueError):
    """A problem with the input of a report (no runs, unknown metric or key), said in one line."""


@dataclass
class Run:
    """One run folder, read."""

    path: Path
    """The run folder."""
    config: Dict[str, Any]
    """Flattened config (``{"trainer.lr": 1e-05}``); empty when the folder has no config.yaml."""
    train: List[Dict[str, Any]] = field(default_factory=list)
    """The lines of metrics.jsonl, in file order."""
    evals: Dict[Optional[int], Dict[str, Any]] = field(default_factory=dict)
    """Eval summaries by step; key None: the summary.json of an eval-only folder (step unknown)."""
    per_problem: Dict[Optional[int], Path] = field(default_factory=dict)
    """per_problem.csv next to each summary, by the same keys as ``evals``."""
    eval_dirs: Dict[Optional[int], Path] = field(default_factory=dict)
    """The folder of each summary (with its samples.jsonl), by the same keys as ``evals``."""

    @property
    def name(self) -> str:
        """How messages and plots name the run: its folder."""
        return str(self.path)

    def last_eval_key(self) -> Optional[int]:
        """The key of the last eval in ``evals`` (highest step; None for an eval-only folder)."""
        steps = [s for s in self.evals if s is not None]
        return max(steps) if steps else None


@dataclass
class Group:
    """Runs that share the values of the group keys (the seeds of one configuration)."""

    values: Tuple[Any, ...]
    """The group keys' values, in the order of the keys (None: a run without that key)."""
    runs: List[Run]


@dataclass
class Stats:
    """Mean, sample std and Student-t 95% interval of one metric over the runs of a group."""

    mean: float
    std: float
    """Sample std (ddof=1); NaN when n = 1."""
    ci95_low: float
    ci95_high: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width (0 when n = 1)."""
        return (self.ci95_high - self.ci95_low) / 2


@dataclass
class Row:
    """One line of the table: a group, a metric and its statistics."""

    group: Group
    metric: str
    stats: Stats


@dataclass
class Report:
    """Everything a report shows: the runs, how they were grouped, the rows and the warnings met."""

    runs: List[Run]
    group_keys: List[str]
    groups: List[Group]
    metrics: List[str]
    at_step: Optional[int]
    rows: List[Row]
    warnings: List[str]


# ------------------------------------------------------------------------------------------------ discovery


def is_run_folder(path: Path) -> bool:
    """A drox train folder (config.yaml plus metrics.jsonl or eval/) or a drox eval folder (summary.json)."""
    if (path / "summary.json").is_file():
        return True
    return (path / "config.yaml").is_file() and ((path / "metrics.jsonl").is_file() or (path / "eval").is_dir())


def discover_runs(paths: Sequence[Path]) -> List[Path]:
    """The run folders at or under each of ``paths``, each once, in path order then sorted.

    Raises :class:`ReportError` for a path that does not exist, is not a folder or holds no run.
    """
    found: List[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise ReportError(f"{path}: no such folder")
        if not path.is_dir():
            raise ReportError(f"{path}: not a folder; pass a run folder or a folder that holds run folders")
        runs = _runs_under(path)
        if not runs:
            raise ReportError(f"{path}: no run folders found (a run folder holds config.yaml with metrics.jsonl "
                              "or eval/, or the summary.json of drox eval)")
        found.extend(r for r in runs if r not in found)
    return found


def _runs_under(root: Path) -> List[Path]:
    """Run folders at or below ``root``; the walk stops at a run folder and skips hidden folders."""
    runs: List[Path] = []
    for current, dirs, _files in os.walk(root):
        folder = Path(current)
        if is_run_folder(folder):
            runs.append(folder)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(runs, key=_natural_key)


def _natural_key(path: Path) -> List[Any]:
    """Sort ``multirun/.../10`` after ``.../9``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


# ------------------------------------------------------------------------------------------------ reading


def load_run(path: Path, eval_label: Optional[str] = None) -> Run:
    """Read one run folder (:func:`is_run_folder`); a malformed file raises :class:`ReportError` naming it.

    ``eval_label``: read the evaluations ``drox eval --run RUN --label LABEL`` wrote (``evals/LABEL/step-N/``)
    instead of the ones made during training (``eval/step-N/``).
    """
    path = Path(path)
    config_path = path / "config.yaml"
    config = flatten_config(_read_yaml(config_path)) if config_path.is_file() else {}
    metrics_path = path / "metrics.jsonl"
    train = _read_jsonl(metrics_path) if metrics_path.is_file() else []
    run = Run(path=path, config=config, train=train)
    eval_root = path / "eval" if eval_label is None else path / "evals" / eval_label
    if eval_root.is_dir():
        for step_dir in eval_root.iterdir():
            match = _EVAL_STEP_DIR.match(step_dir.name)
            if match and (step_dir / "summary.json").is_file():
                _add_eval(run, int(match.group(1)), step_dir)
    if (path / "summary.json").is_file():
        _add_eval(run, None, path)
    return run


def _add_eval(run: Run, step: Optional[int], folder: Path) -> None:
    """Record the summary.json (and per_problem.csv when present) of ``folder`` as the eval at ``step``."""
    summary_path = folder / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{summary_path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(summary, dict):
        raise ReportError(f"{summary_path}: expected a JSON object")
    run.evals[step] = summary
    run.eval_dirs[step] = folder
    if (folder / "per_problem.csv").is_file():
        run.per_problem[step] = folder / "per_problem.csv"


def _read_yaml(path: Path) -> Dict[str, Any]:
    """A config.yaml as a plain dict (OmegaConf's loader: ``1e-5`` is a float, as in Hydra)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        loaded = OmegaConf.load(path)
        try:
            data = OmegaConf.to_container(loaded, resolve=True)
        except OmegaConfBaseException:  # an interpolation that does not resolve here: keep it as written
            data = OmegaConf.to_container(loaded, resolve=False)
    except Exception as e:  # YAML syntax, permissions...: one line naming the file
        raise ReportError(f"{path}: cannot read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a mapping of config keys")
    return data


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """The JSON objects of a JSONL file (blank lines skipped)."""
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ReportError(f"{path} line {lineno}: not valid JSON") from None
        if not isinstance(record, dict):
            raise ReportError(f"{path} line {lineno}: expected a JSON object")
        records.append(record)
    return records


def flatten_config(nested: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"trainer": {"lr": 1e-5}}`` -> ``{"trainer.lr": 1e-5}``; lists stay values; empty mappings vanish."""
    flat: Dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


# ------------------------------------------------------------------------------------------------ grouping


def _hashable(value: Any) -> Any:
    """A value usable as a dict key and comparable for equality (lists and dicts as canonical JSON)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def _is_per_run_path(value: Any, run: Run) -> bool:
    """True when ``value`` is a path into the run's own folder (differs between runs by construction)."""
    if not isinstance(value, str) or not value or ("/" not in value and value != run.path.name):
        return False
    try:
        target, own = Path(value).resolve(), run.path.resolve()
    except (OSError, RuntimeError):
        return False
    if target == own or own in target.parents:
        return True
    # a relative path written from another working directory: compare its tail with the run folder's
    relative = value.strip("/")
    return not Path(value).is_absolute() and own.as_posix().endswith("/" + relative)


def default_group_keys(runs: Sequence[Run]) -> List[str]:
    """The flattened config keys whose values differ between runs, sorted.

    Left out: ``seed``, ``run_dir``, ``resume`` (:data:`EXCLUDED_KEYS`), every ``logger.*`` key
    (:data:`EXCLUDED_PREFIXES`) and any key whose value is, in some run, a path into that run's own folder.
    Only runs with a config take part: an eval-only folder without config.yaml would make every key differ.
    A key that some configs lack differs (missing counts as a value).
    """
    configured = [run for run in runs if run.config]
    keys = sorted({key for run in configured for key in run.config})
    chosen = []
    for key in keys:
        if key in EXCLUDED_KEYS or key.startswith(EXCLUDED_PREFIXES):
            continue
        if any(_is_per_run_path(run.config.get(key), run) for run in configured):
            continue
        if len({_hashable(run.config.get(key)) for run in configured}) > 1:
            chosen.append(key)
    return chosen


def check_group_keys(runs: Sequence[Run], keys: Sequence[str]) -> None:
    """Raise :class:`ReportError` for a key that no run's config holds."""
    known = {key for run in runs for key in run.config}
    for key in keys:
        if key not in known:
            close = sorted(k for k in known if key.split(".")[-1] in k)[:8]
            hint = f"; similar keys: {', '.join(close)}" if close else ""
            raise ReportError(f"--group-by: no run's config has the key '{key}'{hint}")


def _sort_value(value: Any) -> Tuple[int, Any]:
    """Sort key that orders None first, then numbers, then everything else as text."""
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value)
    return (2, str(_hashable(value)))


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> List[Group]:
    """Runs grouped by their values of ``keys`` (one group of all runs when ``keys`` is empty), sorted by value."""
    by_values: Dict[Tuple[Any, ...], Group] = {}
    for run in runs:
        values = tuple(run.config.get(key) for key in keys)
        identity = tuple(_hashable(v) for v in values)
        by_values.setdefault(identity, Group(values=values, runs=[])).runs.append(run)
    return sorted(by_values.values(), key=lambda g: tuple(_sort_value(v) for v in g.values))


def group_label(keys: Sequence[str], group: Group) -> str:
    """``trainer.lr=1e-05, model.name=tiny``; ``all runs`` when there are no group keys."""
    if not keys:
        return "all runs"
    return ", ".join(f"{key}={_cell(value)}" for key, value in zip(keys, group.values))


# ------------------------------------------------------------------------------------------------ metric values


def _is_number(value: Any) -> bool:
    """int or float, not bool (NaN counts: it is a logged value)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def available_metrics(runs: Sequence[Run]) -> List[str]:
    """Every numeric metric some run logged: training names as-is, eval summary keys with ``eval/``."""
    names = {key for run in runs for line in run.train for key, v in line.items() if key != "step" and _is_number(v)}
    names |= {EVAL_PREFIX + key for run in runs for summary in run.evals.values()
              for key, v in summary.items() if _is_number(v)}
    return sorted(names)


def default_metrics(runs: Sequence[Run]) -> List[str]:
    """Every eval ``pass@k``, then ``maj@k`` (by k), then ``reward/mean`` and ``accuracy``: those that were logged."""
    available = set(available_metrics(runs))

    def pass_first_then_k(name: str) -> Tuple[int, int]:
        kind, k = name[len(EVAL_PREFIX):].split("@")
        return (0 if kind == "pass" else 1, int(k))

    evals = sorted((m for m in available
                    if m.startswith(EVAL_PREFIX) and _DEFAULT_EVAL_METRIC.match(m[len(EVAL_PREFIX):])),
                   key=pass_first_then_k)
    return evals + [m for m in DEFAULT_TRAIN_METRICS if m in available]


def eval_summary_at(run: Run, at_step: Optional[int]) -> Optional[Dict[str, Any]]:
    """The eval summary a report uses: at ``at_step`` when given, else the last one; None when absent."""
    key = at_step if at_step is not None else run.last_eval_key()
    return run.evals.get(key)


def metric_value(run: Run, metric: str, at_step: Optional[int] = None) -> Optional[float]:
    """The run's value of ``metric``: the last logged, or the one logged at ``at_step``; None when there is none."""
    if metric.startswith(EVAL_PREFIX):
        summary = eval_summary_at(run, at_step)
        value = None if summary is None else summary.get(metric[len(EVAL_PREFIX):])
        return float(value) if _is_number(value) else None
    for line in reversed(run.train):  # the last line wins (a step logged twice: the later one)
        if at_step is not None and line.get("step") != at_step:
            continue
        value = line.get(metric)
        if _is_number(value):
            return float(value)
    return None


def metric_series(run: Run, metric: str) -> Dict[int, float]:
    """``{step: value}`` of ``metric`` over the run (eval metrics at the eval steps); for curves."""
    if metric.startswith(EVAL_PREFIX):
        name = metric[len(EVAL_PREFIX):]
        return {step: float(s[name]) for step, s in sorted(run.evals.items(), key=lambda kv: _sort_value(kv[0]))
                if step is not None and _is_number(s.get(name))}
    series: Dict[int, float] = {}
    for line in run.train:
        step, value = line.get("step"), line.get(metric)
        if isinstance(step, int) and _is_number(value):
            series[step] = float(value)
    return series


# ------------------------------------------------------------------------------------------------ Student t


def _beta_continued_fraction(x: float, a: float, b: float, max_terms: int = 500, eps: float = 1e-16) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method.

    Converges quickly for ``x < (a + 1) / (a + b + 2)`` (Numerical Recipes §6.4, ``betacf``).
    """
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, max_terms + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return fraction


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b) for 0 <= x <= 1 and a, b > 0."""
    if not (a > 0 and b > 0):
        raise ValueError(f"incomplete beta needs a, b > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(1.0 - x, b, a) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom: 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t > 0."""
    if df <= 0:
        raise ValueError(f"Student t needs df > 0, got {df}")
    if t == 0:
        return 0.5
    tail = 0.5 * regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with ``student_t_cdf(t, df) == p`` (e.g. p=0.975, df=4 -> 2.776445), by bisection on the exact cdf."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if middle in (low, high):  # the interval is one float wide
            break
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


# ------------------------------------------------------------------------------------------------ aggregation


def summarize_values(values: Sequence[float], confidence: float = 0.95) -> Stats:
    """Mean, sample std (ddof=1) and the Student-t interval mean ± t_{(1+confidence)/2, n-1} · std / √n.

    With one value the std is NaN and the interval collapses to the mean.
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = math.fsum(values) / n
    if n == 1:
        return Stats(mean=mean, std=math.nan, ci95_low=mean, ci95_high=mean, n=1)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t_quantile((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n)
    return Stats(mean=mean, std=std, ci95_low=mean - half, ci95_high=mean + half, n=n)


def aggregate(groups: Sequence[Group], metrics: Sequence[str], at_step: Optional[int] = None
              ) -> Tuple[List[Row], List[str]]:
    """One :class:`Row` per group and metric that at least one of its runs has; plus warnings for the runs
    that lack a value (left out of their group's statistics)."""
    rows: List[Row] = []
    warnings: List[str] = []
    where = f" at step {at_step}" if at_step is not None else ""
    for group in groups:
        for metric in metrics:
            values = []
            for run in group.runs:
                value = metric_value(run, metric, at_step)
                if value is None:
                    warnings.append(f"{run.name}: no value of {metric}{where}; left out of its group")
                else:
                    values.append(value)
            if values:
                rows.append(Row(group=group, metric=metric, stats=summarize_values(values)))
    return rows, warnings


def build_report(paths: Sequence[Path], group_by: Optional[Sequence[str]] = None,
                 metrics: Optional[Sequence[str]] = None, at_step: Optional[int] = None,
                 eval_label: Optional[str] = None) -> Report:
    """Discover, read, group and aggregate: the whole report but its files.

    ``group_by`` None: :func:`default_group_keys`; an empty list: one group of all runs. ``metrics`` None:
    :func:`default_metrics`. Raises :class:`ReportError` for bad input or when nothing can be reported.
    """
    runs = [load_run(path, eval_label) for path in discover_runs(paths)]
    if group_by is None:
        keys = default_group_keys(runs)
    else:
        keys = list(group_by)
        check_group_keys(runs, keys)
    known = available_metrics(runs)
    if metrics is None:
        chosen = default_metrics(runs)
        if not chosen:
            raise ReportError("the runs logged none of the default metrics (eval pass@k/maj@k, reward/mean, "
                              f"accuracy); name some with --metric (available: {_preview(known)})")
    else:
        chosen = list(metrics)
        for metric in chosen:
            if metric not in known:
                raise ReportError(f"unknown metric '{metric}': no run logged it (available: {_preview(known)})")
    groups = group_runs(runs, keys)
    rows, warnings = aggregate(groups, chosen, at_step)
    if not rows:
        where = f" at step {at_step}" if at_step is not None else ""
        raise ReportError(f"no run has a value of {', '.join(chosen)}{where}")
    return Report(runs=runs, group_keys=keys, groups=groups, metrics=chosen, at_step=at_step, rows=rows,
                  warnings=warnings)


def _preview(names: Sequence[str], limit: int = 25) -> str:
    """The first ``limit`` names, comma-separated, with a count of the rest."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "") if names else "none"


# ------------------------------------------------------------------------------------------------ tables

CSV_STAT_COLUMNS = ("metric", "mean", "std", "ci95_low", "ci95_high", "n")


def _cell(value: Any) -> str:
    """A config value as text: None empty, booleans true/false, floats round-trip exact, lists as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _number_cell(value: float) -> str:
    """A statistic for the CSV: the exact float, empty when NaN (the std of one run)."""
    return "" if math.isnan(value) else repr(value)


def format_csv(report: Report) -> str:
    """table.csv: the group keys' values, then metric, mean, std, ci95_low, ci95_high, n; one row per group x metric."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*report.group_keys, *CSV_STAT_COLUMNS])
    for row in report.rows:
        s = row.stats
        writer.writerow([*(_cell(v) for v in row.group.values), row.metric, _number_cell(s.mean),
                         _number_cell(s.std), _number_cell(s.ci95_low), _number_cell(s.ci95_high), s.n])
    return buffer.getvalue()


def _short(value: float) -> str:
    """A statistic for reading: 4 decimals in the usual range, scientific notation outside it."""
    if math.isnan(value) or value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


def _md_escape(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|") if text else "-"


def format_markdown(report: Report) -> str:
    """table.md: the same rows, with ``mean ± half-width of the 95% interval`` (just the mean when n = 1) and n."""
    header = [*report.group_keys, "metric", "mean ± 95% CI", "n"]
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for row in report.rows:
        s = row.stats
        value = _short(s.mean) if s.n == 1 else f"{_short(s.mean)} ± {_short(s.half_width)}"
        cells = [*(_md_escape(_cell(v)) for v in row.group.values), _md_escape(row.metric), value, str(s.n)]
        lines.append("| " + " | ".join(cells) + " |")
    step = f"at step {report.at_step}" if report.at_step is not None else "last logged value of each run"
    lines += ["", f"{_count(len(report.runs), 'run')} in {_count(len(report.groups), 'group')}; {step}; 95% CI: "
                  "Student t over the runs of a group (seeds)."]
    return "\n".join(lines) + "\n"


def _count(number: int, noun: str) -> str:
    """``1 run``, ``3 runs``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def write_tables(report: Report, out_dir: Path) -> Dict[str, Path]:
    """Write ``table.csv`` and ``table.md`` into ``out_dir`` (created), each atomically; their paths."""
    out_dir = Path(out_dir)
    return {"csv": atomic_write_text(out_dir / "table.csv", format_csv(report)),
            "md": atomic_write_text(out_dir / "table.md", format_markdown(report))}


def parse_list_option(values: Optional[Iterable[str]]) -> Optional[List[str]]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (an option given comma-separated, repeated, or both); None stays None."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
