"""kill -9 at random moments, then --resume: the run must end bit-identical to one that was never killed.

    python tests/reliability/kill_loop.py --trials 20 --out RELIABILITY.md     # make test-reliability

Each trial starts `drox train` on the tiny model in a fresh folder, sends SIGKILL after a random delay drawn
uniformly over the reference run's duration (so kills land in start-up, sampling, the update, checkpoint writes
and pruning alike), then resumes with `drox train --resume` (killing the resume too in a third of the trials)
until it finishes. It passes when metrics.jsonl (wall-clock keys aside), completions.jsonl and the final
model.safetensors equal the uninterrupted reference run's byte for byte. Seeded: the same --seed gives the same
kill times. The report lists every trial: when it was killed, how many steps and checkpoints existed then, and
whether anything differed.
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

CONFIG = ["model=tiny", "logger.wandb_mode=disabled", "device=cpu", "task.n_train=16", "task.n_test=4",
          "rollout.max_new_tokens=8", "trainer.steps=6", "trainer.prompts_per_step=2", "trainer.samples_per_prompt=4",
          "trainer.save_every=2", "trainer.keep_checkpoints=2", "trainer.lr=1e-3", "trainer.eval_every=0"]


def _cmd(*args: str) -> List[str]:
    return [sys.executable, "-m", "drox.cli.main", *args]


def _start(args: List[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(_cmd(*args), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ), start_new_session=True)


def _finished(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "step-000006" / "model.safetensors").is_file()


def _state(run_dir: Path) -> Dict[str, object]:
    metrics = run_dir / "metrics.jsonl"
    steps = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) if (run_dir / "checkpoints").is_dir() else []
    return {"metric_lines": steps, "checkpoints": ckpts}


def _strip(path: Path) -> List[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def compare(run: Path, ref: Path, final_step: int = 6) -> List[str]:
    """What differs from the reference run (empty = bit-identical); the GPU smoke (benchmarks/gpu_smoke.py) compares
    its resumed run so too."""
    diffs = []
    if _strip(run / "metrics.jsonl") != _strip(ref / "metrics.jsonl"):
        diffs.append("metrics.jsonl")
    if (run / "completions.jsonl").read_text() != (ref / "completions.jsonl").read_text():
        diffs.append("completions.jsonl")
    final = Path("checkpoints") / f"step-{final_step:06d}" / "model.safetensors"
    if (run / final).read_bytes() != (ref / final).read_bytes():
        diffs.append("final weights")
    return diffs


def trial(index: int, rng: random.Random, root: Path, ref: Path, duration: float) -> Dict[str, object]:
    run_dir = root / f"trial-{index:02d}"
    kills = []
    proc = _start(["train", *CONFIG, f"run_dir={run_dir}"], root)
    attempt = 0
    while True:
        delay = rng.uniform(0.0, duration)
        kill_this = attempt == 0 or (attempt == 1 and rng.random() < 1 / 3)
        try:
            proc.wait(timeout=delay if kill_this else 600)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append({"after_s": round(delay, 2), **_state(run_dir)})
        else:
            if proc.returncode != 0 and not _finished(run_dir):
                return {"trial": index, "kills": kills, "ok": False,
                        "diffs": [f"exit {proc.returncode}: {proc.stderr.read().decode()[-300:]}"]}
        if _finished(run_dir) and proc.returncode == 0:
            break
        attempt += 1
        if attempt > 3:
            return {"trial": index, "kills": kills, "ok": False, "diffs": ["did not finish after 3 resumes"]}
        # killed before config.yaml existed: nothing to resume, the run starts again
        again = ["--resume", str(run_dir)] if (run_dir / "config.yaml").is_file() else [*CONFIG, f"run_dir={run_dir}"]
        proc = _start(["train", *again], root)
    diffs = compare(run_dir, ref)
    return {"trial": index, "kills": kills, "ok": not diffs, "diffs": diffs}


def run(trials: int, seed: int, out: Optional[Path]) -> List[Dict[str, object]]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="drox-kill-loop-") as tmp:
        root = Path(tmp)
        ref = root / "reference"
        start = time.perf_counter()
        subprocess.run(_cmd("train", *CONFIG, f"run_dir={ref}"), cwd=root, check=True, capture_output=True)
        duration = time.perf_counter() - start
        results = []
        for i in range(trials):
            result = trial(i, rng, root, ref, duration)
            results.append(result)
            print(json.dumps(result), flush=True)
    if out is not None:
        write_report(results, seed, duration, out)
    return results


def write_report(results: List[Dict[str, object]], seed: int, duration: float, out: Path) -> None:
    import platform

    survived = sum(r["ok"] for r in results)
    kills = sum(len(r["kills"]) for r in results)
    lines = ["# Reliability: kill -9 and resume", "",
             "Generated by `make test-reliability` (tests/reliability/kill_loop.py); do not edit by hand.", "",
             f"- date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {platform.system()} {platform.machine()}, "
             f"{os.cpu_count()} cores; seed {seed}",
             f"- run: `drox train {' '.join(CONFIG)}` (an uninterrupted reference run took {duration:.1f} s)",
             f"- **{survived}/{len(results)} trials bit-identical** to the reference after {kills} kill -9 "
             "(metrics.jsonl without wall-clock keys, completions.jsonl, final model.safetensors)", "",
             "| trial | killed after (s) | metric lines at kill | checkpoints at kill | result |", "|---|---|---|---|---|"]
    for r in results:
        for j, k in enumerate(r["kills"] or [{}]):
            lines.append(f"| {r['trial'] if j == 0 else ''} | {k.get('after_s', '–')} | {k.get('metric_lines', '–')} | "
                         f"{', '.join(k.get('checkpoints', [])) or 'none'} | "
                         f"{('identical' if r['ok'] else 'DIFFERS: ' + ', '.join(r['diffs'])) if j == 0 else ''} |")
    from drox.atomic import atomic_write_text

    atomic_write_text(out, "\n".join(lines) + "\n")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = run(args.trials, args.seed, args.out)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
