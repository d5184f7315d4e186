"""What a run prints for a person following it: what runs (once, at the start) and one plain line per step.

In a terminal the rich progress bar shows the step; when stdout is not a terminal (nohup, Slurm, ``> log``)
the bar is silent, so each step prints :func:`progress_line` instead: step/total, reward, accuracy, seconds
per step, ETA, and what the filters kept.
"""

from __future__ import annotations

import math
from typing import Any, Dict

from omegaconf import OmegaConf

from drox.evaluation.sampling import duration  # with the eval progress lines, below the trainers


def describe_run(cfg, pipeline, run_dir) -> str:
    """One line per part: run folder, model, task, reward sources with weights, gates, filters, estimator, loss."""
    model = cfg.model.path or cfg.model.name
    task = cfg.task.name + (f" ({cfg.task.path})" if OmegaConf.select(cfg, "task.path") else "")
    rewards = ", ".join(f"{name} x{getattr(opts, 'weight', 1.0):g}" for name, opts in pipeline.rewards.items())
    if pipeline.srl_rewards is not None:  # trainer.srl_steps: SRL then RLVR
        rewards = f"srl on the expert's step-wise rows for {cfg.trainer.srl_steps} steps, then {rewards}"
    filters = [f.name for f in (*pipeline.group_filters, *pipeline.batch_token_filters, *pipeline.micro_token_filters)]
    t = cfg.trainer
    lines = [
        f"run folder: {run_dir}",
        f"model: {model} ({cfg.model.dtype}) on {cfg.device}; task: {task}",
        f"rewards: {rewards}; gates: {', '.join(g.name for g in pipeline.gates) or 'none'}; "
        f"filters: {', '.join(filters) or 'none'}",
        f"advantage: {t.advantage.estimator} (combine {t.advantage.combine})"
        f"{' + dense scores per token' if t.advantage.get('dense') == 'per_token' else ''}"
        f"{verl_note(t.advantage)}; loss: {t.policy_loss}, "
        f"{t.loss_agg}, clip [{t.clip_low}, {t.clip_high}], kl {t.kl_coef}, lr {t.lr:g}",
    ]
    return "\n".join(lines)


def verl_note(advantage) -> str:
    """`` + VERL shaping (...)`` when ``trainer.advantage.verl_shaping`` is on, else empty."""
    if not advantage.get("verl_shaping", False):
        return ""
    v = advantage.verl
    return f" + VERL shaping (stride {v.stride}, kappa {v.kappa}, bonus on {v.tokens} token(s))"


def progress_line(step: int, total: int, metrics: Dict[str, Any], seconds_per_step: float,
                  group_filters: bool = False) -> str:
    """``step 3/8  reward 0.250  acc 0.250  35.2 s/step  ETA 2m56s  kept 3 groups (75% of sampled)`` (the last
    part only with ``group_filters``)."""
    eta = seconds_per_step * (total - step)
    parts = [f"step {step}/{total}", f"reward {metrics.get('reward/mean', math.nan):.3f}",
             f"acc {metrics.get('accuracy', math.nan):.3f}", f"{seconds_per_step:.1f} s/step",
             f"ETA {duration(eta)}"]
    if group_filters and "filter/kept_groups" in metrics and "filter/kept_frac" in metrics:
        parts.append(f"kept {int(metrics['filter/kept_groups'])} groups ({metrics['filter/kept_frac']:.0%} of sampled)")
    return "  ".join(parts)
