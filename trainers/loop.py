"""The reference single-process trainer: GRPO and its relatives, on CPU or one GPU.

:func:`run_training` sets up (policy, frozen reference, engine, optimizer, prompt sampler, resume; trainers/setup.py)
and then runs :func:`train_step` for every step. This file is the one place that orders the components; every
component comes from the :class:`~drox.pipeline.Pipeline` built (and validated) once before anything loads, and
none is named here (drox.components lists the extension points). One training step, top to bottom:

0. :func:`enter_stage` (with ``trainer.srl_steps``: SRL's step-wise rows and reward, then RLVR's whole problems)
   and :func:`before_step`: components' ``before_step`` hooks (DRO's offline query-filtering rounds, which restrict
   the prompts the sampler draws from); their sampling counts in ``time/elapsed`` and ``samples_seen``;
1. :func:`draw_prompts`: Q prompts (seeded epochs of permutations; the cursor is checkpointed);
2. rollout, :func:`generate`: the pipeline's rollout shape samples G rollouts per prompt with the engine (flat: G
   independent completions; tree: Tree-GRPO's leaves; episodes: policy turns and an environment's replies, which
   ``batch.action_mask`` marks), with the behaviour log-probs the engine computed while sampling (recomputed by the
   trainer where the engine is not its own model, :func:`~drox.trainers.state.with_trainer_logprobs`);
3. score, :func:`score`: gates judge each rollout, every reward source scores it (weighted sum, plus the per-source
   table the multi-objective combiners need), the gates' verdicts are applied and the group filters keep or drop
   each query. While a refill filter (DAPO dynamic sampling) is short of kept groups, steps 1-3 repeat
   (:func:`collect`);
4. advantages, :func:`advantages`: the registered estimator's group baseline (or a multi-objective combiner),
   broadcast to tokens, plus the reward-to-go of dense scores; then shape: each enabled advantage shaper (VERL's
   hidden-state bonus), whose state is carried across steps and checkpointed;
5. masks, :func:`loss_masks`: the tokens the loss sees (the policy's tokens of valid rollouts; optionally minus
   truncated rollouts; token filters such as the 80/20 entropy mask narrow the policy-gradient term);
6. objective: the registered update (``trainer.objective``: the policy-gradient loss, trainers/objectives.py, or
   RLSF's DPO, trainers/preference.py); it steps the optimizer and tells the engine the weights changed;
7. log, :func:`log_step`: metrics -> metrics.jsonl (+ W&B) and a few completions; :func:`run_training` then
   checkpoints and evaluates when due, and stops early once ``trainer.time_budget`` seconds of training are
   spent (arms compared at equal wall time), or at the first step boundary after SIGTERM/SIGUSR1, with a
   checkpoint (trainers/preemption.py).

Simplifications, stated honestly: one process; packing only within a group (its prompt and responses);
with ``rollout.backend=hf`` the policy that samples is the policy being trained, so with ``mu=1`` and one
mini-batch the ratio is 1 up to the numerical difference between KV-cached incremental decoding and a full
forward pass; pi_old is the behaviour policy of the step. With ``rollout.backend=vllm`` a colocated vLLM engine
holds a copy of the weights, refreshed after every optimizer step (rollout/vllm_engine.py).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from drox.atomic import atomic_write_text
from drox.config import check_environment
from drox.errors import ConfigError, check_finite
from drox.evaluation.runner import load_judge
from drox.filters.base import RoundEnv
from drox.gates.base import accepted, apply_gates
from drox.masked_stats import masked_mean
from drox.models.loading import resolve_device
from drox.pipeline import Pipeline, build_pipeline
from drox.rewards.base import score as score_sources
from drox.rollout.base import RolloutBatch, build_engine
from drox.tasks import build_task
from drox.trainers import algos
from drox.trainers.checkpoint import resumable_checkpoint, save_checkpoint
from drox.trainers.evals import compare_table, run_eval
from drox.trainers.metrics import MetricsLogger
from drox.trainers.multiobj import combine_objectives
from drox.trainers.preemption import Preempted, PreemptionFlag, preemption_signals
from drox.trainers.progress import describe_run, progress_line
from drox.trainers.run_folder import append_resume_record, claim_run_dir
from drox.trainers.sampler import PromptSampler
from drox.trainers.setup import FrozenReference, build_scheduler, describe_sizes, load_for_training, restore, seed_everything
from drox.trainers.state import (Collected, Trainer, TrainerSampling, TrainingStage, budget_spent,  # noqa: F401
                                 effective_rank_metrics, merge_collected, rollout_seed, stage_of, training_stages,
                                 with_trainer_logprobs)

# ------------------------------------------------------------------------------------------------ the run


def run_training(cfg: DictConfig, run_dir: str | Path, progress: bool = True,
                 pipeline: Optional[Pipeline] = None, resume_overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Train per ``cfg``, writing everything under ``run_dir``; returns the last step's metrics.

    ``pipeline``: the components, from :func:`drox.pipeline.build_pipeline` (which validates ``cfg``
    completely); built here when not given, before anything loads. ``resume_overrides``: the command line of a
    ``--resume``, recorded in ``RUN/resumes.jsonl``.
    """
    pipeline = pipeline if pipeline is not None else build_pipeline(cfg)
    check_environment(cfg)  # a device or backend this machine lacks: one line, before any output exists
    # one writer per folder: the lock is taken before anything is written and held until the run ends; SIGTERM
    # and SIGUSR1 stop the run at the next step boundary with a checkpoint (trainers/preemption.py)
    with claim_run_dir(Path(run_dir), resume=bool(cfg.resume), overwrite=bool(cfg.get("overwrite", False))), \
            preemption_signals() as preempt:
        return _train_in_claimed(cfg, Path(run_dir), progress, pipeline, preempt, resume_overrides)


def _train_in_claimed(cfg: DictConfig, run_dir: Path, progress: bool, pipeline: Pipeline,
                      preempt: PreemptionFlag, resume_overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """:func:`run_training` once ``run_dir`` is this process's."""
    console = Console()
    t = cfg.trainer
    ckpt_root = run_dir / "checkpoints"
    resume_from, damaged = resumable_checkpoint(ckpt_root) if cfg.resume else (None, [])
    for folder, why in damaged:
        if resume_from is None:
            raise ConfigError(f"--resume: {folder} is damaged ({why}) and no earlier checkpoint is whole; remove "
                              f"{ckpt_root} to start again from step 0")
        console.print(f"[yellow]checkpoint {folder.name} is damaged ({why}); resuming from {resume_from.name} "
                      f"instead (remove {folder} to silence this)", highlight=False, soft_wrap=True)
    if cfg.resume and resume_from is None:
        console.print(f"[yellow]resume=true but {ckpt_root} holds no complete checkpoint; starting from step 0",
                      highlight=False, soft_wrap=True)
    if cfg.resume:  # each resume is recorded beside the config it goes on with
        append_resume_record(run_dir, int(resume_from.name.split("-")[1]) if resume_from is not None else 0,
                             resume_overrides)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    stages = training_stages(cfg, build_task(cfg.task, split="train"), pipeline)  # one, or SRL then RLVR
    eval_task = build_task(cfg.task, split=cfg.eval.split) if t.eval_every > 0 else None
    model, tokenizer = load_for_training(cfg, device, resume_from)
    reference = FrozenReference(cfg.model, device)
    ref_model = reference() if pipeline.needs_reference else None  # only when the objective needs it
    engine = build_engine(cfg.rollout, model, tokenizer, cfg.model, pipeline.engine.opts)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
                                  fused=bool(t.fused_optimizer))
    scheduler = build_scheduler(optimizer, t, t.steps * t.mu * t.mini_batches)
    trainer = Trainer(cfg=cfg, pipeline=stages[0].pipeline, task=stages[0].task, model=model, tokenizer=tokenizer,
                      engine=engine, optimizer=optimizer, scheduler=scheduler,
                      sampler=PromptSampler(len(stages[0].task.dataset), cfg.seed),  # a resume replaces its state
                      reference=reference, ref_model=ref_model, logger=None, console=console,
                      # cumulative rollouts generated (refills and offline rounds included) and training wall-clock
                      totals={"samples_seen": 0, "elapsed": 0.0})
    start_step = restore(trainer, resume_from) if resume_from is not None else 0
    stage = stage_of(stages, start_step)  # the stage of the last step done (the first at step 0)
    trainer.task, trainer.pipeline = stage.task, stage.pipeline
    console.print(describe_run(cfg, pipeline, run_dir), highlight=False, soft_wrap=True)
    console.print(describe_sizes(cfg, pipeline), highlight=False)
    trainer.logger = logger = MetricsLogger(run_dir, cfg.logger, OmegaConf.to_container(cfg, resolve=True),
                                            resume_step=start_step, resume=bool(cfg.resume))
    metrics: Dict[str, Any] = {}
    evals: Dict[int, Dict[str, Any]] = {}
    judge = load_judge(cfg, device) if eval_task is not None and eval_task.verifier is None else None

    def evaluate_now(step: int) -> Dict[str, Any]:
        return run_eval(trainer, eval_task, run_dir, step, judge)

    if eval_task is not None and start_step == 0 and cfg.eval.before_training:
        evals[0] = evaluate_now(0)
    stop_if_preempted(trainer, preempt, start_step, saved=True, run_dir=run_dir)  # a signal during the set-up

    step_times: List[float] = []
    columns = [TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}")]
    try:
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            job = bar.add_task("train", total=t.steps, completed=start_step, info="")
            for step in range(start_step + 1, t.steps + 1):
                enter_stage(trainer, stages, step)
                before_step(trainer, step - 1)
                metrics = train_step(trainer, step)
                bar.update(job, advance=1, info=(f"reward {metrics['reward/mean']:.3f}  "
                                                 f"acc {metrics.get('accuracy', float('nan')):.3f}  "
                                                 f"{metrics['time/step']:.1f}s/step"))
                if not (progress and console.is_terminal):  # a log file: one plain line per step
                    step_times.append(metrics["time/step"])
                    console.print(progress_line(step, t.steps, metrics, sum(step_times) / len(step_times),
                                                group_filters=bool(pipeline.group_filters)), highlight=False)
                last = step == t.steps or bool(metrics.get("time/budget_spent"))  # trainer.time_budget ends it early
                saved = t.checkpoint != "none" and bool(last or (t.save_every and step % t.save_every == 0))
                if saved:
                    save_checkpoint(ckpt_root, step, model, tokenizer, trainer.checkpoint_state(step),
                                    t.keep_checkpoints)
                if eval_task is not None and (step % t.eval_every == 0 or last):
                    evals[step] = evaluate_now(step)
                if not last:  # a preemption signal during the last step: the run ends as it would anyway
                    stop_if_preempted(trainer, preempt, step, saved=saved, run_dir=run_dir)
                if last:
                    if step < t.steps:
                        console.print(f"trainer.time_budget={t.time_budget:g} s spent after step {step} of {t.steps} "
                                      f"({trainer.totals['elapsed']:.0f} s of training)", highlight=False)
                    break
    finally:
        logger.close()
    final = max(evals, default=0)
    if 0 in evals and final > 0:
        console.print(compare_table(evals[0], evals[final], list(cfg.eval.pass_at_k), final, cfg.eval.split))
    console.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)
    return metrics


def stop_if_preempted(trainer: Trainer, preempt: PreemptionFlag, step: int, saved: bool, run_dir: Path) -> None:
    """After step ``step`` (0: none done yet) and its own checkpoint and evaluation: when a preemption signal has
    arrived, checkpoint the step (unless ``saved`` already did, or ``trainer.checkpoint=none``) and raise
    :class:`Preempted` with the one line to show."""
    if preempt.received is None:
        return
    t = trainer.cfg.trainer
    if step == 0:
        what = "no step was done, nothing to save; start the run again"
    elif t.checkpoint == "none":
        what = f"trainer.checkpoint=none, so steps 1-{step} are not saved"
    else:
        if not saved:
            save_checkpoint(run_dir / "checkpoints", step, trainer.model, trainer.tokenizer,
                            trainer.checkpoint_state(step), t.keep_checkpoints)
        what = f"checkpoint step-{step:06d} written; resume with drox train --resume {run_dir}"
    raise Preempted(f"received {preempt.received} at step {step}: {what}")


# ------------------------------------------------------------------------------------------------ 0. before the step


def enter_stage(trainer: Trainer, stages: List[TrainingStage], step: int) -> None:
    """At the first step of the next stage: its rows and reward sources, and a fresh prompt order over its rows
    (seeded as the first stage's; a resume at the boundary switches here too, so it matches an uninterrupted run)."""
    stage = stage_of(stages, step)
    if stage.task is trainer.task:
        return
    trainer.task, trainer.pipeline = stage.task, stage.pipeline
    trainer.sampler = PromptSampler(len(stage.task.dataset), trainer.cfg.seed)
    trainer.console.print(f"step {step}: {stage.name} stage begins ({len(stage.task.dataset)} training rows, rewards: "
                          f"{', '.join(stage.pipeline.rewards)})", highlight=False)


def before_step(trainer: Trainer, steps_done: int) -> None:
    """Run the ``before_step`` hooks of the configured components (DRO's offline rounds, v1 §4.2.2).

    A hook that returns ``(kept indices, stats)`` restricts the prompts the sampler draws from; its stats are
    logged under the step it precedes (so a resume from checkpoint ``steps_done`` drops and redoes it), with the
    round's cost: its seconds and rollouts count in that step's ``time/elapsed`` and ``samples_seen``.
    """
    cfg = trainer.cfg
    for stage in trainer.pipeline.before_step:
        t0 = time.perf_counter()
        sampling = TrainerSampling(trainer)  # counts the rollouts the round samples
        env = RoundEnv(engine=sampling, make_ctx=lambda batch, rows: trainer.scoring_context(batch, rows, steps_done),
                       dataset=trainer.task.dataset, max_new_tokens=cfg.rollout.max_new_tokens,
                       temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                       seed=rollout_seed(cfg.seed, steps_done, 999),  # the round's own sampling seed
                       previous_keep=trainer.sampler.indices)
        result = stage.meta["before_step"](env, stage.opts, steps_done)
        seconds = time.perf_counter() - t0
        trainer.totals["elapsed"] += seconds
        trainer.totals["samples_seen"] += sampling.rollouts
        if result is None:
            continue
        kept, stats = result
        stats = {**stats, "seconds": seconds}
        trainer.logger.log(steps_done + 1, {f"round/{k}": v for k, v in stats.items()}, prefix=f"filter/{stage.name}")
        trainer.console.print(f"{stage.name} filter round after {steps_done} steps: kept {len(kept)}/"
                              f"{len(trainer.task.dataset)} prompts")
        trainer.sampler = PromptSampler(len(trainer.task.dataset), cfg.seed + steps_done, indices=kept)


# ------------------------------------------------------------------------------------------------ one step


def train_step(trainer: Trainer, step: int) -> Dict[str, Any]:
    """Steps 1-7 of the module docstring for training step ``step``; returns its metrics."""
    cfg, t, pipeline = trainer.cfg, trainer.cfg.trainer, trainer.pipeline
    t0 = time.perf_counter()
    metrics: Dict[str, Any] = {}

    data = collect(trainer, step, metrics)  # 1-3 rollout -> score, repeated while a refill filter asks
    t_collect = time.perf_counter()
    trainer.totals["samples_seen"] += int(metrics["filter/gen_batches"]) * t.prompts_per_step * t.samples_per_prompt
    metrics["samples_seen"] = trainer.totals["samples_seen"]
    # cumulative sampling cost (Tree-GRPO vs flat GRPO at equal tokens generated); .get: checkpoints made before it
    trainer.totals["tokens_generated"] = trainer.totals.get("tokens_generated", 0) + metrics["rollout/tokens_generated"]
    metrics["rollout/tokens_generated_total"] = trainer.totals["tokens_generated"]
    if data is None:  # every group was filtered out: nothing to learn from at this step
        trainer.totals["elapsed"] += t_collect - t0
        metrics.update({"skipped": 1.0, "lr": trainer.scheduler.get_last_lr()[0], "time/update": 0.0,
                        "time/step": t_collect - t0, "time/elapsed": trainer.totals["elapsed"]})
        metrics.update(budget_spent(trainer))
        trainer.logger.log(step, metrics)
        return metrics

    if t.effective_rank:  # a metric of what was sampled, read before the update changes the policy
        metrics.update(effective_rank_metrics(trainer.model, data.batch))
    seq_adv, token_adv = advantages(pipeline, cfg, data, step, metrics)  # 4 advantages
    for shaper in pipeline.shapers:  # 4 shape (VERL), from what was sampled, before the update
        seq_adv, token_adv, trainer.shaper_state[shaper.name], shaped = shaper.fn(
            trainer, step, data, seq_adv, token_adv, shaper.opts, trainer.shaper_state.get(shaper.name))
        metrics.update(shaped)
    mask, pg_mask = loss_masks(pipeline, cfg, data, metrics)  # 5 masks
    objective = pipeline.objective  # 6 the update: it steps the optimizer
    metrics.update(objective.fn(trainer, step, data, token_adv, mask, pg_mask, objective.opts))
    t_update = time.perf_counter()
    log_step(trainer, step, data, seq_adv, pg_mask, metrics, t0, t_collect, t_update)  # 7 log
    return metrics


# ------------------------------------------------------------------------------------------------ 1-3. collect


def draw_prompts(trainer: Trainer) -> List[Dict[str, Any]]:
    """Step 1: the next Q training rows."""
    idx = trainer.sampler.next(trainer.cfg.trainer.prompts_per_step)
    return trainer.task.dataset.select(idx).to_list()


def generate(trainer: Trainer, rows: List[Dict[str, Any]], step: int, gen_batch: int) -> Tuple[RolloutBatch, int]:
    """Step 2: ``(batch, tokens sampled)``: G rollouts per prompt in the pipeline's rollout shape, with behaviour
    log-probs and entropies (the trainer's own, :func:`with_trainer_logprobs`)."""
    shape, cfg = trainer.pipeline.shape, trainer.cfg
    batch, n_tokens = shape.fn(trainer.engine, trainer.tokenizer, trainer.task, rows, cfg.trainer.samples_per_prompt,
                               cfg.rollout, rollout_seed(cfg.seed, step, gen_batch))
    return with_trainer_logprobs(trainer, batch), n_tokens


def score(trainer: Trainer, batch: RolloutBatch, rows, step: int, gen_batch: int):
    """Step 3: gates, reward sources, gate verdicts, group filters.

    Returns ``(Collected | None, step metrics)``: the kept groups of this generation batch (None when none
    is kept) and its metrics (reward per source, accuracy, gate and filter statistics).
    """
    pipeline = trainer.pipeline
    Q, G = batch.num_groups, batch.group_size
    ctx = trainer.scoring_context(batch, rows, step, gen_batch)
    # gates judge the text, so they run first: sources can then ignore rejected rollouts (R3's sigma)
    verdicts = {g.name: g.fn(ctx, g.opts) for g in pipeline.gates}
    ctx.valid = accepted(verdicts)  # [Q, G] or None
    combined = score_sources(ctx, pipeline.rewards)
    scores = combined.seq  # [Q, G]
    table, weights, names = combined.table, combined.weights, list(combined.per_source)  # [Q, G, K]
    metrics = dict(combined.metrics)
    check_finite("rewards", scores, step, source="combined")
    metrics["reward/mean"] = scores.mean().item()
    metrics["reward/std"] = scores.std().item() if scores.numel() > 1 else 0.0
    if trainer.task.verifier is not None:
        metrics["accuracy"] = float(np.mean(ctx.verify().correct))

    # the gates' verdicts: exclude (or floor) rejected rollouts; a gate never becomes reward
    scores, table, valid, gate_stats = apply_gates(verdicts, pipeline.gate_on_fail, scores, table)
    metrics.update(gate_stats)
    keep = valid.any(dim=1)  # [Q]
    # group filters: which queries are worth a gradient
    for f in pipeline.group_filters:
        decision = f.fn(ctx, replace(combined, seq=scores), valid, f.opts)
        keep &= decision.keep.bool()
        metrics.update({f"filter/{f.name}/{k}": v for k, v in decision.stats.items()})
    metrics["filter/kept_frac"] = keep.float().mean().item()
    if not keep.any():
        return None, metrics
    return Collected(
        batch=batch.select_groups(keep), rows=[row for row, k in zip(rows, keep.tolist()) if k], scores=scores[keep],
        token=combined.token[keep] if combined.token is not None else None,
        token_mask=combined.token_mask[keep] if combined.token_mask is not None else None,
        table=table[keep], weights=weights, names=names, valid=valid[keep]), metrics


def collect(trainer: Trainer, step: int, metrics: Dict[str, Any]) -> Optional[Collected]:
    """Steps 1-3, repeated while a refill filter (DAPO dynamic sampling) is short of kept groups.

    Metrics of every sampled rollout (reward, accuracy, per-source means) are averaged over all
    generation batches; ``filter/*`` and ``gate/*`` record what was kept.
    """
    pipeline = trainer.pipeline
    Q = trainer.cfg.trainer.prompts_per_step
    parts: List[Collected] = []
    sums: Dict[str, float] = {}
    kept_groups, gen_batches, t_gen, t_score = 0, 0, 0.0, 0.0
    tokens_generated = 0
    while True:
        t0 = time.perf_counter()
        rows = draw_prompts(trainer)
        batch, n_tokens = generate(trainer, rows, step, gen_batches)
        tokens_generated += n_tokens
        gen_batches += 1
        t1 = time.perf_counter()
        part, step_metrics = score(trainer, batch, rows, step, gen_batches - 1)
        t_score += time.perf_counter() - t1
        t_gen += t1 - t0
        for k, v in step_metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        if part is not None:
            parts.append(part)
            kept_groups += part.batch.num_groups
        if not pipeline.refill or kept_groups >= Q or gen_batches >= pipeline.max_gen_batches:
            break

    metrics.update({k: v / gen_batches for k, v in sums.items()})
    metrics.update({"filter/gen_batches": gen_batches, "filter/kept_groups": min(kept_groups, Q),
                    "time/generate": t_gen, "time/score": t_score,
                    "rollout/tokens_generated": tokens_generated})  # every generation batch's, kept or not
    if pipeline.refill and kept_groups < Q:
        Console(stderr=True).print(
            f"[yellow]step {step}: {'/'.join(pipeline.refill)} kept {kept_groups}/{Q} groups after max_gen_batches="
            f"{pipeline.max_gen_batches} generation batches; training on what was kept", highlight=False)
    if not parts:
        return None
    return merge_collected(parts, Q, trainer.engine.pad_id)


# ------------------------------------------------------------------------------------------------ 4. advantages


def advantages(pipeline: Pipeline, cfg, data: Collected, step: int, metrics: Dict[str, Any]):
    """Step 4: ``(seq_adv [Qk, G], token_adv [N, T])``.

    Without a combiner (``combine=sum``) or with a single source: the weighted sum of the sources' scores, then the
    registered advantage estimator (with its options; Tree-GRPO's also gets each rollout's tree); otherwise the
    registered multi-objective combiner over the per-source table. Dense scores add their reward-to-go
    (DeepSeekMath process supervision, arXiv 2402.03300 §4.1.3) or, with ``trainer.advantage.dense=per_token``, each
    score at its own token (on-policy distillation).
    """
    a = cfg.trainer.advantage
    if pipeline.combiner is not None and data.table.shape[-1] > 1:
        seq_adv, combine_stats = combine_objectives(data.table, data.weights, pipeline.combiner.name, eps=a.eps,
                                                    valid=data.valid, names=data.names)  # [Qk, G]
        metrics.update({f"advantage/{k}": v for k, v in combine_stats.items()})
    else:
        tree_ids = data.batch.tree_ids  # [N] Tree-GRPO rollouts (rollout.tree), else None
        seq_adv = algos.compute_advantages(data.scores, pipeline.estimator.name, eps=a.eps, valid=data.valid,
                                           tree_ids=None if tree_ids is None else tree_ids.view_as(data.scores),
                                           opts=pipeline.estimator.opts, step=step, total_steps=cfg.trainer.steps)
        stats = pipeline.estimator.meta.get("stats")  # e.g. nsr's A-NSR weights λ(t), β(t)
        if stats is not None:
            metrics.update({f"advantage/{pipeline.estimator.name}/{k}": v for k, v in
                            stats(data.scores, data.valid, pipeline.estimator.opts, step, cfg.trainer.steps).items()})
    token_adv = algos.token_advantages(seq_adv, data.token, data.batch.response_mask,
                                       group_size=data.batch.group_size, eps=a.eps, reward_mask=data.token_mask,
                                       valid=data.valid, dense=a.dense)  # [N, T]
    check_finite("advantages", token_adv, step)
    return seq_adv, token_adv


# ------------------------------------------------------------------------------------------------ 5. loss masks


def loss_masks(pipeline: Pipeline, cfg, data: Collected, metrics: Dict[str, Any]):
    """Step 5: ``(mask [N, T], pg_mask [N, T])``.

    ``mask``: the policy's tokens of accepted rollouts (``batch.policy_mask``: an episode's environment tokens never
    count), minus truncated rollouts with ``trainer.mask_truncated`` (the KL and entropy terms average over it);
    ``pg_mask``: ``mask`` narrowed by the batch-scope token filters (the policy-gradient term only, as the 80/20
    paper masks it; micro-batch-scope filters narrow it inside :func:`drox.trainers.objectives.update_policy`), which thus see only the
    policy's tokens too.
    """
    batch = data.batch
    mask = batch.policy_mask * data.valid.view(-1, 1).float()
    if cfg.trainer.mask_truncated:
        mask[batch.truncated] = 0.0
    pg_mask = mask
    for f in pipeline.batch_token_filters:  # e.g. the 80/20 entropy mask over the whole batch
        pg_mask, stats = f.fn(batch.entropies, pg_mask, f.opts)
        metrics.update({f"filter/{f.name}/{k}": v for k, v in stats.items()})
    return mask, pg_mask


# ------------------------------------------------------------------------------------------------ 6. update


# ------------------------------------------------------------------------------------------------ 7. log


def log_step(trainer: Trainer, step: int, data: Collected, seq_adv: torch.Tensor, pg_mask: torch.Tensor,
             metrics: Dict[str, Any], t0: float, t_collect: float, t_update: float) -> None:
    """Step 7: the step's metrics to metrics.jsonl (+ W&B) and a few completions to completions.jsonl."""
    batch, G = data.batch, data.batch.group_size
    lengths = batch.lengths.float()
    metrics.update({
        "advantage/mean": seq_adv.mean().item(),
        "advantage/std": seq_adv.std().item() if seq_adv.numel() > 1 else 0.0,
        "advantage/abs_max": seq_adv.abs().max().item(),
        "advantage/zero_groups": float((seq_adv.abs().sum(-1) == 0).float().mean().item()),
    })
    metrics.update({
        "entropy": masked_mean(batch.entropies, batch.policy_mask).item(),
        "response_length/mean": lengths.mean().item(),
        "response_length/max": lengths.max().item(),
        "truncated_frac": batch.truncated.float().mean().item(),
        "tokens": int(batch.policy_mask.sum().item()),  # sampled tokens (an episode's environment tokens excluded)
        "loss_tokens": int(pg_mask.sum().item()),
        "lr": trainer.scheduler.get_last_lr()[0],
        "time/update": t_update - t_collect,
        "time/step": t_update - t0,
        "time/elapsed": trainer.totals["elapsed"] + (t_update - t0),
    })
    trainer.totals["elapsed"] += t_update - t0
    metrics.update(budget_spent(trainer))
    trainer.logger.log(step, metrics)
    shown = range(min(trainer.cfg.logger.completions_per_step, batch.num_rows))
    trainer.logger.log_completions(step, [{
        "prompt": data.rows[i // G]["prompt"], "completion": batch.texts[i],
        "reference": str(data.rows[i // G]["answer"]), "reward": data.scores.view(-1)[i].item(),
        "finish_reason": batch.finish_reason[i],
    } for i in shown])
