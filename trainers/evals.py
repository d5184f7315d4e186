"""The evaluations a training run makes (every ``trainer.eval_every`` steps and at the end) and the before/after
table it prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from rich.table import Table

from drox.evaluation.report import format_table
from drox.evaluation.runner import evaluate_policy, write_eval_folder


def run_eval(trainer, eval_task, run_dir: Path, step: int, judge=None) -> Dict[str, Any]:
    """Evaluate the current policy on the eval split (pass@k, or the open-ended metrics for a task without a
    verifier); outputs under eval/step-N/, numbers logged under eval/."""
    cfg = trainer.cfg
    # off a terminal (a log file, Slurm, nohup) one plain progress line per batch, as `drox eval` prints; on a
    # terminal the training bar stays the only live display
    summary, per_problem, records = evaluate_policy(cfg, trainer.engine, eval_task, model=trainer.model,
                                                    tokenizer=trainer.tokenizer, judge=judge,
                                                    progress=not trainer.console.is_terminal)
    write_eval_folder(run_dir / "eval" / f"step-{step:06d}", cfg, summary, per_problem, records,
                      title=f"step {step}", step=step, with_config=False)
    trainer.logger.log(step, {k: v for k, v in summary.items() if isinstance(v, (int, float))}, prefix="eval")
    trainer.console.print(f"eval at step {step}:")
    if eval_task.verifier is not None:
        trainer.console.print(format_table(summary, list(cfg.eval.pass_at_k)))
    else:
        trainer.console.print(", ".join(f"{k} {v:.4g}" for k, v in summary.items() if isinstance(v, float)))
    return summary


def compare_table(before: Dict[str, Any], after: Dict[str, Any], ks: List[int], steps: int, split: str = "test"):
    """pass@k / maj@k (or the open-ended metrics) on the eval split before and after training."""
    where = "held-out" if split == "test" else f"{split}-split"
    table = Table(title=f"{where} eval: before vs after {steps} steps "
                        f"(n={after['n']} samples x {after['num_problems']} problems)")
    for col in ("metric", "before", "after", "change"):
        table.add_column(col, justify="right")
    for prefix in ("pass", "maj"):
        for k in ks:
            key = f"{prefix}@{k}"
            if key in before and key in after:
                table.add_row(key, f"{before[key]:.3f}", f"{after[key]:.3f}", f"{after[key] - before[key]:+.3f}")
    for key in ("rouge_l_f1", "ref_logprob_per_token", "win_rate"):  # tasks without a verifier
        if key in before and key in after:
            table.add_row(key, f"{before[key]:.3f}", f"{after[key]:.3f}", f"{after[key] - before[key]:+.3f}")
    table.add_row("mean length", f"{before['mean_length']:.1f}", f"{after['mean_length']:.1f}",
                  f"{after['mean_length'] - before['mean_length']:+.1f}")
    return table
