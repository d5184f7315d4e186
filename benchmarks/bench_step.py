"""One full RL training step: drox's trainer vs. TRL's GRPOTrainer, same model and settings.

A step is everything between two optimizer updates: sample G completions for Q prompts, score
them with the task's verifier, group-normalised advantages, one forward+backward pass with the
clipped surrogate, gradient clipping and one AdamW step.

* drox: ``run_training`` with ``trainer.prompts_per_step=Q trainer.samples_per_prompt=G
  rollout.max_new_tokens=T`` (defaults otherwise: GRPO advantages, token-mean loss, mu=1, one
  mini-batch, no KL, lr 1e-5 constant, fp32); the step time is ``time/step`` of metrics.jsonl,
  split into ``time/generate`` (rollout engine), ``time/score`` (verifier) and ``time/update``.
* TRL: ``GRPOTrainer`` on the same model folder, per_device_train_batch_size=Q*G,
  num_generations=G, max_completion_length=T, temperature 1.0 (top_k 0, top_p 1), beta 0.0,
  lr 1e-5 constant, loss_type "dapo" (token-mean over the step's tokens; with one process and no
  gradient accumulation "bnpo" is the same number), scale_rewards "group" (= drox's grpo
  estimator), epsilon 0.2 both sides, num_iterations 1, max_grad_norm 1.0, use_cpu, fp32. The
  step time is wall time from ``on_step_begin`` to ``on_step_end`` of a TrainerCallback (so
  generation, scoring, the loss pass, backward, clipping and the optimizer step), split into
  ``generate`` (TRL's own ``transformers.generate`` profiling block), ``collect`` (all of
  ``_generate_and_score_completions``: tokenise, generate, decode, reward, advantages) and
  ``update`` (step - collect).

The same, on both sides: model weights (the converted SmolLM2-135M-Instruct folder), the
prompts of every step and their order (the first Q*(steps+1) draws of drox's prompt sampler,
given to TRL with shuffle_dataset=False), the chat template (user message, no system prompt,
generation prompt added), the reward (``task.verifier``: 1 if the boxed answer is right, else
0), the seed value, the loss/advantage settings above, fp32 weights, no gradient checkpointing.
The first step of each side is a warm-up and is not counted; ``--steps`` timed steps follow.

Not the same (stated so that the ratio is read for what it is):

* generation: drox prefills each prompt once, repeats its KV cache G times, drops finished rows
  and keeps the sampling log-probs; TRL calls HF ``generate`` on G copies of the prompt and
  every row decodes until the longest one stops.
* the loss pass: TRL 1.16 scores tokens through its fused, chunked LM head with entropy always
  computed; off Triton devices (so on CPU) it projects every position, prompt included, through
  the 49k-vocabulary head. drox runs the head only on the positions that predict response
  tokens (``logits_to_keep``) and computes no entropy when ``entropy_coef`` is 0.
* the sampled completions differ (different RNG streams and code paths), so completion lengths
  and rewards differ step by step; the tokens each side generated per step are printed next to
  the times. With 1 prompt a step this is the main source of step-to-step variation.
* the optimizer: TRL uses transformers' default ``adamw_torch_fused``; drox ``torch.optim.AdamW``
  with torch's default implementation for the device (same hyper-parameters).
* TRL's defaults ``bf16=True`` and ``gradient_checkpointing=True`` are turned off to match drox
  (fp32, no checkpointing); ``lr_scheduler_type`` is set to "constant" like drox's.
* overheads inside the timed step: TRL's metric gathering and bookkeeping; drox's metrics
  (logging to metrics.jsonl is outside ``time/step``; drox's final checkpoint is not timed).

Reading the numbers: with one prompt a step, step times move with the completions drawn, so
compare medians. On the 2-core CPU machine both sides' second step (the first timed one) is
slower than the later ones, reproducibly (TRL's by ~13 s, mostly in its update; drox's by ~2 s);
the median absorbs one such step but ``--steps`` below 3 does not.

CPU only (TRL runs with use_cpu=True). Needs TRL, which drox does not depend on:

    pip install --no-deps trl==1.16.0
    python benchmarks/bench_step.py [--steps 4] [--json OUT]

drox's side alone runs on any device and needs no TRL (the GPU smoke runs it so, benchmarks/gpu_smoke.py):

    python benchmarks/bench_step.py --model tiny --side drox --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

TRL_HINT = "pip install --no-deps trl==1.16.0 to run this benchmark"


def compose_cfg(args, total_steps: int):
    from drox.cli.main import compose

    return compose([
        f"model={args.model}", "task=arithmetic", "logger.wandb_mode=disabled", f"device={args.device}",
        f"seed={args.seed}", f"trainer.steps={total_steps}", f"trainer.prompts_per_step={args.prompts}",
        f"trainer.samples_per_prompt={args.samples}", f"rollout.max_new_tokens={args.max_new_tokens}",
        f"rollout.temperature={args.temperature}", "trainer.eval_every=0", "trainer.save_every=0",
        "trainer.checkpoint=none", *args.set,
    ])


def step_prompt_rows(cfg, total_steps: int):
    """The dataset rows drox's sampler draws, in order, for ``total_steps`` steps (no filters)."""
    from drox.tasks import build_task
    from drox.trainers.sampler import PromptSampler

    task = build_task(cfg.task, split="train")
    sampler = PromptSampler(len(task.dataset), cfg.seed)
    idx = [i for _ in range(total_steps) for i in sampler.next(cfg.trainer.prompts_per_step)]
    return task, task.dataset.select(idx).to_list()


def run_drox(cfg, workdir: Path) -> dict:
    from drox.trainers.loop import run_training

    run_dir = workdir / "drox-run"
    run_training(cfg, run_dir, progress=False)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [m for m in lines if "time/step" in m]
    return {
        "step_s": [m["time/step"] for m in steps],
        "generate_s": [m["time/generate"] for m in steps],
        "score_s": [m["time/score"] for m in steps],
        "update_s": [m["time/update"] for m in steps],
        "tokens": [int(m["tokens"]) for m in steps],
        "max_length": [int(m["response_length/max"]) for m in steps],
        "reward": [m["reward/mean"] for m in steps],
    }


def run_trl(cfg, args, task, rows, model_dir: Path, workdir: Path, total_steps: int) -> dict:
    import datasets
    import trl.trainer.grpo_trainer as grpo_module
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    keep = ("problem_id", "answer")
    dataset = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": r["prompt"]}], **{k: r[k] for k in keep}} for r in rows])

    def drox_verifier(prompts, completions, **kwargs):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        row_list = [{k: kwargs[k][i] for k in keep} for i in range(len(texts))]
        return [float(ok) for ok in task.verifier(texts, row_list).correct]

    phases: dict = {}
    per_step: list = []
    step_logs: list = []
    original_profiling = grpo_module.profiling_context

    @contextlib.contextmanager
    def recording_profiling(trainer, name):
        t0 = time.perf_counter()
        with original_profiling(trainer, name):
            yield
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            phases.clear()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            per_step.append({"step_s": time.perf_counter() - self.t0, **phases})

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:  # one line per step (logging_steps=1)
                step_logs.append(dict(logs))

    G = args.samples
    config = GRPOConfig(
        output_dir=str(workdir / "trl-run"), per_device_train_batch_size=args.prompts * G, num_generations=G,
        max_completion_length=args.max_new_tokens, temperature=args.temperature, top_p=1.0, top_k=0,
        learning_rate=1e-5, lr_scheduler_type="constant", beta=0.0, loss_type="dapo", scale_rewards="group",
        epsilon=0.2, num_iterations=1, max_grad_norm=1.0, weight_decay=0.0, report_to="none", use_cpu=True,
        bf16=False, gradient_checkpointing=False, logging_steps=1, max_steps=total_steps, seed=args.seed,
        shuffle_dataset=False, save_strategy="no", disable_tqdm=True,
        model_init_kwargs={"dtype": "float32"},
    )
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[drox_verifier], args=config, train_dataset=dataset,
                          callbacks=[StepTimer()])
    trainer.remove_callback(PrinterCallback)
    collect = trainer._generate_and_score_completions

    def timed_collect(*a, **kw):
        t0 = time.perf_counter()
        try:
            return collect(*a, **kw)
        finally:
            phases["collect"] = phases.get("collect", 0.0) + time.perf_counter() - t0

    trainer._generate_and_score_completions = timed_collect
    grpo_module.profiling_context = recording_profiling
    try:
        trainer.train()
    finally:
        grpo_module.profiling_context = original_profiling
    gen_key = next((k for k in (per_step[0] if per_step else {}) if k.endswith("transformers.generate")), None)
    return {
        "step_s": [s["step_s"] for s in per_step],
        "generate_s": [s.get(gen_key, float("nan")) for s in per_step],
        "collect_s": [s.get("collect", float("nan")) for s in per_step],
        "update_s": [s["step_s"] - s.get("collect", 0.0) for s in per_step],
        "tokens": [round(lg["completions/mean_length"] * args.prompts * G) for lg in step_logs],
        "max_length": [int(lg["completions/max_length"]) for lg in step_logs],
        "reward": [lg.get("reward", float("nan")) for lg in step_logs],
    }


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window for this process (Linux: writing 5 to /proc/self/clear_refs resets VmHWM);
    False where that is not possible (the peak then covers the whole process so far)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_gb() -> float:
    """This process's peak resident set since the last :func:`reset_peak_rss` (VmHWM), in GB (1e9 bytes); NaN
    where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return float("nan")


def summarise(raw: dict) -> dict:
    """Drop the warm-up step; medians of every per-step list."""
    timed = {k: v[1:] for k, v in raw.items()}
    out = {"median_s": statistics.median(timed["step_s"]), "warmup_step_s": raw["step_s"][0],
           "warmup": {k: v[0] for k, v in raw.items()}}
    for k, v in timed.items():
        if k.endswith("_s") and k != "step_s":
            out[f"median_{k}"] = statistics.median(v)
    return {**out, "per_step": timed}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["tiny", "smollm2-135m"])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side (after one warm-up step)")
    parser.add_argument("--prompts", type=int, default=1, help="Q: prompts per step")
    parser.add_argument("--samples", type=int, default=8, help="G: samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="same seed value on both sides")
    parser.add_argument("--side", default="both", choices=["both", "drox", "trl"], help="run only one side")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="drox's device (cpu, cuda, cuda:N); TRL's side is CPU only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a drox config override for the drox side (repeatable), e.g. trainer.share_prompts=false "
                             "to measure one lever, or +reward=variance to time DRO's R3 scoring")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.set and args.side != "drox":
        parser.error("--set changes only the drox side: use it with --side drox")
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.device != "cpu" and args.side != "drox":
        parser.error(f"--device {args.device}: TRL's side runs on CPU only (use_cpu=True); add --side drox")

    if args.side != "drox":
        try:
            import trl
        except ImportError:
            print(TRL_HINT, file=sys.stderr)
            sys.exit(2)
        trl_version = trl.__version__
    else:
        trl_version = None
    if args.threads:
        torch.set_num_threads(args.threads)

    from drox.models.loading import embedded_model_dir

    total = args.steps + 1
    cfg = compose_cfg(args, total)
    task, rows = step_prompt_rows(cfg, total)
    if args.model == "smollm2-135m":
        model_dir = embedded_model_dir(cfg.model.cache_dir)
    else:  # the tiny random Llama has no folder: save it (and the tokenizer) once for TRL
        model_dir = None
    results = {}
    with tempfile.TemporaryDirectory(prefix="drox-bench-step-") as tmp:
        workdir = Path(tmp)
        if model_dir is None and args.side != "drox":
            from drox.models.loading import load_policy

            m, tok = load_policy(cfg.model, "cpu")
            model_dir = workdir / "tiny-model"
            m.save_pretrained(str(model_dir))
            tok.save_pretrained(str(model_dir))
            del m
        if args.side in ("both", "drox"):
            reset_peak_rss()
            results["drox"] = {**summarise(run_drox(cfg, workdir)), "peak_rss_gb": peak_rss_gb()}
            gc.collect()
        if args.side in ("both", "trl"):
            reset_peak_rss()
            results["trl"] = {**summarise(run_trl(cfg, args, task, rows, model_dir, workdir, total)),
                              "peak_rss_gb": peak_rss_gb()}

    ratio = results["trl"]["median_s"] / results["drox"]["median_s"] if len(results) == 2 else None
    summary = {
        "model": args.model, "device": args.device, "threads": torch.get_num_threads(), "Q": args.prompts,
        "G": args.samples, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
        "steps_timed": args.steps, "seed": args.seed, "drox_overrides": list(args.set), "torch": torch.__version__,
        "transformers": __import__("transformers").__version__, "trl_version": trl_version,
        **results, "ratio_trl_over_drox": ratio,
    }
    print(f"{args.model} on {args.device} ({torch.get_num_threads()} threads): {args.prompts} prompt(s) x "
          f"{args.samples} samples x <= {args.max_new_tokens} new tokens, T={args.temperature}, {args.steps} timed "
          "steps after 1 warm-up"
          + (f", TRL {trl_version}" if trl_version else ""))
    for name, phase_names in (("drox", ("generate", "score", "update")), ("trl", ("generate", "collect", "update"))):
        if name not in results:
            continue
        r = results[name]
        times = ", ".join(f"{t:.2f}" for t in r["per_step"]["step_s"])
        phases = "  ".join(f"{p} {r[f'median_{p}_s']:.2f}" for p in phase_names)
        print(f"  {name:5s} median {r['median_s']:7.3f} s/step  [{times}]  {phases}  "
              f"tokens/step {r['per_step']['tokens']}  (warm-up {r['warmup_step_s']:.2f} s)  "
              f"peak RSS {r['peak_rss_gb']:.2f} GB")
    if ratio is not None:
        print(f"  trl / drox = {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
