"""Run one paper comparison from nothing: train every arm for every seed, evaluate, aggregate, write results.md.

    python experiments/driver.py nsr                # scale=cpu, the committed protocol (make table-nsr)
    python experiments/driver.py nsr --smoke        # 1 step on model=tiny, into a temp folder (CI)

Each experiment is a folder ``experiments/<name>/`` with ``spec.py`` (the arms, seeds, metrics, the paper's
numbers and the verdict rule) next to its README; the protocol itself (model, task, steps, eval settings) is
``conf/experiment/<name>.yaml`` plus ``conf/experiment_scale/<name>_cpu.yaml``, so ``drox train
experiment=<name> <arm overrides> seed=S`` reproduces any single run by hand.

Steps: 1. train each arm x seed into ``runs/<arm>/seed-<S>/`` (a finished run is kept: rerunning resumes the
table); 2. evaluate the base policy once into ``runs/base/`` with the same eval settings; 3. aggregate each
metric over seeds (mean, sample std, Student-t 95% interval; drox.evaluation.aggregate); 4. write
``results.md`` (protocol, ours beside the paper's, the verdicts), ``table.csv`` and the plots.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
SMOKE = ["model.name=tiny", "model.path=null", "device=cpu", "trainer.steps=1", "trainer.prompts_per_step=4", "trainer.samples_per_prompt=2",
         "rollout.max_new_tokens=8", "eval.n=2", "eval.pass_at_k=[1,2]", "eval.num_problems=2",
         "logger.wandb_mode=disabled", "trainer.save_every=0", "sft.steps=1", "sft.batch_size=2",
         "eval.judge.model=null"]  # the judge (dro_revise) is tested in test_open_ended_eval.py; loading it 4x is slow


@dataclass
class Arm:
    """One configuration of the comparison: a name and the overrides that make it."""

    name: str
    overrides: List[str] = field(default_factory=list)
    kind: str = "rl"
    """rl: ``drox train``; sft: ``drox sft`` of the base (the distillation arm), then the same evaluation."""
    smoke: List[str] = field(default_factory=list)
    """Overrides the smoke run (--smoke, CI) adds for this arm only, after the experiment's (e.g. a tree shape that
    fits the smoke's 2 samples per prompt)."""


@dataclass
class Claim:
    """One claim of the paper, tested as the difference ``metric(arm_a) - metric(arm_b)``, whose sign the paper
    reports (``direction`` +1: a above b; -1: a below b)."""

    text: str
    metric: str
    arm_a: str
    arm_b: str
    direction: int
    paper: str
    """The paper's numbers behind the claim, as text (PAPERS.md)."""


@dataclass
class Experiment:
    name: str
    arms: List[Arm]
    seeds: List[int]
    metrics: List[str]
    claims: List[Claim]
    base: bool = True
    """Evaluate the base policy once (an arm named ``base`` in the tables)."""
    notes: str = ""
    """Said under the table: what is scaled down, what to read into it."""
    crossover: Optional[Tuple[str, str]] = None
    """(base arm, trained arm): report the k from which the first's mean pass@k curve stays at or above the
    second's (Yue et al. 2025; drox.evaluation.passk.crossover_k)."""
    transfer: Dict[str, List[str]] = field(default_factory=dict)
    """label -> overrides of a second evaluation (e.g. another task, "out of domain"): every run's final
    checkpoint and the base are evaluated again with them into ``<run>/transfer/<label>/``; its summary keys are
    the metrics ``transfer/<label>/<key>`` (e.g. ``transfer/ood/pass@1``)."""
    smoke: List[str] = field(default_factory=list)
    """Overrides the smoke run (--smoke, CI) adds after its small sizes, where an arm's option must shrink with
    them (e.g. a length buffer larger than the smoke's 8 new tokens)."""
    prepare: Optional[Any] = None
    """``prepare(exp, runs, common, log)``, called before training: may add overrides to arms (1-shot RLVR picks
    its example there) and returns lines for the protocol section."""


# ------------------------------------------------------------------------------------------------ statistics


def welch_difference(a: Sequence[float], b: Sequence[float]) -> Tuple[float, float, float]:
    """mean(a) - mean(b) and its Welch 95% interval (Student-t with Welch-Satterthwaite df).

    A side with a single value (the base policy: one evaluation, not seeds) is taken as a constant, so the
    interval is the other side's t-interval shifted; (d, nan, nan) when both sides have one value.
    """
    from drox.evaluation.aggregate import student_t_quantile, summarize_values

    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    diff = ma - mb
    if na < 2 and nb < 2:
        return diff, float("nan"), float("nan")
    if na < 2 or nb < 2:
        spread = summarize_values(b if na < 2 else a)
        half = (spread.ci95_high - spread.ci95_low) / 2
        return diff, diff - half, diff + half
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / ((va ** 2) / (na - 1) + (vb ** 2) / (nb - 1))
    half = student_t_quantile(0.975, df) * se
    return diff, diff - half, diff + half


def verdict(direction: int, low: float, high: float) -> str:
    """reproduced: the interval excludes 0 on the paper's side; not reproduced: it excludes 0 on the other
    side; inconclusive: it contains 0 (or could not be computed)."""
    if math.isnan(low) or math.isnan(high) or low <= 0 <= high:
        return "inconclusive"
    if low == high:  # every seed gave the same value: a t-interval of width 0 is no evidence of precision
        return "inconclusive (zero spread over the seeds; the interval cannot be estimated)"
    return "reproduced" if (low > 0) == (direction > 0) else "not reproduced (opposite direction)"


# ------------------------------------------------------------------------------------------------ running


def load_spec(name: str) -> Experiment:
    path = HERE / name / "spec.py"
    if not path.is_file():
        known = sorted(p.parent.name for p in HERE.glob("*/spec.py"))
        raise SystemExit(f"error: no experiment '{name}' ({path} missing); known: {', '.join(known)}")
    spec = importlib.util.spec_from_file_location(f"drox_experiment_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SPEC


def _compose(overrides: List[str]):
    from drox.cli.main import compose

    return compose(overrides)


def _finished(run_dir: Path, steps: int) -> bool:
    """The run's final evaluation exists: at ``steps``, or at the step that spent ``trainer.time_budget``."""
    import json

    if (run_dir / "eval" / f"step-{steps:06d}" / "summary.json").is_file():
        return True
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    last = json.loads(lines[-1]) if lines else {}
    return bool(last.get("time/budget_spent")) and (run_dir / "eval" / f"step-{last['step']:06d}" / "summary.json").is_file()


def train_arms(exp: Experiment, runs: Path, common: List[str], log, after: Sequence[str] = ()
               ) -> Dict[str, List[Path]]:
    """Step 1: every arm x seed (in-process; finished runs are kept). ``after``: overrides applied after the
    arm's (the smoke test's sizes)."""
    from drox.trainers.loop import run_training

    folders: Dict[str, List[Path]] = {}
    for arm in exp.arms:
        for seed in exp.seeds:
            run_dir = runs / arm.name / f"seed-{seed}"
            cfg = _compose([f"experiment={exp.name}", *common, *arm.overrides, *after, *(arm.smoke if after else []),
                            f"seed={seed}",
                            f"logger.run_name={exp.name}/{arm.name}/seed-{seed}",
                            f"logger.tags=[{exp.name},{arm.name}]"])
            folders.setdefault(arm.name, []).append(run_dir)
            steps = int(cfg.sft.steps if arm.kind == "sft" else cfg.trainer.steps)
            if _finished(run_dir, steps):
                log(f"[{arm.name} seed {seed}] finished earlier: kept")
                continue
            if run_dir.exists():
                shutil.rmtree(run_dir)  # an interrupted run starts over: every arm gets the same budget
            start = time.perf_counter()
            log(f"[{arm.name} seed {seed}] training -> {run_dir}")
            if arm.kind == "sft":
                _sft_arm(cfg, run_dir, steps)
            else:
                run_training(cfg, run_dir, progress=sys.stderr.isatty())
            log(f"[{arm.name} seed {seed}] done in {time.perf_counter() - start:.0f} s")
    return folders


def _sft_arm(cfg, run_dir: Path, steps: int) -> None:
    """Supervised fine-tuning of the base (drox sft), then the experiment's evaluation of the result, written
    where a training run keeps its final eval (eval/step-N/), so the tables read both alike."""
    from drox.evaluation.runner import evaluate_to
    from drox.trainers.sft import run_sft

    run_sft(cfg, run_dir, progress=sys.stderr.isatty())
    tuned = cfg.copy()
    tuned.model.name, tuned.model.path = "hf", str(run_dir / "model")
    evaluate_to(tuned, run_dir / "eval" / f"step-{steps:06d}", title=f"sft step {steps}", step=steps,
                progress=sys.stderr.isatty())


def evaluate_base(exp: Experiment, runs: Path, common: List[str], log) -> Optional[Path]:
    """Step 2: the base policy, once, with the experiment's eval settings."""
    from drox.evaluation.runner import evaluate_to

    if not exp.base:
        return None
    out = runs / "base"
    if (out / "summary.json").is_file():
        log("[base] evaluated earlier: kept")
        return out
    cfg = _compose([f"experiment={exp.name}", *common])
    log(f"[base] evaluating -> {out}")
    evaluate_to(cfg, out, title="base policy", progress=sys.stderr.isatty())
    return out


TRANSFER = "transfer/"


def evaluate_transfer(exp: Experiment, folders: Dict[str, List[Path]], base: Optional[Path], common: List[str],
                      after: Sequence[str], log) -> None:
    """Step 2b: each ``exp.transfer`` evaluation of every run's final checkpoint (and of the base)."""
    from drox.evaluation.runner import evaluate_to

    for label, overrides in exp.transfer.items():
        targets = [(arm, path) for arm, paths in folders.items() for path in paths]
        targets += [("base", base)] if base is not None else []
        for arm, path in targets:
            out = path / "transfer" / label
            if (out / "summary.json").is_file():
                log(f"[{arm} {path.name}] transfer '{label}' evaluated earlier: kept")
                continue
            model = []
            if arm != "base":
                kind = next(a.kind for a in exp.arms if a.name == arm)
                weights = path / "model" if kind == "sft" else max((path / "checkpoints").glob("step-*"))
                model = ["model.name=hf", f"model.path={weights}"]
            cfg = _compose([f"experiment={exp.name}", *common, *overrides, *after, *model])
            log(f"[{arm} {path.name}] transfer '{label}' -> {out}")
            evaluate_to(cfg, out, title=f"{arm} {path.name}: {label}", progress=sys.stderr.isatty())


def _metric(path: Path, metric: str) -> Optional[float]:
    """A run's (or the base's) value of ``metric``: ``transfer/<label>/<key>`` from its transfer evaluation, any
    other metric as drox report reads it (drox.evaluation.aggregate.metric_value)."""
    import json

    from drox.evaluation.aggregate import load_run, metric_value

    if metric.startswith(TRANSFER):
        label, key = metric[len(TRANSFER):].split("/", 1)
        summary = path / "transfer" / label / "summary.json"
        value = json.loads(summary.read_text()).get(key) if summary.is_file() else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return metric_value(load_run(path), metric)


def _values(runs: Sequence[Path], metric: str) -> List[float]:
    values = []
    for path in runs:
        value = _metric(path, metric)
        if value is not None:
            values.append(value)
    return values


def results_markdown(exp: Experiment, folders: Dict[str, List[Path]], base: Optional[Path],
                     protocol: Dict[str, Any]) -> Tuple[str, List[Dict[str, Any]]]:
    """Step 4's text: protocol, the table (mean ± 95% CI, n), the claims with the paper's numbers and verdicts."""
    from drox.evaluation.aggregate import summarize_values

    groups: Dict[str, List[List[float]]] = {}
    rows: List[Dict[str, Any]] = []
    arm_names = (["base"] if base is not None else []) + [a.name for a in exp.arms]
    for arm in arm_names:
        for metric in exp.metrics:
            if arm == "base":
                value = _metric(base, metric)
                values = [] if value is None else [value]
            else:
                values = _values(folders[arm], metric)
            if not values:
                continue
            stats = summarize_values(values)
            groups.setdefault(arm, []).append(values)
            rows.append({"arm": arm, "metric": metric, "mean": stats.mean, "std": stats.std,
                         "ci95_low": stats.ci95_low, "ci95_high": stats.ci95_high, "n": stats.n})

    lines = [f"# {exp.name}: results", "", "Generated by `make table-{0}` (experiments/driver.py {0}); do not edit "
             "by hand.".format(exp.name), "", "## Protocol", ""]
    lines += [f"- {key}: {value}" for key, value in protocol.items()]
    lines += ["", "## Ours (mean ± 95% t-interval over seeds; n = seeds; the base is one evaluation)", ""]
    header = "| arm | " + " | ".join(exp.metrics) + " |"
    lines += [header, "|---|" + "---|" * len(exp.metrics)]
    for arm in arm_names:
        cells = []
        for metric in exp.metrics:
            row = next((r for r in rows if r["arm"] == arm and r["metric"] == metric), None)
            if row is None:
                cells.append("–")
            elif row["n"] == 1:
                cells.append(f"{row['mean']:.3f} (n=1)")
            else:
                cells.append(f"{row['mean']:.3f} ± {(row['ci95_high'] - row['ci95_low']) / 2:.3f} (n={row['n']})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "## Claims: the paper's number, ours, the verdict", "",
              "| claim | paper | ours: difference (95% Welch interval) | verdict |", "|---|---|---|---|"]
    for claim in exp.claims:
        a = _values(folders[claim.arm_a] if claim.arm_a != "base" else [base], claim.metric)
        b = _values(folders[claim.arm_b] if claim.arm_b != "base" else [base], claim.metric)
        if not a or not b:
            lines.append(f"| {claim.text} | {claim.paper} | – | inconclusive (no values) |")
            continue
        d, low, high = welch_difference(a, b)
        interval = f"[{low:+.3f}, {high:+.3f}]" if not math.isnan(low) else "(one value on a side: no interval)"
        lines.append(f"| {claim.text} | {claim.paper} | {claim.metric}: {claim.arm_a} − {claim.arm_b} = "
                     f"{d:+.3f} {interval} | {verdict(claim.direction, low, high)} |")
    lines += ["", "Verdict rule: reproduced = the 95% interval of the difference excludes 0 on the paper's side; "
              "not reproduced = it excludes 0 on the other side; inconclusive = it contains 0. A difference "
              "against the base (one evaluation) has no interval on that side: Welch's interval then uses the "
              "arm's spread only when the arm has ≥ 2 seeds; otherwise the verdict is inconclusive."]
    if exp.crossover is not None:
        lines += ["", "## Crossover", "", crossover_line(exp.crossover, folders, base)]
    if exp.notes:
        lines += ["", "## Notes", "", exp.notes.strip()]
    return "\n".join(lines) + "\n", rows


def mean_curve(runs: Sequence[Path]) -> Dict[int, float]:
    """k -> pass@k averaged over the runs' last evaluations (the ks every run has)."""
    from drox.evaluation.aggregate import eval_summary_at, load_run
    from drox.evaluation.curves import passk_curve

    curves = [passk_curve(eval_summary_at(load_run(p), None) or {}) for p in runs]
    ks = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return {k: sum(c[k] for c in curves) / len(curves) for k in ks}


def crossover_line(pair: Tuple[str, str], folders: Dict[str, List[Path]], base: Optional[Path]) -> str:
    from drox.evaluation.passk import crossover_k

    first, second = ([base] if name == "base" else folders[name] for name in pair)
    a, b = mean_curve(first), mean_curve(second)
    if not set(a) & set(b):
        return f"{pair[0]} vs {pair[1]}: no common k."
    k = crossover_k(a, b)
    largest = max(set(a) & set(b))
    where = (f"none up to k = {largest}: {pair[1]} stays above {pair[0]}" if k is None
             else f"k = {k}: from there on {pair[0]}'s mean pass@k is at or above {pair[1]}'s")
    cells = ", ".join(f"k={j}: {a[j]:.3f} vs {b[j]:.3f}" for j in sorted(set(a) & set(b)))
    return f"{pair[0]} vs {pair[1]}: {where} ({cells})."


def training_time(folders: Dict[str, List[Path]]) -> str:
    """Mean and total training wall time of the runs (their last ``time/elapsed``; SFT arms included)."""
    from drox.evaluation.aggregate import load_run, metric_value

    times = [metric_value(load_run(p), "time/elapsed") for paths in folders.values() for p in paths]
    times = [t for t in times if t is not None]
    if not times:
        return "not logged"
    return f"{sum(times) / len(times) / 60:.1f} min per run, {sum(times) / 60:.1f} min for all {len(times)} runs"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def run(name: str, out: Optional[Path] = None, smoke: bool = False, log=print) -> Path:
    exp = load_spec(name)
    if smoke:
        exp.seeds = exp.seeds[:1]
    out = Path(out) if out is not None else HERE / name
    runs = out / "runs"
    common = ["scale=cpu", *(SMOKE if smoke else [])]
    start = time.perf_counter()
    prepared = exp.prepare(exp, runs, common, log) if exp.prepare is not None else []
    after = [*SMOKE, *exp.smoke] if smoke else []
    folders = train_arms(exp, runs, common, log, after=after)
    base = evaluate_base(exp, runs, common, log)
    evaluate_transfer(exp, folders, base, common, after, log)
    cfg = _compose([f"experiment={exp.name}", *common])
    from drox.evaluation.runner import eval_settings

    settings = eval_settings(cfg)
    wall = time.perf_counter() - start
    protocol = {
        "model": cfg.model.path or cfg.model.name,
        "task": ", ".join(f"{k}={v}" for k, v in cfg.task.items() if k in ("name", "digits", "n_ops", "ops",
                                                                            "n_train", "n_test")),
        "seeds": exp.seeds,
        "steps": (cfg.trainer.steps if not cfg.trainer.time_budget else
                  f"each run stops after the step that spends trainer.time_budget={cfg.trainer.time_budget:g} s of "
                  f"training wall time (at most {cfg.trainer.steps}; the steps reached are the `step` column)"),
        "prompts x samples per step": f"{cfg.trainer.prompts_per_step} x {cfg.trainer.samples_per_prompt}",
        "rollout temperature": cfg.rollout.temperature,
        "eval": f"n={settings.n or max(settings.pass_at_k)} samples per problem, "
                f"{settings.num_problems or cfg.task.n_test} held-out problems, temperature {settings.temperature}, "
                f"top_p {settings.top_p}, max {settings.max_new_tokens} new tokens, eval seed {settings.seed}",
        "training time (wall, from the runs' logs)": training_time(folders),
        "wall time of this invocation": f"{wall / 60:.1f} min (runs kept from an earlier invocation cost nothing here)",
        "machine": machine(),
    }
    for i, line in enumerate(prepared):
        protocol[f"prepare ({i + 1})"] = line
    text, rows = results_markdown(exp, folders, base, protocol)
    from drox.atomic import atomic_write_text

    atomic_write_text(out / "results.md", text)
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["arm", "metric", "mean", "std", "ci95_low", "ci95_high", "n"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "table.csv", buf.getvalue())
    _plots(exp, folders, base, out)
    if out.resolve() == (HERE / name).resolve():  # a committed table (not a smoke run): the index follows it
        write_index()
    log(text)
    return out


def _plots(exp: Experiment, folders: Dict[str, List[Path]], base: Optional[Path], out: Path) -> None:
    """pass@k curves (arms' final evals, mean over seeds) with the base, and the training curves."""
    from drox.evaluation.aggregate import Group, Report, aggregate, load_run
    from drox.evaluation.plots import write_plots

    groups = [Group(values=(arm,), runs=[load_run(p) for p in paths]) for arm, paths in folders.items()]
    if base is not None:
        groups.insert(0, Group(values=("base",), runs=[load_run(base)]))
    runs = [r for g in groups for r in g.runs]
    metrics = [m for m in exp.metrics if not m.startswith(TRANSFER)]  # one evaluation per run: no curve
    rows, warnings = aggregate(groups, metrics)
    report = Report(runs=runs, group_keys=["arm"], groups=groups, metrics=metrics, at_step=None, rows=rows,
                    warnings=warnings)
    write_plots(report, out)


# ------------------------------------------------------------------------------------------------ the index

INDEX_START, INDEX_END = "<!-- claims index: start -->", "<!-- claims index: end -->"
CLAIMS_HEADING = "## Claims: the paper's number, ours, the verdict"


def claim_rows(results_md: Path) -> List[List[str]]:
    """The claims table of a ``results.md`` this driver wrote: [claim, paper, ours, verdict] per row."""
    rows, inside = [], False
    for line in results_md.read_text().splitlines():
        if line.startswith("## "):
            inside = line == CLAIMS_HEADING
            continue
        if inside and line.startswith("| ") and not line.startswith("| claim |"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if len(cells) != 4:
                raise ValueError(f"{results_md}: a claims row without 4 cells: {line}")
            rows.append(cells)
    return rows


def index_markdown(root: Path = HERE) -> str:
    """One table of every comparison's claims (paper, ours, verdict), read from the committed results.md files:
    the index experiments/README.md opens with (``python experiments/driver.py index``; a test keeps it current)."""
    lines = [INDEX_START, "| comparison | claim | paper | ours: difference (95% interval) | verdict |",
             "|---|---|---|---|---|"]
    for spec in sorted(root.glob("*/spec.py")):
        name = spec.parent.name
        results = spec.parent / "results.md"
        link = f"[{name}]({name}/results.md)" if results.is_file() else f"[{name}]({name}/README.md)"
        if not results.is_file():
            lines.append(f"| {link} | – | – | not run yet | – |")
            continue
        for claim, paper, ours, verdict_text in claim_rows(results):
            lines.append(f"| {link} | {claim} | {paper} | {ours} | {verdict_text} |")
    lines.append(INDEX_END)
    return "\n".join(lines)


def write_index(readme: Path = HERE / "README.md") -> None:
    """Replace the index between its markers in ``readme`` (temp file + rename)."""
    from drox.atomic import atomic_write_text

    text = readme.read_text()
    start, end = text.index(INDEX_START), text.index(INDEX_END) + len(INDEX_END)
    atomic_write_text(readme, text[:start] + index_markdown(readme.parent) + text[end:])


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="an experiment folder, or `index` to rewrite experiments/README.md's index")
    parser.add_argument("--smoke", action="store_true", help="1 step on model=tiny into a temp folder")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.name == "index":
        write_index()
        return
    os.chdir(HERE.parent)  # the configs name the base policy relative to the repository root
    out = args.out
    if args.smoke and out is None:
        out = Path(tempfile.mkdtemp(prefix=f"drox-smoke-{args.name}-"))
    out = out if out is not None else HERE / args.name
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "run.log"

    def log(line: str) -> None:  # the terminal and run.log, stamped
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        print(stamped, flush=True)
        with open(log_path, "a") as fh:
            fh.write(stamped + "\n")

    run(args.name, out, smoke=args.smoke, log=log)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    main()
