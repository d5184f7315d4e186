"""Run one paper comparison from nothing: train every arm for every seed, evaluate, aggregate, write results.md.

    python experiments/driver.py nsr                # scale=cpu, the committed protocol (make table-nsr)
    python experiments/driver.py nsr --recompute    # results.md, table.csv, claims.csv from the committed runs
    python experiments/driver.py nsr --smoke        # 1 step on model=tiny, into a temp folder (CI)
    python experiments/driver.py nsr --scale paper --dry-run   # the paper's setup: commands, data, GPU-hours
    python experiments/driver.py nsr --scale paper  # run it (a GPU node), into experiments/nsr/paper/

Each experiment is a folder ``experiments/<name>/`` with ``spec.py`` (the arms, seeds, metrics, the paper's
numbers and the verdict rule) next to its README; the protocol itself (model, task, steps, eval settings) is
``conf/experiment/<name>.yaml`` plus ``conf/experiment_scale/<name>_cpu.yaml``, so ``drox train
experiment=<name> <arm overrides> seed=S`` reproduces any single run by hand.

Steps: 1. train each arm x seed into ``runs/<arm>/seed-<S>/`` (a finished run is kept: rerunning resumes the
table), ``Experiment.jobs`` runs at a time, each in its own process with ``Experiment.threads`` torch threads (the
same numerics however many run at once); 2. evaluate the base policy once into ``runs/base/`` with the same eval
settings; 3. aggregate each metric over seeds (mean, sample std, Student-t 95% interval;
drox.evaluation.aggregate) and test each claim with paired statistics (experiments/verdicts.py); 4. write
``results.md`` (the positive control first, protocol, ours beside the paper's, the verdicts), ``table.csv``,
``claims.csv``, the plots and ``runs/provenance.json`` (commit, versions, machine, wall time). The runs' small
outputs (config, metrics, eval summaries and per-problem scores) are committed, so ``--recompute`` rewrites every
table file from them without training, byte for byte.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # spec.py files and the tests import `driver` and `verdicts` by name
    sys.path.insert(0, str(HERE))
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
    paper: List[str] = field(default_factory=list)
    """Overrides this arm adds at ``--scale paper`` only, after its own (e.g. the full-set arm of 1-shot RLVR trains
    on the paper's data set, not on the one example the paper config names)."""


@dataclass
class Claim:
    """One claim of the paper about the difference ``metric(arm_a) - metric(arm_b)`` (experiments/verdicts.py).

    ``test="superiority"``: the paper reports its sign (``direction`` +1: a above b; -1: a below b).
    ``test="equivalence"``: "matches / is close to" (``direction`` 0: |a - b| < margin) or "at least / keeps"
    (``direction`` +1: a - b > -margin; -1: a - b < margin), tested by TOST against ``margin``, which is declared
    here before the table runs."""

    text: str
    metric: str
    arm_a: str
    arm_b: str
    direction: int
    paper: str
    """The paper's numbers behind the claim, as text, with where in the paper they are."""
    test: str = "superiority"
    margin: Optional[float] = None
    """Equivalence margin in the metric's units (equivalence claims only)."""
    check: Optional[Callable[[Callable[[str, str], Any]], Optional[str]]] = None
    """``check(values) -> reason or None``: whether the design could show the claim, computed from the runs
    (``values(arm, metric)`` gives that arm's verdicts.ArmData); a reason makes the claim "not testable"."""

    def __post_init__(self) -> None:
        if self.test not in ("superiority", "equivalence"):
            raise ValueError(f"claim '{self.text}': test must be superiority or equivalence, got {self.test}")
        if self.test == "superiority" and self.direction not in (-1, 1):
            raise ValueError(f"claim '{self.text}': a superiority claim needs direction +1 or -1")
        if self.test == "equivalence" and not (self.margin and self.margin > 0):
            raise ValueError(f"claim '{self.text}': an equivalence claim needs margin > 0, declared before running")


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
    control: Optional[str] = None
    """The positive control: the arm trained with the outcome reward, which must end above the base's held-out
    pass@1 in every seed with an interval excluding 0; otherwise no claim of the table gets a verdict."""
    jobs: int = 1
    """Runs trained at a time, each in its own process (1: in this process, one after the other)."""
    threads: Optional[int] = None
    """torch threads per run (None: torch's default). Fixed per table so numerics do not depend on ``jobs``."""


# ------------------------------------------------------------------------------------------------ running


def load_spec(name: str, root: Path = HERE) -> Experiment:
    path = root / name / "spec.py"
    if not path.is_file():
        known = sorted(p.parent.name for p in HERE.glob("*/spec.py"))
        raise SystemExit(f"error: no experiment '{name}' ({path} missing); known: {', '.join(known)}")
    return _spec_module(path).SPEC


def _spec_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"drox_experiment_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def train_arms(exp: Experiment, runs: Path, common: List[str], log, after: Sequence[str] = (),
               smoke: bool = False) -> Dict[str, List[Path]]:
    """Step 1: every arm x seed (finished runs are kept), ``exp.jobs`` at a time. ``after``: overrides applied
    after the arm's (the smoke test's sizes)."""
    folders: Dict[str, List[Path]] = {}
    todo: List[Tuple[Arm, int]] = []
    for arm in exp.arms:
        for seed in exp.seeds:
            run_dir = runs / arm.name / f"seed-{seed}"
            folders.setdefault(arm.name, []).append(run_dir)
            cfg = _run_config(exp, arm, seed, common, after)
            steps = int(cfg.sft.steps if arm.kind == "sft" else cfg.trainer.steps)
            if _finished(run_dir, steps):
                log(f"[{arm.name} seed {seed}] finished earlier: kept")
            else:
                todo.append((arm, seed))
    if exp.jobs <= 1:
        for arm, seed in todo:
            train_one(exp, runs, common, after, arm, seed, log)
        return folders

    def launch(item: Tuple[Arm, int]) -> None:
        arm, seed = item
        run_dir = runs / arm.name / f"seed-{seed}"
        log_file = runs / arm.name / f"seed-{seed}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log(f"[{arm.name} seed {seed}] training in a worker process -> {run_dir} (log: {log_file})")
        start = time.perf_counter()
        command = [sys.executable, str(Path(__file__).resolve()), exp.name, "--out", str(runs.parent),
                   "--job", arm.name, str(seed)] + (["--smoke"] if smoke else [])
        with open(log_file, "w") as fh:
            code = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=_worker_env(exp),
                                  cwd=str(HERE.parent)).returncode
        if code != 0:
            raise SystemExit(f"error: [{arm.name} seed {seed}] failed (exit {code}); see {log_file}")
        log(f"[{arm.name} seed {seed}] done in {time.perf_counter() - start:.0f} s")

    with ThreadPoolExecutor(max_workers=exp.jobs) as pool:
        list(pool.map(launch, todo))
    return folders


def _worker_env(exp: Experiment) -> Dict[str, str]:
    env = dict(os.environ)
    if exp.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(exp.threads)
    return env


def _paper_overrides(arm: Arm, common: Sequence[str]) -> List[str]:
    return list(arm.paper) if "scale=paper" in common else []


def _run_config(exp: Experiment, arm: Arm, seed: int, common: List[str], after: Sequence[str]):
    return _compose([f"experiment={exp.name}", *common, *arm.overrides, *_paper_overrides(arm, common), *after,
                     *(arm.smoke if after else []),
                     f"seed={seed}", f"logger.run_name={exp.name}/{arm.name}/seed-{seed}",
                     f"logger.tags=[{exp.name},{arm.name}]"])


def train_one(exp: Experiment, runs: Path, common: List[str], after: Sequence[str], arm: Arm, seed: int,
              log) -> Path:
    """One arm x seed, in this process: an interrupted run starts over, so every arm gets the same budget."""
    from drox.trainers.loop import run_training

    run_dir = runs / arm.name / f"seed-{seed}"
    cfg = _run_config(exp, arm, seed, common, after)
    steps = int(cfg.sft.steps if arm.kind == "sft" else cfg.trainer.steps)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    log(f"[{arm.name} seed {seed}] training -> {run_dir}")
    if arm.kind == "sft":
        _sft_arm(cfg, run_dir, steps)
    else:
        run_training(cfg, run_dir, progress=sys.stderr.isatty())
    log(f"[{arm.name} seed {seed}] done in {time.perf_counter() - start:.0f} s")
    return run_dir


def _sft_arm(cfg, run_dir: Path, steps: int) -> None:
    """Supervised fine-tuning of the base (drox sft), then the experiment's evaluation of the result, written
    where a training run keeps its final eval (eval/step-N/), so the tables read both alike."""
    from drox.evaluation.runner import evaluate_to
    from drox.trainers.sft import run_sft

    run_sft(cfg, run_dir, progress=sys.stderr.isatty())
    tuned = cfg.copy()
    tuned.model.name, tuned.model.path = "hf", str(run_dir / "model")
    evaluate_to(tuned, run_dir / "eval" / f"step-{steps:06d}", title=f"sft step {steps}", step=steps,
                progress=True)  # a bar on a terminal, one plain line per batch in a log


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
    evaluate_to(cfg, out, title="base policy", progress=True)  # a bar, or plain lines in a log
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
            evaluate_to(cfg, out, title=f"{arm} {path.name}: {label}", progress=True)


LAST = re.compile(r"^(?P<metric>.+)@last(?P<n>[1-9][0-9]*)$")
"""``<training metric>@last<N>``: the mean of the metric over the run's last N logged training steps, for a
per-step share measured on few rollouts (e.g. 32 per step), where the last step alone would be mostly sampling
noise."""


def _metric(path: Path, metric: str) -> Optional[float]:
    """A run's (or the base's) value of ``metric``: ``transfer/<label>/<key>`` from its transfer evaluation,
    ``<metric>@last<N>`` the mean over the last N logged training steps (None with fewer than N), any other metric
    as drox report reads it (drox.evaluation.aggregate.metric_value)."""
    import json

    from drox.evaluation.aggregate import load_run, metric_series, metric_value

    if (last := LAST.match(metric)) is not None:
        series = metric_series(load_run(path), last["metric"])
        n = int(last["n"])
        if last["metric"].startswith("eval/") or len(series) < n:
            return None
        tail = [series[step] for step in sorted(series)[-n:]]
        return sum(tail) / n
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


def _problems(path: Path, metric: str):
    """A run's (or the base's) per-problem values of an eval metric, [P] in problem_id order, or None: the column
    ``pass@k`` (or any other per-problem column) of the per_problem.csv beside the summary the metric comes from."""
    import numpy as np

    from drox.evaluation.aggregate import EVAL_PREFIX, load_run

    if metric.startswith(TRANSFER):
        label, key = metric[len(TRANSFER):].split("/", 1)
        csv_path = path / "transfer" / label / "per_problem.csv"
    elif metric.startswith(EVAL_PREFIX):
        key = metric[len(EVAL_PREFIX):]
        run = load_run(path)
        step = run.last_eval_key()
        csv_path = run.per_problem.get(step) if step in run.evals else None
    else:
        return None
    if csv_path is None or not Path(csv_path).is_file():
        return None
    import csv

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or key not in rows[0]:
        return None
    rows.sort(key=lambda r: r["problem_id"])
    return np.array([float(r[key]) for r in rows], dtype=np.float64)


def arm_data(exp: Experiment, folders: Dict[str, List[Path]], base: Optional[Path], arm: str, metric: str):
    """verdicts.ArmData of one arm (or ``base``) for one metric: per seed, and per seed and problem."""
    from verdicts import BASE_SEED, ArmData

    data = ArmData()
    if arm == "base":
        targets = [(BASE_SEED, base)] if base is not None else []
    else:
        targets = [(seed, path) for seed, path in zip(exp.seeds, folders.get(arm, []))]
    for seed, path in targets:
        value = _metric(path, metric)
        if value is None:
            continue
        data.values[seed] = value
        problems = _problems(path, metric)
        if problems is not None:
            data.problems[seed] = problems
    return data


def claim_results(exp: Experiment, folders: Dict[str, List[Path]], base: Optional[Path]):
    """(control line or None, the control's blocking reason or None, [(claim, ClaimResult)])."""
    from verdicts import control_status, evaluate_claim

    @functools.lru_cache(maxsize=None)  # the control and several claims read the same arm and metric
    def values(arm: str, metric: str):
        return arm_data(exp, folders, base, arm, metric)

    blocked = None
    control = None
    if exp.control is not None:
        control = Claim(f"positive control: outcome GRPO ({exp.control}) raises held-out pass@1 over the base",
                        "eval/pass@1", exp.control, "base", +1, "the protocol trains at all")
        arm, base_data = values(exp.control, "eval/pass@1"), values("base", "eval/pass@1")
        result = evaluate_claim(control, arm, base_data, b_is_base=True)
        blocked = control_status(arm, base_data, result)
        control = (control, result, arm, base_data)
    results = []
    for claim in exp.claims:
        reason = blocked
        if reason is None and claim.check is not None:
            reason = claim.check(values)
        results.append((claim, evaluate_claim(claim, values(claim.arm_a, claim.metric),
                                              values(claim.arm_b, claim.metric), claim.arm_b == "base", reason,
                                              a_is_base=claim.arm_a == "base")))
    return control, blocked, results


def results_markdown(exp: Experiment, folders: Dict[str, List[Path]], base: Optional[Path],
                     protocol: Dict[str, Any]) -> Tuple[str, List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Step 4's text: the positive control, protocol, the table (mean ± 95% CI, n), the claims with the paper's
    numbers and verdicts; and the rows of table.csv and claims.csv."""
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

    control, blocked, results = claim_results(exp, folders, base)
    lines = [f"# {exp.name}: results", "", "Generated by `make table-{0}` (experiments/driver.py {0}); "
             "`python experiments/driver.py {0} --recompute` rewrites it from the committed runs; do not edit "
             "by hand.".format(exp.name), ""]
    lines += control_section(control, blocked)
    lines += ["## Protocol", ""]
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
    lines += ["", CLAIMS_HEADING, "",
              "| claim | paper | test | ours: a − b, paired 95% t-interval | hierarchical bootstrap 95% | MDE | "
              "verdict | why |", "|---|---|---|---|---|---|---|---|"]
    for claim, result in results:
        lines.append("| " + " | ".join(_claim_cells(claim, result)) + " |")
    lines += ["", VERDICT_RULE]
    if exp.crossover is not None:
        lines += ["", "## Crossover", "", crossover_line(exp.crossover, folders, base)]
    if exp.notes:
        lines += ["", "## Notes", "", exp.notes.strip()]
    claims = [result.row(claim) for claim, result in results]
    return "\n".join(lines) + "\n", rows, claims


VERDICT_RULE = (
    "Verdict rule (experiments/verdicts.py): each claim is a per-seed difference over the seeds both arms share "
    "(same prompts, same held-out problems, same eval seed). Superiority: **reproduced** when the paired "
    "t-interval and the hierarchical bootstrap (seeds, then problems) both exclude 0 on the paper's side, **not "
    "reproduced** when both exclude it on the other side, **inconclusive** otherwise. Against the base (one "
    "evaluation) the t-interval adds the problem-level variance of the difference, which the seeds cannot see. "
    "Equivalence (\"matches\", \"at least\"): TOST against the margin declared in spec.py before running. **Not "
    "testable**: the design could not show the claim (the reason is computed from the runs). MDE: the smallest true "
    "difference this design detects with 80% power at the 5% level.")


def _fmt(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:+.3f}"


def _claim_cells(claim: Claim, result) -> List[str]:
    test = claim.test if claim.test == "superiority" else (
        f"equivalence, margin {claim.margin:g}" + ("" if claim.direction == 0 else " (non-inferiority)"))
    ours = (f"{claim.metric}: {claim.arm_a} − {claim.arm_b} = {_fmt(result.estimate)} "
            f"[{_fmt(result.low)}, {_fmt(result.high)}] (n={result.n_seeds})")
    boot = "–" if math.isnan(result.boot_low) else f"[{_fmt(result.boot_low)}, {_fmt(result.boot_high)}]"
    mde = "–" if math.isnan(result.mde) else f"{result.mde:.3f}"
    return [claim.text, claim.paper, test, ours, boot, mde, result.verdict, result.reason]


def control_section(control, blocked: Optional[str]) -> List[str]:
    """The positive control's row, first in every results.md: per-seed values against the base and its verdict."""
    if control is None:
        return ["## Positive control", "", "None declared for this table (no outcome-reward arm): verdicts stand "
                "on their own intervals.", ""]
    claim, result, arm, base = control
    from verdicts import BASE_SEED

    seeds = ", ".join(f"seed {s}: {v:.3f}" for s, v in sorted(arm.values.items()))
    base_value = base.values.get(BASE_SEED)
    status = ("**resolved**: every claim below gets a verdict" if blocked is None else
              f"**not resolved**, so no claim below gets a verdict ({blocked})")
    return ["## Positive control", "",
            f"{claim.arm_a} vs base, held-out pass@1: base {base_value:.3f}; {seeds}. "
            f"Difference {_fmt(result.estimate)} [{_fmt(result.low)}, {_fmt(result.high)}] (paired t, base's "
            f"evaluation noise included), bootstrap [{_fmt(result.boot_low)}, {_fmt(result.boot_high)}]. "
            f"Control {status}.", ""] if base_value is not None else ["## Positive control", "", "no base value", ""]


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
    """The CPU model (from /proc/cpuinfo where it exists), cores and the ISA flags that decide the speed levers."""
    cpu = platform.processor() or platform.machine()
    flags: List[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in (platform.processor(), platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have]
                break
    except OSError:
        pass
    return f"{platform.system()} {cpu} ({', '.join(flags) or 'no AVX2'}), {os.cpu_count()} cores"


def provenance(exp: Experiment, wall: float, previous: Dict[str, Any], prepared: List[str]) -> Dict[str, Any]:
    """What made the table: the drox commit, library versions, the machine, threads and jobs, and the wall time
    summed over the invocations that trained it (``runs/provenance.json``; --recompute reads it back)."""
    import torch
    import transformers

    from drox.trainers.run_folder import source_commit

    commit = (source_commit() or "unknown").replace("+dirty", " (with uncommitted changes)")
    return {"commit": commit, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(), "machine": machine(),
            "threads per run": exp.threads or torch.get_num_threads(), "runs at a time": exp.jobs,
            "wall_s": round(float(previous.get("wall_s", 0.0)) + wall, 1), "prepared": prepared}


def protocol_lines(exp: Experiment, folders: Dict[str, List[Path]], common: List[str], prov: Dict[str, Any]
                   ) -> Dict[str, Any]:
    from drox.evaluation.runner import eval_settings

    cfg = _compose([f"experiment={exp.name}", *common])
    settings = eval_settings(cfg)
    protocol = {
        "model": cfg.model.path or cfg.model.name,
        "task": ", ".join(f"{k}={v}" for k, v in cfg.task.items() if k in ("name", "digits", "n_ops", "ops",
                                                                            "n_train", "n_test")),
        "seeds": exp.seeds,
        "steps": (cfg.trainer.steps if not cfg.trainer.time_budget else
                  f"each run stops after the step that spends trainer.time_budget={cfg.trainer.time_budget:g} s of "
                  f"training wall time (at most {cfg.trainer.steps}; the steps reached are the `step` column)"),
        "prompts x samples per step": f"{cfg.trainer.prompts_per_step} x {cfg.trainer.samples_per_prompt}",
        "learning rate": cfg.trainer.lr,
        "rollout temperature": cfg.rollout.temperature,
        "eval": f"n={settings.n or max(settings.pass_at_k)} samples per problem, "
                f"{settings.num_problems or cfg.task.n_test} held-out problems, temperature {settings.temperature}, "
                f"top_p {settings.top_p}, max {settings.max_new_tokens} new tokens, eval seed {settings.seed}",
        "training time (wall, from the runs' logs)": training_time(folders),
        "wall time of the table (all invocations, training and evaluation)": f"{prov.get('wall_s', 0.0) / 60:.1f} min",
        "machine": f"{prov.get('machine', 'unknown')}; {prov.get('threads per run', '?')} torch thread(s) per run, "
                   f"{prov.get('runs at a time', '?')} run(s) at a time",
        "drox commit": prov.get("commit", "unknown"),
        "versions": f"torch {prov.get('torch', '?')}, transformers {prov.get('transformers', '?')}, "
                    f"python {prov.get('python', '?')}",
    }
    for i, line in enumerate(prov.get("prepared", [])):
        protocol[f"prepare ({i + 1})"] = line
    return protocol


def write_tables(exp: Experiment, out: Path, folders: Dict[str, List[Path]], base: Optional[Path],
                 common: List[str], prov: Dict[str, Any], plots: bool = True) -> str:
    """results.md, table.csv, claims.csv (and the plots) from the run folders alone: what --recompute redoes."""
    import csv
    import io

    from drox.atomic import atomic_write_text
    from verdicts import CLAIMS_COLUMNS

    text, rows, claims = results_markdown(exp, folders, base, protocol_lines(exp, folders, common, prov))
    atomic_write_text(out / "results.md", text)
    for name, fields, data in (("table.csv", ["arm", "metric", "mean", "std", "ci95_low", "ci95_high", "n"], rows),
                               ("claims.csv", CLAIMS_COLUMNS, claims)):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(data)
        atomic_write_text(out / name, buf.getvalue())
    if plots:
        _plots(exp, folders, base, out)
    return text


def _folders(exp: Experiment, runs: Path) -> Dict[str, List[Path]]:
    return {arm.name: [runs / arm.name / f"seed-{seed}" for seed in exp.seeds] for arm in exp.arms}


SCALES = ("cpu", "paper")
"""``conf/experiment_scale/<name>_<scale>.yaml``: cpu, the committed protocol; paper, the paper's own setup (GPU)."""


def _common(smoke: bool, scale: str = "cpu") -> List[str]:
    return [f"scale={scale}", *(SMOKE if smoke else [])]


def missing_scale(name: str, scale: str) -> Optional[str]:
    """One line when ``name`` has no config at ``scale`` (conf/experiment_scale/<name>_<scale>.yaml is optional in
    the composition, so without this check the CPU protocol would run under the label of the paper's), else None."""
    if scale == "cpu" or not (HERE / name / "spec.py").is_file():
        return None
    if (HERE.parent / "conf" / "experiment_scale" / f"{name}_{scale}.yaml").is_file():
        return None
    return (f"{name} has no {scale}-scale config (conf/experiment_scale/{name}_{scale}.yaml; "
            f"experiments/{name}/README.md says why): run it at --scale cpu")


def table_folder(name: str, scale: str = "cpu") -> Path:
    """Where a table's files go: ``experiments/<name>/`` at CPU scale, ``experiments/<name>/paper/`` at paper scale
    (beside the CPU table, never over it)."""
    return HERE / name if scale == "cpu" else HERE / name / scale


def at_scale(exp: Experiment, scale: str) -> Experiment:
    """The spec as it runs at ``scale``: at paper scale one run at a time with torch's own thread count (the
    spec's ``jobs`` and ``threads`` are sized for 2 CPU cores)."""
    if scale != "cpu":
        exp.jobs, exp.threads = 1, None
    return exp


def run(name: str, out: Optional[Path] = None, smoke: bool = False, log=print, scale: str = "cpu",
        seeds: Optional[List[int]] = None) -> Path:
    exp = at_scale(load_spec(name), scale)
    if seeds is not None:
        exp.seeds = list(seeds)
    if smoke:
        exp.seeds, exp.jobs = exp.seeds[:1], 1
    out = Path(out) if out is not None else table_folder(name, scale)
    runs = out / "runs"
    common = _common(smoke, scale)
    if exp.threads and exp.jobs <= 1:
        import torch

        torch.set_num_threads(exp.threads)
    start = time.perf_counter()
    prepared = exp.prepare(exp, runs, common, log) if exp.prepare is not None else []
    after = [*SMOKE, *exp.smoke] if smoke else []
    folders = train_arms(exp, runs, common, log, after=after, smoke=smoke)
    base = evaluate_base(exp, runs, common, log)
    evaluate_transfer(exp, folders, base, common, after, log)
    prov_path = runs / "provenance.json"
    previous = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    prov = provenance(exp, time.perf_counter() - start, previous, prepared)
    from drox.atomic import atomic_write_text

    atomic_write_text(prov_path, json.dumps(prov, indent=1, sort_keys=True) + "\n")
    text = write_tables(exp, out, folders, base, common, prov)
    if out.resolve() == (HERE / name).resolve():  # a committed table (not a smoke run): the index follows it
        write_index()
    log(text)
    return out


def recompute(name: str, out: Optional[Path] = None, plots: bool = True, scale: str = "cpu") -> Path:
    """results.md, table.csv, claims.csv and the plots from the committed run outputs, without training."""
    exp = at_scale(load_spec(name), scale)
    out = Path(out) if out is not None else table_folder(name, scale)
    runs = out / "runs"
    prov_path = runs / "provenance.json"
    if not prov_path.is_file():
        raise SystemExit(f"error: {prov_path} missing: {name} has no committed runs to recompute from; "
                         f"run `make table-{name}` first")
    prov = json.loads(prov_path.read_text())
    base = runs / "base" if exp.base else None
    write_tables(exp, out, _folders(exp, runs), base, _common(False, scale), prov, plots=plots)
    if out.resolve() == (HERE / name).resolve():
        write_index()
    return out


def run_job(name: str, out: Path, arm_name: str, seed: int, smoke: bool) -> None:
    """--job ARM SEED: one run of a table, in a worker process (train_arms with jobs > 1)."""
    exp = load_spec(name)
    runs = out / "runs"
    common = _common(smoke)
    quiet = lambda line: print(line, flush=True)  # noqa: E731 - the worker's log file
    if exp.prepare is not None:
        exp.prepare(exp, runs, common, quiet)  # idempotent: reads what the parent prepared
    arm = next((a for a in exp.arms if a.name == arm_name), None)
    if arm is None:
        raise SystemExit(f"error: {name} has no arm '{arm_name}'")
    after = [*SMOKE, *exp.smoke] if smoke else []
    train_one(exp, runs, common, after, arm, seed, quiet)


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
    """The claims table of a ``results.md`` this driver wrote before claims.csv existed (the old protocol):
    [claim, paper, ours, verdict] per row."""
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


OLD_PROTOCOL = "old protocol (2 seeds, 12 problems, no positive control): not rerun yet"


def index_markdown(root: Path = HERE) -> str:
    """One table of every comparison's claims (paper, ours, verdict) and a count of each verdict, read from the
    committed claims.csv files (and, for a table not yet rerun under the paired protocol, its old results.md):
    the index experiments/README.md opens with (``python experiments/driver.py index``; a test keeps it current)."""
    import csv

    from verdicts import VERDICTS

    lines = ["| comparison | claim | paper | test | ours: a − b (paired 95% interval), n seeds | verdict | why |",
             "|---|---|---|---|---|---|---|"]
    counts = {v: 0 for v in VERDICTS}
    old = 0
    for spec_path in sorted(root.glob("*/spec.py")):
        name = spec_path.parent.name
        results = spec_path.parent / "results.md"
        claims_csv = spec_path.parent / "claims.csv"
        link = f"[{name}]({name}/results.md)" if results.is_file() else f"[{name}]({name}/README.md)"
        if claims_csv.is_file():
            spec = getattr(_spec_module(spec_path), "SPEC", None)
            papers = {c.text: c.paper for c in spec.claims} if spec is not None else {}
            with open(claims_csv, newline="") as fh:
                for row in csv.DictReader(fh):
                    counts[row["verdict"]] += 1
                    test = row["test"] if row["test"] == "superiority" else f"{row['test']}"
                    ours = (f"{row['metric']}: {row['arm_a']} − {row['arm_b']} = {_cell(row['estimate'])} "
                            f"[{_cell(row['ci95_low'])}, {_cell(row['ci95_high'])}], n={row['n_seeds']}")
                    lines.append(f"| {link} | {row['claim']} | {papers.get(row['claim'], '–')} | {test} | {ours} | "
                                 f"{row['verdict']} | {row['reason']} |")
        elif results.is_file():
            for claim, paper, ours, verdict_text in claim_rows(results):
                old += 1
                lines.append(f"| {link} | {claim} | {paper} | superiority (Welch) | {ours} | {OLD_PROTOCOL}: "
                             f"{verdict_text} | – |")
        else:
            lines.append(f"| {link} | – | – | – | not run yet | – | – |")
    summary = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    head = [INDEX_START, f"Under the paired protocol: {summary}; {old} claims still from the old protocol.", ""]
    return "\n".join(head + lines + [INDEX_END])


def _cell(value: str) -> str:
    return "–" if value == "" else f"{float(value):+.3f}"


def write_index(readme: Path = HERE / "README.md") -> None:
    """Replace the index between its markers in ``readme`` (temp file + rename)."""
    from drox.atomic import atomic_write_text

    text = readme.read_text()
    start, end = text.index(INDEX_START), text.index(INDEX_END) + len(INDEX_END)
    atomic_write_text(readme, text[:start] + index_markdown(readme.parent) + text[end:])


def dry_run(name: str, scale: str = "paper", seeds: Optional[List[int]] = None, out: Optional[Path] = None,
            echo=print) -> float:
    """``--dry-run``: every run's full command line, the resolved model and data, and the estimated GPU-hours
    (experiments/paper_scale.py says how); nothing is loaded, trained or written. Returns the total GPU-hours
    (0 where no run's model states its size)."""
    import shlex

    from paper_scale import assumptions, count_lines, estimate

    exp = at_scale(load_spec(name), scale)
    seeds = exp.seeds if seeds is None else seeds
    folder = Path(out) if out is not None else table_folder(name, scale)
    if folder.resolve().is_relative_to(HERE.parent.resolve()):  # the commands run from the repository root
        folder = folder.resolve().relative_to(HERE.parent.resolve())
    runs = folder / "runs"
    common = _common(False, scale)
    cfg = _compose([f"experiment={name}", *common])
    task = cfg.task
    echo(f"{name} at scale={scale} (conf/experiment/{name}.yaml + conf/experiment_scale/{name}_{scale}.yaml): "
         "a dry run, nothing is loaded or trained")
    echo(f"model: {cfg.model.path or cfg.model.name}")
    data = {"train": task.get("path"), "test": task.get("test_path")}
    for split, path in data.items():
        echo(f"{split} data: {_data_line(task, path)}")
    test_problems = count_lines(data["test"]) if task.name == "jsonl" else None
    total, unknown = 0.0, []
    lines = []
    for arm in exp.arms:
        arm_cfg = _run_config(exp, arm, seeds[0], common, [])
        est = estimate(arm_cfg, test_problems)
        if est is None:
            unknown.append(arm.name)
        else:
            total += est.gpu_hours * len(seeds)
        t = arm_cfg.trainer
        size = ("model size not in its name: no estimate" if est is None else
                f"{est.params / 1e9:.2g}B parameters, {est.steps} steps x {est.step_seconds:.0f} s + evaluation "
                f"{est.eval_seconds / 60:.0f} min ({est.eval_problems} problems"
                f"{'' if est.eval_problems_counted else ' assumed'} x n={arm_cfg.eval.n}) = "
                f"{est.gpu_hours:.1f} GPU-hours per run")
        kind = "drox sft" if arm.kind == "sft" else "drox train"
        lines.append(f"[{arm.name}] {t.prompts_per_step} prompts x {t.samples_per_prompt} samples, "
                     f"{arm_cfg.rollout.max_new_tokens} new tokens at most; {size}")
        if arm_cfg.task.get("path") != task.get("path") and arm_cfg.task.name == task.name:
            lines.append(f"  its train data: {_data_line(arm_cfg.task, arm_cfg.task.get('path'))}")
        for seed in seeds:
            args = [f"experiment={name}", *common, *arm.overrides, *_paper_overrides(arm, common), f"seed={seed}",
                    f"run_dir={runs / arm.name / f'seed-{seed}'}"]
            lines.append(f"  {kind} {' '.join(shlex.quote(a) for a in args)}")
    if exp.base:
        lines.append("[base] the base policy's evaluation, once:")
        lines.append(f"  drox eval experiment={name} scale={scale} --out {runs / 'base'}")
    if exp.prepare is not None:
        lines.append(f"[prepare] before training the driver runs spec.py's {exp.prepare.__name__} (its docstring says "
                     "what it does at each scale)")
    for line in lines:
        echo(line)
    n_runs = len(exp.arms) * len(seeds)
    echo(f"runs: {len(exp.arms)} arms x {len(seeds)} seeds = {n_runs}; estimated {total:.0f} GPU-hours on one H100"
         + (f" (no estimate for {', '.join(unknown)})" if unknown else ""))
    echo(f"estimate: {assumptions()}")
    echo(f"run it: python experiments/driver.py {name} --scale {scale}"
         + (f" --seeds {','.join(map(str, seeds))}" if seeds != exp.seeds else "")
         + f" (writes {folder}/; not run at paper scale yet)")
    return total


def _data_line(task, path) -> str:
    """A data file of the dry run: the path, whether it is there, and the `drox data` command that writes it."""
    if task.name not in ("jsonl", "parquet"):
        return f"task={task.name}" + (f" hub_name={task.hub_name}" if task.get("hub_name") else "")
    if path and Path(path).is_file():
        return f"{path} (present)"
    parts = Path(str(path)).parts if path else ()
    fix = f" (write it with: drox data {parts[1]} --out data)" if len(parts) == 3 and parts[0] == "data" else ""
    return f"{path} (missing){fix}"


def _seed_list(text: str) -> List[int]:
    """--seeds 0,1,2 -> [0, 1, 2]; anything else is one line and exit code 2."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        print(f"error: --seeds '{text}': give comma-separated integers, e.g. --seeds 0,1,2", file=sys.stderr)
        raise SystemExit(2)
    return seeds


def main(argv: Optional[List[str]] = None) -> None:
    """The command line; a run stopped by SIGTERM/SIGUSR1 (drox.trainers.preemption) ends it with one line and
    exit code 143 (the table keeps its finished runs and starts the stopped one over when it is run again)."""
    from drox.trainers.preemption import Preempted

    try:
        _main(argv)
    except Preempted as e:
        print(f"{e} (a table starts a stopped run over: run the same command again)", file=sys.stderr)
        raise SystemExit(e.exit_code)


def _main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="an experiment folder, or `index` to rewrite experiments/README.md's index")
    parser.add_argument("--smoke", action="store_true", help="1 step on model=tiny into a temp folder")
    parser.add_argument("--recompute", action="store_true",
                        help="rewrite results.md, table.csv, claims.csv and the plots from the committed runs")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--scale", choices=SCALES, default="cpu",
                        help="cpu: the committed protocol; paper: the paper's model, data and hyper-parameters "
                             "(a GPU node; written under experiments/<name>/paper/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every run's command line, the model, the data and the estimated GPU-hours")
    parser.add_argument("--seeds", type=_seed_list, default=None, help="comma-separated seeds instead of the spec's")
    parser.add_argument("--job", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)  # a worker process
    args = parser.parse_args(argv)
    if args.name == "index":
        write_index()
        return
    os.chdir(HERE.parent)  # the configs name the base policy relative to the repository root
    missing = missing_scale(args.name, args.scale)
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        raise SystemExit(2)
    if args.dry_run:
        load_spec(args.name)  # an unknown name: one line
        dry_run(args.name, args.scale, args.seeds, args.out)
        return
    if args.recompute:
        recompute(args.name, args.out, scale=args.scale)
        return
    if args.job:
        run_job(args.name, args.out if args.out is not None else HERE / args.name, args.job[0], int(args.job[1]),
                args.smoke)
        return
    out = args.out
    if args.smoke and out is None:
        out = Path(tempfile.mkdtemp(prefix=f"drox-smoke-{args.name}-"))
    out = out if out is not None else table_folder(args.name, args.scale)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "run.log"
    lock = threading.Lock()  # worker threads (jobs > 1) log too: one whole line at a time

    def log(line: str) -> None:  # the terminal and run.log, stamped
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        with lock:
            print(stamped, flush=True)
            with open(log_path, "a") as fh:
                fh.write(stamped + "\n")

    from drox.errors import ConfigError
    from drox.trainers.run_folder import lock_run_dir

    try:  # one driver per table folder (its workers lock their own run folders)
        held = lock_run_dir(out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        run(args.name, out, smoke=args.smoke, log=log, scale=args.scale, seeds=args.seeds)
    finally:
        os.close(held)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    main()
