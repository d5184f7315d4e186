"""kill -9 a table's driver at random moments, run it again: the table must come out as an uninterrupted one.

    python tests/reliability/table_kill_loop.py --trials 6 --append RELIABILITY.md     # make test-reliability

The table is the smoke-size nsr comparison (`experiments/driver.py nsr --smoke`: every arm one step on the tiny
model, the base's evaluation, the aggregation), so kills land in training, evaluation, aggregation and the plots
alike. Each trial starts the driver into a fresh folder, kills its whole process group after a delay drawn
uniformly over the reference invocation's duration, then runs the same command again (killing that one too in a
third of the trials) until it exits 0. It passes when table.csv and claims.csv equal the reference's byte for
byte, results.md does apart from its wall-time and commit lines, and every run's metrics.jsonl apart from wall-clock
keys. Seeded: the same --seed gives the same kill times.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
TABLE = "nsr"
VARIABLE = ("- training time", "- wall time", "- drox commit")
"""results.md lines that differ between any two invocations (wall-clock, and the commit's dirty flag)."""


def _command(out: Path) -> List[str]:
    return [sys.executable, str(ROOT / "experiments" / "driver.py"), TABLE, "--smoke", "--out", str(out)]


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(_command(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _results(out: Path) -> List[str]:
    return [line for line in (out / "results.md").read_text().splitlines() if not line.startswith(VARIABLE)]


def _metrics(out: Path) -> Dict[str, list]:
    found = {}
    for path in sorted((out / "runs").glob("*/seed-*/metrics.jsonl")):
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        found[str(path.relative_to(out))] = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]
    return found


def compare(out: Path, ref: Path) -> List[str]:
    """What differs from the reference table (empty: the same table)."""
    if not (out / "results.md").is_file():
        return ["no results.md"]
    diffs = [name for name in ("table.csv", "claims.csv") if (out / name).read_bytes() != (ref / name).read_bytes()]
    if _results(out) != _results(ref):
        diffs.append("results.md")
    if _metrics(out) != _metrics(ref):
        diffs.append("runs' metrics.jsonl")
    return diffs


def _state(out: Path) -> Dict[str, object]:
    runs = out / "runs"
    finished = len(list(runs.glob("*/seed-*/eval/*/summary.json"))) if runs.is_dir() else 0
    return {"runs_finished": finished, "base_evaluated": (runs / "base" / "summary.json").is_file(),
            "results_md": (out / "results.md").is_file()}


def trial(index: int, rng: random.Random, root: Path, ref: Path, duration: float) -> Dict[str, object]:
    out = root / f"trial-{index:02d}"
    kills: List[Dict[str, object]] = []
    for attempt in range(4):
        proc = _start(out)
        kill_this = attempt == 0 or (attempt == 1 and rng.random() < 1 / 3)
        delay = rng.uniform(0.0, duration)
        try:
            proc.wait(timeout=delay if kill_this else 1800)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append({"after_s": round(delay, 1), **_state(out)})
            continue
        if proc.returncode == 0:
            diffs = compare(out, ref)
            return {"trial": index, "kills": kills, "ok": not diffs, "diffs": diffs}
        return {"trial": index, "kills": kills, "ok": False,
                "diffs": [f"exit {proc.returncode}: {proc.stderr.read().decode()[-300:]}"]}
    return {"trial": index, "kills": kills, "ok": False, "diffs": ["did not finish in 4 invocations"]}


def run(trials: int, seed: int, append: Optional[Path]) -> List[Dict[str, object]]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="drox-table-kill-") as tmp:
        root = Path(tmp)
        ref = root / "reference"
        start = time.perf_counter()
        subprocess.run(_command(ref), cwd=ROOT, check=True, capture_output=True)
        duration = time.perf_counter() - start
        results = []
        for i in range(trials):
            result = trial(i, rng, root, ref, duration)
            results.append(result)
            print(json.dumps(result), flush=True)
    if append is not None:
        write_report(results, seed, duration, append)
    return results


def write_report(results: List[Dict[str, object]], seed: int, duration: float, path: Path) -> None:
    survived = sum(r["ok"] for r in results)
    kills = sum(len(r["kills"]) for r in results)
    lines = ["", "## A table killed and run again", "",
             f"- table: `python experiments/driver.py {TABLE} --smoke` (every arm one step on the tiny model, the "
             f"base's evaluation, aggregation and plots; an uninterrupted invocation took {duration:.1f} s); seed {seed}",
             f"- **{survived}/{len(results)} trials gave the uninterrupted table** after {kills} kill -9 of the driver's "
             "process group (table.csv and claims.csv byte for byte, results.md apart from its wall-time and commit "
             "lines, every run's metrics.jsonl apart from wall-clock keys)", "",
             "| trial | killed after (s) | runs finished at kill | base evaluated | results.md existed | result |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for j, k in enumerate(r["kills"] or [{}]):
            lines.append(f"| {r['trial'] if j == 0 else ''} | {k.get('after_s', '–')} | {k.get('runs_finished', '–')} | "
                         f"{k.get('base_evaluated', '–')} | {k.get('results_md', '–')} | "
                         f"{('same table' if r['ok'] else 'DIFFERS: ' + ', '.join(r['diffs'])) if j == 0 else ''} |")
    with open(path, "a") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--append", type=Path, default=None, help="append the report to this file (RELIABILITY.md)")
    args = parser.parse_args()
    results = run(args.trials, args.seed, args.append)
    bad = [r["trial"] for r in results if not r["ok"]]
    if bad:
        raise SystemExit(f"trials {bad} did not give the uninterrupted table")


if __name__ == "__main__":
    main()
