"""Run the benchmark suites and write benchmarks/RESULTS.md from their JSON results.

    python benchmarks/results.py --suite step      # make bench-step: drox vs TRL steps, the levers, R3's share
    python benchmarks/results.py --suite rollout   # make bench: rollout engine and eval sampling vs HF generate
    python benchmarks/results.py --write           # only rewrite RESULTS.md from benchmarks/results/*.json

Every configuration runs in its own process (no allocator or thread state carried between them) and writes
``benchmarks/results/<name>.json``; RESULTS.md is then rebuilt from all JSON files present, so the two suites
can be rerun separately. Each ratio compares two sides measured in the same process, one after the other.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"

# name -> arguments of bench_step.py (drox vs TRL unless --side drox)
STEP_SUITE = {
    "step-smollm2-1x8": ["--model", "smollm2-135m", "--prompts", "1", "--samples", "8", "--steps", "4"],
    "step-smollm2-1x16": ["--model", "smollm2-135m", "--prompts", "1", "--samples", "16", "--steps", "3"],
    "step-smollm2-4x8": ["--model", "smollm2-135m", "--prompts", "4", "--samples", "8", "--steps", "3"],
    "step-tiny-1x8": ["--model", "tiny", "--prompts", "1", "--samples", "8", "--steps", "4"],
    # the levers one at a time, drox only, on the headline configuration: all off, then each alone
    "lever-none": ["--model", "smollm2-135m", "--side", "drox", "--steps", "4", "--set", "trainer.share_prompts=false",
                   "--set", "rollout.static_decode=false", "--set", "trainer.fused_optimizer=false",
                   "--set", "model.lm_head_mm=false", "--set", "rollout.decode_mm=false"],
    "lever-share-prompts-only": ["--model", "smollm2-135m", "--side", "drox", "--steps", "4",
                                 "--set", "rollout.static_decode=false", "--set", "trainer.fused_optimizer=false"],
    "lever-static-decode-only": ["--model", "smollm2-135m", "--side", "drox", "--steps", "4",
                                 "--set", "trainer.share_prompts=false", "--set", "trainer.fused_optimizer=false",
                                 "--set", "model.lm_head_mm=false", "--set", "rollout.decode_mm=false"],
    "lever-fused-optimizer-only": ["--model", "smollm2-135m", "--side", "drox", "--steps", "4",
                                   "--set", "trainer.share_prompts=false", "--set", "rollout.static_decode=false"],
    # the head orientation acts only inside the static decode and the shared-prompt update: shown as all-but-it
    "lever-all-but-head-mm": ["--model", "smollm2-135m", "--side", "drox", "--steps", "4",
                              "--set", "model.lm_head_mm=false"],
    "lever-all-but-decode-mm": ["--model", "smollm2-135m", "--side", "drox", "--steps", "4",
                                "--set", "rollout.decode_mm=false"],
    "r3-smollm2-1x8": ["--model", "smollm2-135m", "--side", "drox", "--steps", "4", "--set", "+reward=variance"],
}
ROLLOUT_SUITE = {
    "rollout-smollm2-2x8": ["--model", "smollm2-135m", "--prompts", "2", "--samples", "8", "--repeats", "2"],
    "eval-smollm2-n64": ["--eval", "--model", "smollm2-135m", "--prompts", "1", "--samples", "64", "--repeats", "1"],
    "eval-tiny-n64": ["--eval", "--model", "tiny", "--prompts", "2", "--samples", "64", "--repeats", "2"],
    "kernels": [],  # benchmarks/bench_kernels.py: weight streaming, sampling, AdamW
}
TARGETS = {"step": 2.5, "eval": 3.0, "r3_share": 0.5}


def run_suite(suite: dict, script: str, only: list) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    for name, args in suite.items():
        if only and name not in only:
            continue
        out = RESULTS_DIR / f"{name}.json"
        run_script = "bench_kernels.py" if name == "kernels" else script
        cmd = [sys.executable, str(HERE / run_script), *args, "--json", str(out)]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _load() -> dict:
    """The JSON results by name, in the suites' order (then any others by name)."""
    order = {name: i for i, name in enumerate([*STEP_SUITE, *ROLLOUT_SUITE])}
    paths = sorted(RESULTS_DIR.glob("*.json"), key=lambda p: (order.get(p.stem, len(order)), p.stem))
    return {p.stem: json.loads(p.read_text()) for p in paths}


def _fmt(x, digits=2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _drox_phases(r: dict) -> str:
    d = r["drox"]
    return f"{d['median_s']:.2f} ({d['median_generate_s']:.2f} / {d['median_score_s']:.2f} / {d['median_update_s']:.2f})"


def write_results() -> str:
    res = _load()
    lines = ["# drox benchmarks", "",
             f"Written by `benchmarks/results.py` on {datetime.date.today().isoformat()} from `benchmarks/results/*.json`; "
             "`make bench-step` reruns the training-step suite, `make bench` the rollout suite, each rewriting this "
             "file. Ratios compare two sides measured one after the other in the same process. CPU only: nothing "
             "here has run on a GPU.", "", f"Machine: {machine()}."]
    versions = next((r for r in res.values() if r.get("torch")), {})
    trl = next((r["trl_version"] for r in res.values() if r.get("trl_version")), None)
    lines.append(f"Versions: torch {versions.get('torch', '?')}, transformers {versions.get('transformers', '?')}"
                 + (f", TRL {trl}" if trl else "") + ".")
    steps = {k: v for k, v in res.items() if k.startswith("step-") and "trl" in v}
    if steps:
        lines += ["", "## A full training step: drox vs TRL's GRPOTrainer (fp32, same prompts, G, lengths, loss, optimizer)",
                  "", "`benchmarks/bench_step.py` (its docstring lists what is the same and what is not). Medians over "
                  "the timed steps after one warm-up step; drox phases are generate / score / update, TRL's are "
                  f"generate / collect (generate + decode + reward + advantages) / update. Target: TRL/drox >= "
                  f"{TARGETS['step']}.", "",
                  "| model | Q x G | max new tokens | steps | drox s/step (gen / score / update) | TRL s/step (gen / collect / update) | TRL / drox | target met |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in steps.items():
            t = r["trl"]
            ratio = r["ratio_trl_over_drox"]
            lines.append(
                f"| {r['model']} | {r['Q']} x {r['G']} | {r['max_new_tokens']} | {r['steps_timed']} | {_drox_phases(r)} | "
                f"{t['median_s']:.2f} ({t['median_generate_s']:.2f} / {t['median_collect_s']:.2f} / "
                f"{t['median_update_s']:.2f}) | **{ratio:.2f}x** | {'yes' if ratio >= TARGETS['step'] else 'no'} |")
    levers = {k: v for k, v in res.items() if k.startswith("lever-")}
    head = res.get("step-smollm2-1x8")
    if levers and head:
        rows = [("all levers (the defaults)", head)] + [
            ({"lever-none": "none (drox before issue 11)", "lever-share-prompts-only": "shared-prompt update only",
              "lever-static-decode-only": "static-cache decode + inverse-CDF sampling only (F.linear everywhere)",
              "lever-fused-optimizer-only": "fused AdamW only",
              "lever-all-but-head-mm": "all but the LM head as (W h^T)^T (model.lm_head_mm=false)",
              "lever-all-but-decode-mm": "all but the decode step's projections as (W h^T)^T (rollout.decode_mm=false)",
              }.get(k, k), v)
             for k, v in levers.items()]
        lines += ["", "## The levers one by one (drox only, SmolLM2-135M, 1 x 8, <= 64 tokens)", "",
                  "Separate processes, so sampled lengths differ a little between rows; compare phases: the shared "
                  "prompt and the fused optimizer change only update, the static decode only generate.", "",
                  "| configuration | s/step | generate | update | tokens/step (median) |", "|---|---|---|---|---|"]
        for label, r in rows:
            d = r["drox"]
            toks = sorted(d["per_step"]["tokens"])[len(d["per_step"]["tokens"]) // 2]
            lines.append(f"| {label} | {d['median_s']:.2f} | {d['median_generate_s']:.2f} | {d['median_update_s']:.2f} | {toks} |")
    r3 = res.get("r3-smollm2-1x8")
    if r3:
        d = r3["drox"]
        share = d["median_score_s"] / (d["median_s"] - d["median_score_s"])
        lines += ["", "## DRO's R3 scoring", "",
                  f"`+reward=variance` on the headline configuration: score (the verifier + R3's one batched teacher-forced "
                  f"pass over the Q*G spliced rows) {d['median_score_s']:.2f} s of a {d['median_s']:.2f} s step, i.e. it adds "
                  f"**{share:.0%}** to the step without it (target <= {TARGETS['r3_share']:.0%}: "
                  f"{'met' if share <= TARGETS['r3_share'] else 'not met'})."]
    roll = {name: v for name, v in res.items() if name.startswith(("rollout-", "eval-"))}
    if roll:
        lines += ["", "## Sampling", "",
                  "`benchmarks/bench_rollout.py`. rollout: a training rollout batch (G samples per prompt with behaviour "
                  "log-probs) vs HF generate + a log-prob forward pass, seconds per batch. eval: n samples per prompt "
                  "(no log-probs needed) vs HF generate at batch 8, completion tokens per second "
                  f"(target >= {TARGETS['eval']}x).", "",
                  "| benchmark | model | prompts x samples | max new tokens | drox | HF | drox advantage | overrides |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in roll.items():
            d, b = r["drox"], r["baseline"]
            if r.get("mode") == "eval":
                cells = f"{d['tokens_per_s']:.0f} tok/s | {b['tokens_per_s']:.0f} tok/s"
            else:
                cells = f"{d['median_s']:.2f} s | {b['median_s']:.2f} s"
            lines.append(f"| {name} | {r['model']} | {r['Q']} x {r['G']} | {r['max_new_tokens']} | {cells} | "
                         f"**{r['speedup']:.2f}x** | {' '.join(r.get('drox_overrides', [])) or '–'} |")
    k = res.get("kernels")
    if k:
        lines += ["", "## The kernels under a step (`benchmarks/bench_kernels.py`)", "",
                  "| kernel | fp32 / foreach / multinomial | bf16 / fused / inverse CDF |", "|---|---|---|",
                  f"| LM head 49152 x 576 at 8 rows (one decode step reads it whole) | {k['head']['fp32_ms']:.1f} ms "
                  f"({k['head']['fp32_GBps']:.1f} GB/s of weights) | {k['head']['bf16_ms']:.1f} ms |",
                  *([f"| the same LM head as (W h^T)^T (model.lm_head_mm) | {k['head']['mm_ms']:.1f} ms "
                     f"({k['head']['mm_GBps']:.1f} GB/s) | – |",
                     f"| the memory bus: a sum over 512 MB | {k['bus']['sum_GBps']:.1f} GB/s | – |"]
                    if "mm_ms" in k["head"] else []),
                  f"| projection 1536 x 576 at 8 rows | {k['proj']['fp32_ms']:.3f} ms | {k['proj']['bf16_ms']:.3f} ms |",
                  *([f"| SmolLM2's 30 x 7 layer projections at 8 rows ({k['layers']['MB']:.0f} MB, one decode step) | "
                     f"{k['layers']['linear_ms']:.1f} ms | – |",
                     f"| the same as (W h^T)^T (rollout.decode_mm) | {k['layers']['mm_ms']:.1f} ms | – |"]
                    if "layers" in k else []),
                  f"| one token per row from 8 x 49152 probabilities | {k['sample']['multinomial_ms']:.2f} ms | "
                  f"{k['sample']['inverse_cdf_ms']:.2f} ms |",
                  f"| AdamW step over {k['adamw']['params'] / 1e6:.1f}M parameters | {k['adamw']['foreach_s']:.3f} s | "
                  f"{k['adamw']['fused_s']:.3f} s |"]
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    text = "\n".join(lines) + "\n"
    tmp = RESULTS_MD.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(RESULTS_MD)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=["step", "rollout"], help="run this suite first")
    parser.add_argument("--only", action="append", default=[], help="run only these configurations (repeatable)")
    parser.add_argument("--write", action="store_true", help="only rewrite RESULTS.md")
    args = parser.parse_args(argv)
    if args.suite == "step":
        run_suite(STEP_SUITE, "bench_step.py", args.only)
    elif args.suite == "rollout":
        run_suite(ROLLOUT_SUITE, "bench_rollout.py", args.only)
    elif not args.write:
        parser.error("give --suite step|rollout or --write")
    print(write_results())
    return 0


if __name__ == "__main__":
    sys.exit(main())
