"""A long run keeps its memory bounded: RSS sampled once a second over a `drox train` of many steps.

    python tests/reliability/memory_run.py --steps 300 --append RELIABILITY.md      # make test-reliability

Passes when the resident memory at the end is at most 1.2x the RSS measured once 10% of the steps were done
(start-up, the first checkpoint and the allocator's warm-up are behind it by then), and metrics.jsonl holds
exactly one line per step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kill_loop import CONFIG, _cmd  # noqa: E402  (the same tiny-model run)


def _rss_mb(pid: int) -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(steps: int) -> Dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="drox-memory-") as tmp:
        run_dir = Path(tmp) / "run"
        config = [c for c in CONFIG if not c.startswith(("trainer.steps=", "trainer.save_every="))]
        proc = subprocess.Popen(_cmd("train", *config, f"trainer.steps={steps}", f"trainer.save_every={max(1, steps // 6)}",
                                     f"run_dir={run_dir}"), cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=dict(os.environ))
        samples: List[Tuple[int, float]] = []  # (metric lines written, RSS MB)
        metrics = run_dir / "metrics.jsonl"
        while proc.poll() is None:
            rss = _rss_mb(proc.pid)
            lines = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
            if rss is not None:
                samples.append((lines, rss))
            time.sleep(1.0)
        lines = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    warm = [rss for done, rss in samples if done >= steps // 10]
    at_warm, at_end = (warm[0], warm[-1]) if warm else (float("nan"), float("nan"))
    ok = proc.returncode == 0 and lines == steps and bool(warm) and at_end <= 1.2 * at_warm
    return {"steps": steps, "returncode": proc.returncode, "metric_lines": lines, "rss_at_10pct_mb": at_warm,
            "rss_at_end_mb": at_end, "rss_peak_mb": max((r for _, r in samples), default=float("nan")), "ok": ok}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--append", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.steps)
    print(result, flush=True)
    if args.append is not None:
        text = args.append.read_text() if args.append.is_file() else ""
        text += ("\n## A long run keeps memory bounded (tests/reliability/memory_run.py)\n\n"
                 f"- {result['steps']} steps of the same tiny run, checkpoint every {max(1, args.steps // 6)}: "
                 f"RSS {result['rss_at_10pct_mb']:.0f} MB at 10% of the steps, {result['rss_at_end_mb']:.0f} MB "
                 f"at the end (peak {result['rss_peak_mb']:.0f} MB); metrics.jsonl {result['metric_lines']} lines; "
                 f"**{'bounded' if result['ok'] else 'NOT bounded'}** (rule: end <= 1.2 x the 10% value)\n")
        from drox.atomic import atomic_write_text

        atomic_write_text(args.append, text)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
