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

import math
import random
import time
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from drox.models.forward import response_logprobs
from drox.models.loading import load_policy, resolve_device
from drox.rewards.base import ScoringContext, load_scoring_state, score, scoring_state_dict
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
from drox.utils import atomic_write_jsonl, atomic_write_text


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


class FrozenReference:
    """The initial policy, frozen, loaded on first use: the KL reference and the reward sources'
    ``reference`` model are this one object. It is built from ``cfg.model`` (the base for LoRA),
    so after a resume it is still the initial policy, not the resumed one."""

    def __init__(self, model_cfg, device):
        self.model_cfg, self.device, self.model = model_cfg, device, None

    def __call__(self):
        if self.model is None:
            self.model, _ = load_policy(self.model_cfg, self.device)
            self.model.requires_grad_(False)
        return self.model


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
    reference = FrozenReference(cfg.model, device)
    ref_model = reference() if t.kl_coef > 0 else None  # loaded only when the KL term needs it
    engine = build_engine(cfg.rollout, model, tokenizer, cfg.model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    scheduler = build_scheduler(optimizer, t, t.steps * t.mu * t.mini_batches)
    sampler = PromptSampler(len(task.dataset), cfg.seed)

    start_step = 0
    scoring_state: Dict[str, Any] = {}  # reward sources' state across steps (e.g. a lagged reward policy)
    # cumulative rollouts generated (refills included) and training wall-clock, for steps/time-to-target
    totals = {"samples_seen": 0, "elapsed": 0.0}
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        scoring_state.update(load_scoring_state(state.get("scoring", {}), model))
        start_step = state["step"]
        totals.update(state.get("totals", {}))
        console.print(f"resumed from {resume_from} at step {start_step}")

    console.print(describe_sizes(cfg), highlight=False)
    logger = MetricsLogger(run_dir, cfg.logger, OmegaConf.to_container(cfg, resolve=True), resume_step=start_step)
    metrics: Dict[str, Any] = {}
    evals: Dict[int, Dict[str, Any]] = {}
    if eval_task is not None and start_step == 0:
        evals[0] = run_eval(engine, eval_task, cfg, run_dir, 0, logger, console)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}")]
    try:
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            job = bar.add_task("train", total=t.steps, completed=start_step, info="")
            for step in range(start_step + 1, t.steps + 1):
                sampler = maybe_offline_round(step - 1, cfg, task, sampler, engine, model, tokenizer,
                                              scoring_state, logger, console, reference)
                metrics = train_step(step, cfg, task, sampler, engine, model, ref_model, tokenizer, optimizer,
                                     scheduler, logger, scoring_state, totals, reference)
                bar.update(job, advance=1, info=(f"reward {metrics['reward/mean']:.3f}  "
                                                 f"acc {metrics.get('accuracy', float('nan')):.3f}  "
                                                 f"{metrics['time/step']:.1f}s/step"))
                if step == t.steps or (t.save_every and step % t.save_every == 0):
                    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "sampler": sampler.state_dict(), "rng": rng_state(), "step": step,
                             "totals": dict(totals), "scoring": scoring_state_dict(scoring_state)}
                    save_checkpoint(ckpt_root, step, model, tokenizer, state, t.keep_checkpoints)
                if eval_task is not None and (step % t.eval_every == 0 or step == t.steps):
                    evals[step] = run_eval(engine, eval_task, cfg, run_dir, step, logger, console)
    finally:
        logger.close()
    if 0 in evals and t.steps in evals:
        console.print(compare_table(evals[0], evals[t.steps], list(cfg.eval.pass_at_k), t.steps))
    console.print(f"run directory: {run_dir}")
    return metrics


def maybe_offline_round(steps_done, cfg, task, sampler, engine, model, tokenizer, scoring_state, logger, console,
                        reference=None):
    """DRO's offline query filtering (v1 §4.2.2): before training and every ``every`` steps, score
    the whole training set with the current policy and sample only the prompts it keeps."""
    if "query" not in cfg.filter:
        return sampler
    from drox.filters.base import FILTERS, parse_options
    from drox.filters.query import make_offline_score_fn, offline_round, offline_round_due

    opts = parse_options(FILTERS, "filter", "query", OmegaConf.to_container(cfg.filter.query))
    if not offline_round_due(opts, steps_done):
        return sampler
    r = cfg.rollout
    seed = rollout_seed(cfg.seed, steps_done, 999)  # the round's own sampling seed

    def make_ctx(batch, rows):
        return ScoringContext(batch=batch, rows=rows, task=task, step=steps_done, seed=cfg.seed, policy=model,
                              tokenizer=tokenizer, state=scoring_state, reference=reference)

    score_fn = make_offline_score_fn(engine, make_ctx, opts, max_new_tokens=r.max_new_tokens,
                                     temperature=r.temperature, top_p=r.top_p, seed=seed)
    kept, stats = offline_round(score_fn, task.dataset.to_list(), opts, previous_keep=sampler.indices, seed=seed)
    # logged under the step it precedes, so a resume from checkpoint `steps_done` drops and redoes it
    logger.log(steps_done + 1, {f"round/{k}": v for k, v in stats.items()}, prefix="filter/query")
    console.print(f"query filter round after {steps_done} steps: kept {len(kept)}/{len(task.dataset)} prompts")
    new = PromptSampler(len(task.dataset), cfg.seed + steps_done, indices=kept)
    return new


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


@dataclass
class Collected:
    """The groups a step trains on, after gates and group filters (Qk <= Q groups of G)."""

    batch: Any  # RolloutBatch with Qk groups
    rows: List[Dict[str, Any]]  # Qk dataset rows
    scores: torch.Tensor  # [Qk, G] combined scores (after floor gating and the overlong penalty)
    token: Optional[torch.Tensor]  # [Qk, G, T] dense scores or None
    token_mask: Optional[torch.Tensor]  # [Qk, G, T] positions holding dense scores
    table: torch.Tensor  # [Qk, G, K] per-source scores (multi-objective combiners)
    weights: torch.Tensor  # [K]
    names: List[str]  # the K source names
    valid: torch.Tensor  # [Qk, G] bool, False = rejected by a gate (excluded from advantages and loss)
    estimator: Optional[str]  # advantage estimator a source requires


def rollout_seed(seed: int, step: int, gen_batch: int) -> int:
    """Sampling seed of generation batch ``gen_batch`` of ``step`` (independent of everything else)."""
    return (seed * 1_000_003 + step) * 1_000 + gen_batch


def collect(step, cfg, task, sampler, engine, model, tokenizer, scoring_state, metrics,
            reference=None) -> Optional[Collected]:
    """Steps 1-3 plus gates and group filters; samples more prompts while a refill filter asks.

    Metrics of every sampled rollout (reward, accuracy, per-source means) are averaged over all
    generation batches; ``filter/*`` and ``gate/*`` record what was kept.
    """
    import drox.filters  # noqa: F401  (registers filters)
    import drox.gates  # noqa: F401  (registers gates)
    from drox.filters.base import FILTERS, GATES, parse_options

    t, r = cfg.trainer, cfg.rollout
    Q, G = t.prompts_per_step, t.samples_per_prompt
    reward_cfg = OmegaConf.to_container(cfg.reward, resolve=True)
    gates = {n: parse_options(GATES, "gate", n, o) for n, o in OmegaConf.to_container(cfg.gate).items()}
    filters = {n: parse_options(FILTERS, "filter", n, o) for n, o in OmegaConf.to_container(cfg.filter).items()}
    group_filters = {n: o for n, o in filters.items() if FILTERS[n].kind == "group"}
    refill = [n for n in group_filters if FILTERS[n].refill]
    max_gen = max([int(group_filters[n].max_gen_batches) for n in refill], default=1)

    parts: List[Collected] = []
    sums: Dict[str, float] = {}
    kept_groups, gen_batches, t_gen, t_score = 0, 0, 0.0, 0.0
    while True:
        t0 = time.perf_counter()
        idx = sampler.next(Q)
        rows = task.dataset.select(idx).to_list()
        batch = engine.generate([row["prompt"] for row in rows], G, max_new_tokens=r.max_new_tokens,
                                temperature=r.temperature, top_p=r.top_p, seed=rollout_seed(cfg.seed, step, gen_batches))
        gen_batches += 1
        t1 = time.perf_counter()
        t_gen += t1 - t0

        # 3. scores [Q, G] (+ dense [Q, G, T]) from every configured source
        ctx = ScoringContext(batch=batch, rows=rows, task=task, step=step, seed=cfg.seed, policy=model,
                             tokenizer=tokenizer, state=scoring_state, gen_batch=gen_batches - 1,
                             reference=reference)
        # gates judge the text, so they run first: sources can then ignore rejected rollouts (R3's sigma)
        gate_passed = {name: GATES[name].fn(ctx, opts) for name, opts in gates.items()}
        if gate_passed:
            ctx.valid = torch.stack([res.passed.bool() for res in gate_passed.values()]).all(dim=0)  # [Q, G]
        combined = score(ctx, reward_cfg)
        scores = combined.seq  # [Q, G]
        # per-objective view for the multi-objective combiners; every change to `scores` below mirrors here
        table, weights, names = combined.table, combined.weights, list(combined.per_source)  # [Q, G, K]
        step_metrics = dict(combined.metrics)
        if t.overlong_buffer > 0:  # DAPO Eq. 13, added to the combined reward (its own objective column)
            penalty = algos.soft_overlong_penalty(batch.lengths, r.max_new_tokens, t.overlong_buffer,
                                                  t.overlong_penalty).view(Q, G)
            scores = scores + penalty
            table = torch.cat([table, penalty[..., None]], dim=-1)
            weights, names = torch.cat([weights, torch.ones(1)]), names + ["overlong"]
            step_metrics["reward/overlong/mean"] = penalty.mean().item()
        algos.check_finite("rewards", scores, step, source="combined")
        step_metrics["reward/mean"] = scores.mean().item()
        step_metrics["reward/std"] = scores.std().item() if scores.numel() > 1 else 0.0
        if task.verifier is not None:
            step_metrics["accuracy"] = float(np.mean(ctx.verify().correct))

        # apply the gates' verdicts: exclude (or floor) rejected rollouts; a gate never becomes reward
        valid = torch.ones(Q, G, dtype=torch.bool)
        for name, opts in gates.items():
            result = gate_passed[name]
            passed = result.passed.bool()
            if opts.on_fail == "floor":  # failing rollouts get their group's lowest score (per objective too)
                floor = scores.min(dim=1, keepdim=True).values.expand(Q, G)
                scores = torch.where(passed, scores, floor)
                table = torch.where(passed[..., None], table, table.min(dim=1, keepdim=True).values.expand_as(table))
                valid &= passed.any(dim=1, keepdim=True).expand(Q, G)  # a group where all fail is dropped
            else:
                valid &= passed
            step_metrics.update({f"gate/{name}/{k}": v for k, v in result.stats.items()})
        keep = valid.any(dim=1)  # [Q]

        # group filters: which queries are worth a gradient
        for name, opts in group_filters.items():
            decision = FILTERS[name].fn(ctx, replace(combined, seq=scores), valid, opts)
            keep &= decision.keep.bool()
            step_metrics.update({f"filter/{name}/{k}": v for k, v in decision.stats.items()})
        step_metrics["filter/kept_frac"] = keep.float().mean().item()
        for k, v in step_metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        t_score += time.perf_counter() - t1

        if keep.any():
            sel = keep
            rows_kept = [row for row, k in zip(rows, keep.tolist()) if k]
            parts.append(Collected(
                batch=batch.select_groups(sel), rows=rows_kept, scores=scores[sel],
                token=combined.token[sel] if combined.token is not None else None,
                token_mask=combined.token_mask[sel] if combined.token_mask is not None else None,
                table=table[sel], weights=weights, names=names,
                valid=valid[sel], estimator=combined.estimator))
            kept_groups += int(keep.sum())
        if not refill or kept_groups >= Q or gen_batches >= max_gen:
            break

    metrics.update({k: v / gen_batches for k, v in sums.items()})
    metrics.update({"filter/gen_batches": gen_batches, "filter/kept_groups": min(kept_groups, Q),
                    "time/generate": t_gen, "time/score": t_score})
    if refill and kept_groups < Q:
        from rich.console import Console

        Console(stderr=True).print(
            f"[yellow]step {step}: {'/'.join(refill)} kept {kept_groups}/{Q} groups after max_gen_batches={max_gen} "
            f"generation batches; training on what was kept", highlight=False)
    if not parts:
        return None
    return _merge(parts, Q, engine.pad_id)


def _merge(parts: List[Collected], Q: int, pad_id: int) -> Collected:
    """Concatenate the kept groups of several generation batches; at most Q groups."""
    from drox.rollout.base import concat_batches

    batch = concat_batches([p.batch for p in parts], pad_id) if len(parts) > 1 else parts[0].batch
    T = batch.response_ids.shape[1]

    def cat_dense(key, fill):
        if all(getattr(p, key) is None for p in parts):
            return None
        out = []
        for p in parts:
            x = getattr(p, key)
            if x is None:
                x = torch.full((*p.scores.shape, p.batch.response_ids.shape[1]), fill)
            out.append(torch.nn.functional.pad(x, (0, T - x.shape[-1]), value=fill))
        return torch.cat(out)[:Q]

    keep_q = torch.zeros(batch.num_groups, dtype=torch.bool)
    keep_q[:Q] = True
    return Collected(
        batch=batch.select_groups(keep_q) if batch.num_groups > Q else batch,
        rows=[row for p in parts for row in p.rows][:Q],
        scores=torch.cat([p.scores for p in parts])[:Q],
        token=cat_dense("token", 0.0),
        token_mask=cat_dense("token_mask", False),
        table=torch.cat([p.table for p in parts])[:Q],
        weights=parts[0].weights,
        names=parts[0].names,
        valid=torch.cat([p.valid for p in parts])[:Q],
        estimator=parts[0].estimator,
    )


def train_step(step, cfg, task, sampler, engine, model, ref_model, tokenizer, optimizer, scheduler, logger,
               scoring_state=None, totals=None, reference=None):
    from drox.filters.base import FILTERS, parse_options

    t = cfg.trainer
    G = t.samples_per_prompt
    t0 = time.perf_counter()
    metrics: Dict[str, Any] = {}

    # 1-3. rollouts, scores, gates, group filters (with refill)
    data = collect(step, cfg, task, sampler, engine, model, tokenizer,
                   scoring_state if scoring_state is not None else {}, metrics, reference)
    t_collect = time.perf_counter()
    totals = totals if totals is not None else {"samples_seen": 0, "elapsed": 0.0}
    totals["samples_seen"] += int(metrics["filter/gen_batches"]) * t.prompts_per_step * G
    metrics["samples_seen"] = totals["samples_seen"]
    if data is None:  # every group was filtered out: nothing to learn from at this step
        totals["elapsed"] += t_collect - t0
        metrics.update({"skipped": 1.0, "lr": scheduler.get_last_lr()[0], "time/update": 0.0,
                        "time/step": t_collect - t0, "time/elapsed": totals["elapsed"]})
        logger.log(step, metrics)
        return metrics
    batch, scores = data.batch, data.scores  # Qk groups

    # 4. advantages [N, T]; sign-selective sources (PSR/NSR) need estimator "none"
    estimator = data.estimator or t.advantage.estimator
    if t.advantage.combine != "sum" and data.table.shape[-1] > 1:
        from drox.trainers.multiobj import combine_objectives

        seq_adv, combine_stats = combine_objectives(data.table, data.weights, t.advantage.combine,
                                                    eps=t.advantage.eps, valid=data.valid,
                                                    names=data.names)  # [Qk, G]
        metrics.update({f"advantage/{k}": v for k, v in combine_stats.items()})
    else:  # weighted sum of sources (already in `scores`), then the group baseline
        seq_adv = algos.compute_advantages(scores, estimator, eps=t.advantage.eps, valid=data.valid)  # [Qk, G]
    advantages = algos.token_advantages(seq_adv, data.token, batch.response_mask, group_size=G,
                                        eps=t.advantage.eps, reward_mask=data.token_mask,
                                        valid=data.valid)  # [N, T]
    algos.check_finite("advantages", advantages, step)

    # loss mask [N, T]: real tokens of accepted rollouts, minus truncated ones if asked
    mask = batch.response_mask * data.valid.view(-1, 1).float()
    if t.mask_truncated:
        mask[batch.truncated] = 0.0
    token_filters = {n: parse_options(FILTERS, "filter", n, o) for n, o in OmegaConf.to_container(cfg.filter).items()
                     if FILTERS[n].kind == "token"}
    micro_filters = {}
    pg_mask = mask  # token filters narrow the policy-gradient term only; KL and entropy bonus keep `mask`
    for name, opts in token_filters.items():  # e.g. 80/20 entropy mask over the whole batch
        if getattr(opts, "scope", "batch") == "micro_batch":
            micro_filters[name] = opts
            continue
        pg_mask, stats = FILTERS[name].fn(batch.entropies, pg_mask, opts)
        metrics.update({f"filter/{name}/{k}": v for k, v in stats.items()})

    # 5. policy update
    update_stats = update_policy(step, cfg, batch, advantages, pg_mask, model, ref_model, optimizer, scheduler,
                                 micro_filters, reg_mask=mask)
    t_update = time.perf_counter()

    # 6. metrics
    lengths = batch.lengths.float()
    metrics.update({
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
        "loss_tokens": int(pg_mask.sum().item()),
        "lr": scheduler.get_last_lr()[0],
        "time/update": t_update - t_collect,
        "time/step": t_update - t0,
        "time/elapsed": totals["elapsed"] + (t_update - t0),
    })
    totals["elapsed"] += t_update - t0
    logger.log(step, metrics)
    shown = range(min(cfg.logger.completions_per_step, batch.num_rows))
    logger.log_completions(step, [{
        "prompt": data.rows[i // G]["prompt"], "completion": batch.texts[i],
        "reference": str(data.rows[i // G]["answer"]), "reward": scores.view(-1)[i].item(),
        "finish_reason": batch.finish_reason[i],
    } for i in shown])
    return metrics


def update_policy(step, cfg, batch, advantages, mask, model, ref_model, optimizer, scheduler,
                  micro_filters=None, reg_mask=None) -> Dict[str, float]:
    """``mu`` passes x mini-batches (whole groups, one optimizer step each) x micro-batches.

    ``micro_filters``: token filters applied per micro-batch (the 80/20 official code's scope);
    their masks are computed before the mini-batch's normalisers so that accumulation is exact.
    ``mask`` [N, T] is the policy-gradient loss mask; ``reg_mask`` [N, T] (default ``mask``) is the
    one the KL and entropy terms are averaged over: the 80/20 paper masks the policy loss only.
    """
    from drox.filters.base import FILTERS
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
    reg_mask = mask if reg_mask is None else reg_mask
    model.train()
    sums: Dict[str, float] = {}
    count = 0
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
    for epoch in range(t.mu):
        # groups are shuffled between passes (seeded), never split across mini-batches
        order = torch.randperm(Q, generator=gen) if epoch > 0 else torch.arange(Q)
        for group_ids in order.chunk(t.mini_batches):
            rows = (group_ids[:, None] * G + torch.arange(G)[None, :]).flatten()  # [n_mb]
            micros = list(rows.chunk(t.grad_accum))
            mb_mask = mask
            if micro_filters:  # recomputed from the batch mask for every pass, never compounded
                mb_mask = mask.clone()
                for name, opts in micro_filters.items():
                    for micro in micros:
                        mb_mask[micro], _ = FILTERS[name].fn(batch.entropies[micro], mb_mask[micro], opts)
            norms = algos.loss_normalisers(mb_mask[rows])
            reg_norms = algos.loss_normalisers(reg_mask[rows])
            optimizer.zero_grad(set_to_none=True)
            for micro in micros:
                with autocast:
                    logprobs, entropy = response_logprobs(
                        model, batch.prompt_ids[micro], batch.prompt_mask[micro], batch.response_ids[micro],
                        batch.response_mask[micro], batch.temperature, with_entropy=t.entropy_coef > 0)
                m = mb_mask[micro].to(device)
                m_reg = reg_mask[micro].to(device)
                loss, stats = algos.policy_loss(
                    logprobs.float(), old_logprobs[micro].to(device), advantages[micro].to(device), m,
                    clip_low=t.clip_low, clip_high=t.clip_high, agg=t.loss_agg, max_len=max_len, **norms)
                stats["pg_loss"] = loss.item()
                if ref_logprobs is not None:
                    kl = algos.kl_penalty(logprobs.float(), ref_logprobs[micro].to(device), t.kl_estimator)
                    kl_loss = algos.agg_loss(kl, m_reg, t.loss_agg, max_len=max_len, **reg_norms)
                    loss = loss + t.kl_coef * kl_loss
                    stats["kl"] = kl_loss.item()
                if entropy is not None:
                    ent_loss = algos.agg_loss(entropy.float(), m_reg, t.loss_agg, max_len=max_len, **reg_norms)
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
    atomic_write_jsonl(out / "samples.jsonl", records)
    logger.log(step, {k: v for k, v in summary.items() if isinstance(v, (int, float))}, prefix="eval")
    console.print(f"eval at step {step}:")
    console.print(format_table(summary, ks))
    return summary
