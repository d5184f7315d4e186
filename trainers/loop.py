"""The reference single-process trainer: GRPO and its relatives, on CPU or one GPU.

One training step, top to bottom (DESIGN.md "One training step, as data"):

1. draw Q prompts (seeded epochs of permutations; the cursor is checkpointed);
2. sample G completions each with the rollout engine, which also returns the behaviour
   log-probs it computed while sampling (no second forward pass for pi_old);
3. score: every configured reward source -> scores [Q, G] (and dense [Q, G, T]), combined
   by weights; the task's verifier alone when no source is configured (plain RLVR);
   optional DAPO soft overlong punishment (Eq. 13);
4. advantages: group baseline (grpo / dr_grpo / rloo / none), broadcast to tokens, plus
   reward-to-go of dense scores (DeepSeekMath §4.1.3);
5. update: ``mu`` passes over the batch, each split into mini-batches of whole groups (one
   optimizer step each) and micro-batches (gradient accumulation); PPO clipped surrogate
   against the behaviour log-probs with clip-higher, one of the loss aggregations of
   PAPERS.md §6.5, optional k1/k2/k3 KL to a frozen reference and entropy bonus;
6. metrics -> metrics.jsonl (+ W&B), a few completions, periodic checkpoint and eval.

Simplifications, stated honestly: one process, no sequence packing; the policy that samples
is the policy being trained (no separate inference engine), so with ``mu=1`` and one
mini-batch the ratio is 1 up to the numerical difference between KV-cached incremental
decoding and a full forward pass; pi_old is the behaviour policy of the step.
"""

from __future__ import annotations

import copy
import math
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from drox.models.forward import response_logprobs
from drox.models.loading import load_policy, resolve_device
from drox.rewards.base import ScoringContext, score
from drox.rollout.hf import build_engine
from drox.tasks import build_task
from drox.trainers import algos
from drox.trainers.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from drox.trainers.metrics import MetricsLogger
from drox.trainers.sampler import PromptSampler
from drox.utils import atomic_write_text


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def describe_sizes(cfg) -> str:
    """The batch semantics in one paragraph (the most common confusion in TRL/verl issues)."""
    t = cfg.trainer
    rows = t.prompts_per_step * t.samples_per_prompt
    per_mb = rows // t.mini_batches
    return (
        f"per step: Q={t.prompts_per_step} prompts x G={t.samples_per_prompt} samples = {rows} rollouts "
        f"(<= {rows * cfg.rollout.max_new_tokens} completion tokens); update: mu={t.mu} pass(es) x "
        f"{t.mini_batches} mini-batch(es) of {per_mb} rollouts = {t.mu * t.mini_batches} optimizer step(s) per "
        f"training step, each mini-batch in {t.grad_accum} micro-batch(es) of ~{math.ceil(per_mb / t.grad_accum)}; "
        f"{t.steps} training steps"
    )


def build_scheduler(optimizer, tcfg, total_optimizer_steps: int):
    """Linear warm-up over ``warmup_steps`` optimizer steps, then constant or cosine to 0."""

    def factor(s: int) -> float:
        if s < tcfg.warmup_steps:
            return (s + 1) / tcfg.warmup_steps
        if tcfg.schedule == "cosine":
            span = max(1, total_optimizer_steps - tcfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - tcfg.warmup_steps) / span)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def apply_lora(model, tcfg):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=tcfg.lora_r, lora_alpha=tcfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def load_for_training(cfg, device, resume_from: Optional[Path]):
    """(policy, tokenizer): from the config, or the weights of a checkpoint when resuming."""
    model_cfg = cfg.model
    if resume_from is not None and cfg.trainer.lora_r == 0:
        model_cfg = OmegaConf.merge(cfg.model, {"name": "hf", "path": str(resume_from)})
    model, tokenizer = load_policy(model_cfg, device)
    if cfg.trainer.lora_r > 0:
        if resume_from is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(resume_from), is_trainable=True)
        else:
            model = apply_lora(model, cfg.trainer)
    if cfg.trainer.gradient_checkpointing:
        # transformers 5.2x renamed it; verl-compatible releases (5.5-5.10) only know the old name
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    return model, tokenizer


def run_training(cfg: DictConfig, run_dir: str | Path, progress: bool = True) -> Dict[str, Any]:
    """Train per ``cfg``, writing everything under ``run_dir``; returns the last step's metrics."""
    from rich.console import Console

    console = Console()
    t = cfg.trainer
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_root = run_dir / "checkpoints"
    resume_from = latest_checkpoint(ckpt_root) if cfg.resume else None
    if cfg.resume and resume_from is None:
        console.print(f"[yellow]resume=true but {ckpt_root} holds no complete checkpoint; starting from step 0")
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    task = build_task(cfg.task, split="train")
    eval_task = build_task(cfg.task, split=cfg.eval.split) if t.eval_every > 0 else None
    model, tokenizer = load_for_training(cfg, device, resume_from)
    ref_model = None
    if t.kl_coef > 0:  # a frozen copy of the initial policy (of the base, for LoRA)
        ref_model, _ = load_policy(cfg.model, device)
        ref_model.requires_grad_(False)
    engine = build_engine(cfg.rollout, model, tokenizer, cfg.model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    scheduler = build_scheduler(optimizer, t, t.steps * t.mu * t.mini_batches)
    sampler = PromptSampler(len(task.dataset), cfg.seed)

    start_step = 0
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        start_step = state["step"]
        console.print(f"resumed from {resume_from} at step {start_step}")

    console.print(describe_sizes(cfg), highlight=False)
    logger = MetricsLogger(run_dir, cfg.logger, OmegaConf.to_container(cfg, resolve=True), resume_step=start_step)
    metrics: Dict[str, Any] = {}
    evals: Dict[int, Dict[str, Any]] = {}
    scoring_state: Dict[str, Any] = {}  # reward sources' state across steps (e.g. a frozen reward model)
    if eval_task is not None and start_step == 0:
        evals[0] = run_eval(engine, eval_task, cfg, run_dir, 0, logger, console)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}")]
    try:
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            job = bar.add_task("train", total=t.steps, completed=start_step, info="")
            for step in range(start_step + 1, t.steps + 1):
                metrics = train_step(step, cfg, task, sampler, engine, model, ref_model, tokenizer, optimizer,
                                     scheduler, logger, scoring_state)
                bar.update(job, advance=1, info=(f"reward {metrics['reward/mean']:.3f}  "
                                                 f"acc {metrics.get('accuracy', float('nan')):.3f}  "
                                                 f"{metrics['time/step']:.1f}s/step"))
                if step == t.steps or (t.save_every and step % t.save_every == 0):
                    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "sampler": sampler.state_dict(), "rng": rng_state(), "step": step}
                    save_checkpoint(ckpt_root, step, model, tokenizer, state, t.keep_checkpoints)
                if eval_task is not None and (step % t.eval_every == 0 or step == t.steps):
                    evals[step] = run_eval(engine, eval_task, cfg, run_dir, step, logger, console)
    finally:
        logger.close()
    if 0 in evals and t.steps in evals:
        console.print(compare_table(evals[0], evals[t.steps], list(cfg.eval.pass_at_k), t.steps))
    console.print(f"run directory: {run_dir}")
    return metrics


def compare_table(before: Dict[str, Any], after: Dict[str, Any], ks: List[int], steps: int):
    """pass@k / maj@k on held-out problems before and after training."""
    from rich.table import Table

    table = Table(title=f"held-out eval: before vs after {steps} steps "
                        f"(n={after['n']} samples x {after['num_problems']} problems)")
    for col in ("metric", "before", "after", "change"):
        table.add_column(col, justify="right")
    for prefix in ("pass", "maj"):
        for k in ks:
            key = f"{prefix}@{k}"
            if key in before and key in after:
                table.add_row(key, f"{before[key]:.3f}", f"{after[key]:.3f}", f"{after[key] - before[key]:+.3f}")
    table.add_row("mean length", f"{before['mean_length']:.1f}", f"{after['mean_length']:.1f}",
                  f"{after['mean_length'] - before['mean_length']:+.1f}")
    return table


def train_step(step, cfg, task, sampler, engine, model, ref_model, tokenizer, optimizer, scheduler, logger,
               scoring_state=None):
    t, r = cfg.trainer, cfg.rollout
    Q, G = t.prompts_per_step, t.samples_per_prompt
    t0 = time.perf_counter()

    # 1-2. prompts and rollouts
    idx = sampler.next(Q)
    rows = task.dataset.select(idx).to_list()
    batch = engine.generate([row["prompt"] for row in rows], G, max_new_tokens=r.max_new_tokens,
                            temperature=r.temperature, top_p=r.top_p, seed=cfg.seed * 1_000_003 + step)
    t_gen = time.perf_counter()

    # 3. scores [Q, G] (+ dense [Q, G, T])
    ctx = ScoringContext(batch=batch, rows=rows, task=task, step=step, seed=cfg.seed, policy=model,
                         tokenizer=tokenizer, state=scoring_state if scoring_state is not None else {})
    combined = score(ctx, OmegaConf.to_container(cfg.reward, resolve=True))
    scores = combined.seq  # [Q, G]
    metrics: Dict[str, Any] = dict(combined.metrics)
    if t.overlong_buffer > 0:
        penalty = algos.soft_overlong_penalty(batch.lengths, r.max_new_tokens, t.overlong_buffer, t.overlong_penalty)
        scores = scores + penalty.view(Q, G)
        metrics["reward/overlong/mean"] = penalty.mean().item()
    algos.check_finite("rewards", scores, step, source="combined")
    if task.verifier is not None:
        metrics["accuracy"] = float(np.mean(ctx.verify().correct))
    t_score = time.perf_counter()

    # 4. advantages [N, T]
    mask = batch.response_mask.clone()  # [N, T]
    if t.mask_truncated:
        mask[batch.truncated] = 0.0
    # sign-selective sources (PSR/NSR) produce advantages themselves and require estimator "none"
    estimator = combined.estimator or t.advantage.estimator
    seq_adv = algos.compute_advantages(scores, estimator, eps=t.advantage.eps)  # [Q, G]
    token_scores = combined.token  # [Q, G, T] or None
    advantages = algos.token_advantages(seq_adv, token_scores, batch.response_mask, group_size=G,
                                        eps=t.advantage.eps, reward_mask=combined.token_mask)  # [N, T]
    algos.check_finite("advantages", advantages, step)

    # 5. policy update
    update_stats = update_policy(step, cfg, batch, advantages, mask, model, ref_model, optimizer, scheduler)
    t_update = time.perf_counter()

    # 6. metrics
    lengths = batch.lengths.float()
    metrics.update({
        "reward/mean": scores.mean().item(),
        "reward/std": scores.std().item() if scores.numel() > 1 else 0.0,
        "advantage/estimator_overridden": float(estimator != t.advantage.estimator),
        "advantage/mean": seq_adv.mean().item(),
        "advantage/std": seq_adv.std().item() if seq_adv.numel() > 1 else 0.0,
        "advantage/abs_max": seq_adv.abs().max().item(),
        "advantage/zero_groups": float((seq_adv.abs().sum(-1) == 0).float().mean().item()),
        **update_stats,
        "entropy": algos.masked_mean(batch.entropies, batch.response_mask).item(),
        "response_length/mean": lengths.mean().item(),
        "response_length/max": lengths.max().item(),
        "truncated_frac": batch.truncated.float().mean().item(),
        "tokens": int(batch.response_mask.sum().item()),
        "samples_seen": step * Q * G,
        "lr": scheduler.get_last_lr()[0],
        "time/generate": t_gen - t0,
        "time/score": t_score - t_gen,
        "time/update": t_update - t_score,
        "time/step": t_update - t0,
    })
    logger.log(step, metrics)
    correct = ctx.verify().correct if task.verifier is not None else [None] * batch.num_rows
    shown = range(min(cfg.logger.completions_per_step, batch.num_rows))
    logger.log_completions(step, [{
        "prompt": rows[i // G]["prompt"], "completion": batch.texts[i], "reference": str(rows[i // G]["answer"]),
        "reward": scores.view(-1)[i].item(), "correct": correct[i], "finish_reason": batch.finish_reason[i],
    } for i in shown])
    return metrics


def update_policy(step, cfg, batch, advantages, mask, model, ref_model, optimizer, scheduler) -> Dict[str, float]:
    """``mu`` passes x mini-batches (whole groups, one optimizer step each) x micro-batches."""
    t = cfg.trainer
    Q, G = batch.num_groups, batch.group_size
    device = next(model.parameters()).device
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bool(t.bf16))
    max_len = cfg.rollout.max_new_tokens
    old_logprobs = batch.logprobs  # [N, T] behaviour log-probs from the sampler
    ref_logprobs = None
    if ref_model is not None:
        with torch.no_grad(), autocast:
            ref_logprobs, _ = response_logprobs(ref_model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                                batch.response_mask, batch.temperature)
        ref_logprobs = ref_logprobs.float().cpu()
    model.train()
    sums: Dict[str, float] = {}
    count = 0
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
    for epoch in range(t.mu):
        # groups are shuffled between passes (seeded), never split across mini-batches
        order = torch.randperm(Q, generator=gen) if epoch > 0 else torch.arange(Q)
        for group_ids in order.chunk(t.mini_batches):
            rows = (group_ids[:, None] * G + torch.arange(G)[None, :]).flatten()  # [n_mb]
            norms = algos.loss_normalisers(mask[rows])
            optimizer.zero_grad(set_to_none=True)
            for micro in rows.chunk(t.grad_accum):
                with autocast:
                    logprobs, entropy = response_logprobs(
                        model, batch.prompt_ids[micro], batch.prompt_mask[micro], batch.response_ids[micro],
                        batch.response_mask[micro], batch.temperature, with_entropy=t.entropy_coef > 0)
                m = mask[micro].to(device)
                loss, stats = algos.policy_loss(
                    logprobs.float(), old_logprobs[micro].to(device), advantages[micro].to(device), m,
                    clip_low=t.clip_low, clip_high=t.clip_high, agg=t.loss_agg, max_len=max_len, **norms)
                stats["pg_loss"] = loss.item()
                if ref_logprobs is not None:
                    kl = algos.kl_penalty(logprobs.float(), ref_logprobs[micro].to(device), t.kl_estimator)
                    kl_loss = algos.agg_loss(kl, m, t.loss_agg, max_len=max_len, **norms)
                    loss = loss + t.kl_coef * kl_loss
                    stats["kl"] = kl_loss.item()
                if entropy is not None:
                    ent_loss = algos.agg_loss(entropy.float(), m, t.loss_agg, max_len=max_len, **norms)
                    loss = loss - t.entropy_coef * ent_loss
                algos.check_finite("loss", loss.detach(), step)
                loss.backward()
                stats["loss"] = loss.item()
                for k, v in stats.items():
                    # pg_loss/kl/loss are already scaled by the global normalisers: sum over micro-batches;
                    # the ratios/fractions are per micro-batch: averaged below
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            params = [p for p in model.parameters() if p.requires_grad]
            if t.max_grad_norm > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            else:
                grad_norm = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm) * t.grad_accum
            optimizer.step()
            scheduler.step()
    model.eval()
    n_opt = t.mu * t.mini_batches
    summed = {"loss", "pg_loss", "kl"}
    return {k: (v / n_opt if k in summed else v / count) for k, v in sums.items()}


def run_eval(engine, eval_task, cfg, run_dir: Path, step: int, logger: MetricsLogger, console) -> Dict[str, Any]:
    """pass@k on the eval split with the current policy; outputs under eval/step-N/."""
    from drox.evaluation.report import format_table, write_eval_outputs
    from drox.evaluation.sampling import evaluate

    ks = list(cfg.eval.pass_at_k)
    summary, per_problem, records = evaluate(engine, eval_task, ks, cfg.eval.n, eval_cfg=cfg.eval, progress=False)
    out = run_dir / "eval" / f"step-{step:06d}"
    write_eval_outputs(out, summary, per_problem, ks, title=f"step {step}")
    atomic_write_text(out / "samples.jsonl", "".join(__import__("json").dumps(r) + "\n" for r in records))
    logger.log(step, {k: v for k, v in summary.items() if isinstance(v, (int, float))}, prefix="eval")
    console.print(f"eval at step {step}:")
    console.print(format_table(summary, ks))
    return summary
