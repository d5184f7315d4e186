"""The reference single-process trainer: GRPO and its relatives, on CPU or one GPU.

:func:`run_training` sets up (policy, frozen reference, engine, optimizer, prompt sampler, resume) and
then runs :func:`train_step` for every step. One training step, top to bottom, one function per step:

0. :func:`enter_stage` (with ``trainer.srl_steps``: SRL's step-wise rows and reward, then RLVR's whole problems
   from step srl_steps + 1) and :func:`before_step`: components' ``before_step`` hooks run (DRO's offline
   query-filtering rounds, which restrict the prompts the sampler draws from);
1. :func:`draw_prompts`: Q prompts (seeded epochs of permutations; the cursor is checkpointed);
2. :func:`generate`: G completions each with the rollout engine, which also returns the behaviour
   log-probs it computed while sampling (no second forward pass for pi_old, unless the engine is not the
   trainer's own model: vLLM or another precision, :func:`with_trainer_logprobs`); with ``rollout.tree.enabled``
   the G completions are the leaves of Tree-GRPO's trees (rollout/tree.py); for a task with an environment
   (``task=twenty_questions``) they are whole episodes of policy turns and the environment's replies
   (rollout/multiturn.py), whose environment tokens ``batch.action_mask`` marks. ``rollout/tokens_generated`` logs
   the tokens sampled (a tree's shared prefixes once, an episode's policy tokens only);
3. :func:`score`: gates judge each rollout, every reward source scores it (weighted sum, plus the
   per-source table the multi-objective combiners need), the gates' verdicts are applied and the group
   filters keep or drop each query. While a refill filter (DAPO dynamic sampling) is short of kept
   groups, steps 1-3 repeat; :func:`collect` runs that loop and merges what was kept;
4. :func:`advantages`: the group baseline of ``trainer.advantage.estimator`` (or a multi-objective
   combiner), broadcast to tokens, plus the reward-to-go of dense scores (with ``trainer.advantage.verl_shaping``,
   plus VERL's bonus from the hidden-state rank dynamics of each response, :func:`verl_shaping`);
5. :func:`loss_masks`: the tokens the loss sees (the policy's tokens of valid rollouts, never an episode's
   environment tokens; optionally minus truncated rollouts; token filters such as the 80/20 entropy mask narrow the
   policy-gradient term);
6. :func:`update_policy`: ``mu`` passes over the batch, each split into mini-batches of whole groups (one
   optimizer step each) and micro-batches (gradient accumulation); the registered policy loss against
   the behaviour log-probs, plus the KL to the frozen reference and the entropy bonus. Each group's prompt
   is encoded once per pass (``trainer.share_prompts``); when another engine or precision sampled (vLLM,
   ``rollout.dtype``), step 2 recomputed pi_old with the trainer and the update weights each token by the
   truncated importance weight (``trainer.tis_cap``); the engine is then told the weights changed.
   With ``trainer.objective=dpo`` (RLSF) :func:`update_preference` replaces it: preference pairs from each
   group's scores and the DPO loss against the frozen initial policy;
7. :func:`log_step`: metrics -> metrics.jsonl (+ W&B) and a few completions; :func:`run_training` then
   checkpoints and evaluates when due, and stops early once ``trainer.time_budget`` seconds of training are
   spent (arms compared at equal wall time). (With ``trainer.effective_rank`` the hidden-state effective rank of the
   step's responses is measured between steps 3 and 4, under the policy that sampled them.)

Every component comes from the :class:`~drox.pipeline.Pipeline` built (and validated) once before
anything loads; this file names no component.

Simplifications, stated honestly: one process; packing only within a group (its prompt and responses);
with ``rollout.backend=hf`` the policy that samples is the policy being trained, so with ``mu=1`` and one
mini-batch the ratio is 1 up to the numerical difference between KV-cached incremental decoding and a full
forward pass; pi_old is the behaviour policy of the step. With ``rollout.backend=vllm`` a colocated vLLM engine
holds a copy of the weights, refreshed after every optimizer step (rollout/vllm_engine.py).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from drox.config import MULTITURN_TASKS, check_environment
from drox.errors import ConfigError, check_finite, check_weights_finite
from drox.evaluation.report import format_table
from drox.evaluation.runner import evaluate_policy, load_judge, write_eval_folder
from drox.filters.base import RoundEnv
from drox.gates.base import accepted, apply_gates
from drox.masked_stats import masked_mean
from drox.models.effective_rank import response_effective_ranks, response_rank_dynamics
from drox.models.forward import response_logprobs
from drox.models.loading import align_weights, load_policy, resolve_device
from drox.pipeline import Pipeline, build_pipeline
from drox.rewards.base import ScoringContext, load_scoring_state, scoring_state_dict
from drox.rewards.base import score as score_sources
from drox.rollout.base import RolloutBatch, concat_batches
from drox.rollout.hf import build_engine
from drox.rollout.multiturn import play_episodes
from drox.rollout.tree import tree_rollouts
from drox.tasks import build_task
from drox.tasks.srl import expand_steps
from drox.trainers import algos, preference
from drox.trainers.checkpoint import load_trainer_state, resumable_checkpoint, rng_state, save_checkpoint, set_rng_state
from drox.trainers.metrics import MetricsLogger
from drox.trainers.multiobj import SUM, combine_objectives
from drox.trainers.progress import describe_run, progress_line
from drox.trainers.run_folder import claim_run_dir
from drox.trainers.sampler import PromptSampler
from drox.atomic import atomic_write_text

# ------------------------------------------------------------------------------------------------ set-up


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def describe_sizes(cfg) -> str:
    """The batch semantics in one paragraph (the most common confusion in TRL/verl issues)."""
    t = cfg.trainer
    rows = t.prompts_per_step * t.samples_per_prompt
    per_mb = rows // t.mini_batches
    tree = cfg.rollout.tree
    shape = (f" (Tree-GRPO: {tree.trees} trees x (1 + {tree.rounds} rounds x {tree.branches} branches) leaves, "
             f"steps end at {tree.separator!r})" if tree.enabled else "")
    cap = cfg.rollout.max_new_tokens
    if cfg.task.name in MULTITURN_TASKS:
        m = cfg.rollout.multiturn
        shape, cap = f" (episodes of <= {m.max_turns} turns of <= {m.turn_tokens} tokens)", m.max_turns * m.turn_tokens
    return (
        f"per step: Q={t.prompts_per_step} prompts x G={t.samples_per_prompt} samples{shape} = {rows} rollouts "
        f"(<= {rows * cap} completion tokens); update: mu={t.mu} pass(es) x "
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
    from peft import LoraConfig, get_peft_model  # optional dependency (drox[peft]): imported only for LoRA runs

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
            from peft import PeftModel  # optional dependency (drox[peft])

            model = PeftModel.from_pretrained(model, str(resume_from), is_trainable=True)
            if cfg.model.get("aligned_weights", True):
                align_weights(model)  # the adapters were read from a file too
        else:
            model = apply_lora(model, cfg.trainer)
    if cfg.trainer.gradient_checkpointing:
        # transformers 5.2x renamed it; verl-compatible releases (5.5-5.10) only know the old name
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    return model, tokenizer


@dataclass
class Trainer:
    """Everything a training step reads or advances (built once by :func:`run_training`)."""

    cfg: DictConfig
    pipeline: Pipeline
    task: Any  # drox.tasks.Task, the training split
    model: Any  # the policy being trained
    tokenizer: Any
    engine: Any  # rollout engine sampling from ``model``
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: PromptSampler
    reference: FrozenReference  # the frozen initial policy (KL term, reward sources' reference)
    ref_model: Any  # reference() when the KL term needs it, else None
    logger: MetricsLogger
    console: Console
    scoring_state: Dict[str, Any] = field(default_factory=dict)  # sources' state across steps (lagged policy)
    totals: Dict[str, float] = field(default_factory=lambda: {"samples_seen": 0, "elapsed": 0.0})
    verl_baseline: Optional[torch.Tensor] = None  # [3] VERL's running baselines of (ERA, ERV, ER) (verl_shaping)

    def scoring_context(self, batch, rows, step: int, gen_batch: int = 0) -> ScoringContext:
        return ScoringContext(batch=batch, rows=rows, task=self.task, step=step, seed=self.cfg.seed,
                              policy=self.model, tokenizer=self.tokenizer, engine=self.engine,
                              state=self.scoring_state,
                              token_scorer=self.engine_scorer(),
                              gen_batch=gen_batch, reference=self.reference,
                              max_new_tokens=self.cfg.rollout.max_new_tokens,
                              reward_timeout=float(self.cfg.trainer.get("reward_timeout", 0.0)),
                              reward_on_timeout=str(self.cfg.trainer.get("reward_on_timeout", "stop")))

    def engine_scorer(self):
        """R3's teacher-forced pass through the engine (vLLM's prompt log-probs) when configured, else None."""
        r = self.cfg.rollout
        return getattr(self.engine, "score_tokens", None) if r.backend == "vllm" and r.vllm.score_prompts else None

    def checkpoint_state(self, step: int) -> Dict[str, Any]:
        """Everything a resume needs besides the weights; the optimizer's moments only with checkpoint=full."""
        state = {"scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(), "rng": rng_state(),
                 "step": step, "totals": dict(self.totals), "scoring": scoring_state_dict(self.scoring_state)}
        if self.cfg.trainer.get("checkpoint", "full") == "full":
            state["optimizer"] = self.optimizer.state_dict()
        if self.verl_baseline is not None:
            state["verl_baseline"] = self.verl_baseline.clone()
        return state


def run_training(cfg: DictConfig, run_dir: str | Path, progress: bool = True,
                 pipeline: Optional[Pipeline] = None) -> Dict[str, Any]:
    """Train per ``cfg``, writing everything under ``run_dir``; returns the last step's metrics.

    ``pipeline``: the components, from :func:`drox.pipeline.build_pipeline` (which validates ``cfg``
    completely); built here when not given, before anything loads.
    """
    pipeline = pipeline if pipeline is not None else build_pipeline(cfg)
    check_environment(cfg)  # a device or backend this machine lacks: one line, before any output exists
    # one writer per folder: the lock is taken before anything is written and held until the run ends
    with claim_run_dir(Path(run_dir), resume=bool(cfg.resume), overwrite=bool(cfg.get("overwrite", False))):
        return _train_in_claimed(cfg, Path(run_dir), progress, pipeline)


def _train_in_claimed(cfg: DictConfig, run_dir: Path, progress: bool, pipeline: Pipeline) -> Dict[str, Any]:
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
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    stages = training_stages(cfg, build_task(cfg.task, split="train"), pipeline)  # one, or SRL then RLVR
    eval_task = build_task(cfg.task, split=cfg.eval.split) if t.eval_every > 0 else None
    model, tokenizer = load_for_training(cfg, device, resume_from)
    reference = FrozenReference(cfg.model, device)
    ref_model = reference() if t.kl_coef > 0 or t.objective == "dpo" else None  # only when a loss needs it
    engine = build_engine(cfg.rollout, model, tokenizer, cfg.model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
                                  fused=bool(t.fused_optimizer))
    scheduler = build_scheduler(optimizer, t, t.steps * t.mu * t.mini_batches)
    sampler = PromptSampler(len(stages[0].task.dataset), cfg.seed)  # a resume replaces its whole state

    start_step = 0
    scoring_state: Dict[str, Any] = {}
    verl_baseline = None  # VERL's running baselines (trainer.advantage.verl_shaping), restored on resume
    # cumulative rollouts generated (refills included) and training wall-clock, for steps/time-to-target
    totals = {"samples_seen": 0, "elapsed": 0.0}
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        else:
            console.print(f"[yellow]{resume_from.name} holds no optimizer state (trainer.checkpoint=weights): AdamW "
                          "restarts from zero moments, so this run will differ from an uninterrupted one",
                          highlight=False, soft_wrap=True)
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        scoring_state.update(load_scoring_state(state.get("scoring", {}), model))
        start_step = state["step"]
        totals.update(state.get("totals", {}))
        verl_baseline = state.get("verl_baseline")
        console.print(f"resumed from {resume_from} at step {start_step}")

    console.print(describe_run(cfg, pipeline, run_dir), highlight=False, soft_wrap=True)
    console.print(describe_sizes(cfg), highlight=False)
    logger = MetricsLogger(run_dir, cfg.logger, OmegaConf.to_container(cfg, resolve=True), resume_step=start_step,
                           resume=bool(cfg.resume))
    stage = stage_of(stages, start_step)  # the stage of the last step done (the first at step 0)
    trainer = Trainer(cfg=cfg, pipeline=stage.pipeline, task=stage.task, model=model, tokenizer=tokenizer, engine=engine,
                      optimizer=optimizer, scheduler=scheduler, sampler=sampler, reference=reference,
                      ref_model=ref_model, logger=logger, console=console, scoring_state=scoring_state,
                      totals=totals, verl_baseline=verl_baseline)
    metrics: Dict[str, Any] = {}
    evals: Dict[int, Dict[str, Any]] = {}
    judge = load_judge(cfg, device) if eval_task is not None and eval_task.verifier is None else None

    def evaluate_now(step: int) -> Dict[str, Any]:
        return run_eval(trainer, eval_task, run_dir, step, judge)

    if eval_task is not None and start_step == 0 and cfg.eval.before_training:
        evals[0] = evaluate_now(0)

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
                if t.checkpoint != "none" and (last or (t.save_every and step % t.save_every == 0)):
                    save_checkpoint(ckpt_root, step, model, tokenizer, trainer.checkpoint_state(step),
                                    t.keep_checkpoints)
                if eval_task is not None and (step % t.eval_every == 0 or last):
                    evals[step] = evaluate_now(step)
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


# ------------------------------------------------------------------------------------------------ 0. before the step


@dataclass
class TrainingStage:
    """Steps up to ``last`` of a run, with their own training rows and reward sources (``trainer.srl_steps``)."""

    name: str
    last: int
    task: Any
    pipeline: Pipeline


def training_stages(cfg, task, pipeline: Pipeline) -> List[TrainingStage]:
    """One stage of ``trainer.steps``; with ``trainer.srl_steps`` = n > 0, SRL then RLVR (SRL arXiv 2510.25992):
    steps 1..n on the expert's step-wise rows (tasks/srl.py) with the ``srl`` reward alone, then the whole problems
    with the configured rewards."""
    n, steps = int(cfg.trainer.srl_steps), int(cfg.trainer.steps)
    if n == 0:
        return [TrainingStage("rl", steps, task, pipeline)]
    return [TrainingStage("srl", n, expand_steps(task), replace(pipeline, rewards=pipeline.srl_rewards)),
            TrainingStage("rlvr", steps, task, pipeline)]


def stage_of(stages: List[TrainingStage], step: int) -> TrainingStage:
    """The stage training step ``step`` (1-based; 0 = before the first) belongs to."""
    return next(s for s in stages if max(step, 1) <= s.last)


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
    logged under the step it precedes (so a resume from checkpoint ``steps_done`` drops and redoes it).
    """
    cfg = trainer.cfg
    for stage in trainer.pipeline.before_step:
        seed = rollout_seed(cfg.seed, steps_done, 999)  # the round's own sampling seed
        env = RoundEnv(engine=TrainerSampling(trainer),
                       make_ctx=lambda batch, rows: trainer.scoring_context(batch, rows, steps_done),
                       dataset=trainer.task.dataset, max_new_tokens=cfg.rollout.max_new_tokens,
                       temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, seed=seed,
                       previous_keep=trainer.sampler.indices)
        result = stage.meta["before_step"](env, stage.opts, steps_done)
        if result is None:
            continue
        kept, stats = result
        trainer.logger.log(steps_done + 1, {f"round/{k}": v for k, v in stats.items()}, prefix=f"filter/{stage.name}")
        trainer.console.print(f"{stage.name} filter round after {steps_done} steps: kept {len(kept)}/"
                              f"{len(trainer.task.dataset)} prompts")
        trainer.sampler = PromptSampler(len(trainer.task.dataset), cfg.seed + steps_done, indices=kept)


# ------------------------------------------------------------------------------------------------ one step


def train_step(trainer: Trainer, step: int) -> Dict[str, Any]:
    """Steps 1-7 of the module docstring for training step ``step``; returns its metrics."""
    cfg, t = trainer.cfg, trainer.cfg.trainer
    t0 = time.perf_counter()
    metrics: Dict[str, Any] = {}

    data = collect(trainer, step, metrics)  # 1-3, repeated while a refill filter asks
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
    seq_adv, token_adv = advantages(cfg, data, step, metrics)  # 4
    if t.advantage.verl_shaping:  # VERL's bonus from the hidden states of what was sampled, before the update
        seq_adv, token_adv = verl_shaping(trainer, data, seq_adv, token_adv, step, metrics)
    mask, pg_mask = loss_masks(trainer.pipeline, cfg, data, metrics)  # 5
    if t.objective == "dpo":  # 6, RLSF: preference pairs from the group's scores, DPO instead of the PG loss
        metrics.update(update_preference(trainer, step, data, pg_mask))
    else:
        metrics.update(update_policy(trainer, step, data.batch, token_adv, pg_mask, reg_mask=mask))  # 6
    t_update = time.perf_counter()
    log_step(trainer, step, data, seq_adv, pg_mask, metrics, t0, t_collect, t_update)  # 7
    return metrics


# ------------------------------------------------------------------------------------------------ 1-3. collect


@dataclass
class Collected:
    """The groups a step trains on, after gates and group filters (Qk <= Q groups of G)."""

    batch: RolloutBatch  # Qk groups
    rows: List[Dict[str, Any]]  # Qk dataset rows
    scores: torch.Tensor  # [Qk, G] combined scores (after floor gating)
    token: Optional[torch.Tensor]  # [Qk, G, T] dense scores or None
    token_mask: Optional[torch.Tensor]  # [Qk, G, T] positions holding dense scores
    table: torch.Tensor  # [Qk, G, K] per-source scores (multi-objective combiners)
    weights: torch.Tensor  # [K]
    names: List[str]  # the K source names
    valid: torch.Tensor  # [Qk, G] bool, False = rejected by a gate (excluded from advantages and loss)


def rollout_seed(seed: int, step: int, gen_batch: int) -> int:
    """Sampling seed of generation batch ``gen_batch`` of ``step`` (independent of everything else)."""
    return (seed * 1_000_003 + step) * 1_000 + gen_batch


def draw_prompts(trainer: Trainer) -> List[Dict[str, Any]]:
    """Step 1: the next Q training rows."""
    idx = trainer.sampler.next(trainer.cfg.trainer.prompts_per_step)
    return trainer.task.dataset.select(idx).to_list()


def generate(trainer: Trainer, rows: List[Dict[str, Any]], step: int, gen_batch: int) -> Tuple[RolloutBatch, int]:
    """Step 2: ``(batch, tokens generated)``: G completions per prompt, with behaviour log-probs and entropies, and
    the number of tokens the engine sampled for them. With ``rollout.tree.enabled`` the G completions are the leaves
    of Tree-GRPO's trees (rollout/tree.py), whose shared prefixes were sampled, and are counted, once. For a task
    with an environment (``task.env``) they are episodes (rollout/multiturn.py), whose policy tokens are counted."""
    r = trainer.cfg.rollout
    prompts, G = [row["prompt"] for row in rows], trainer.cfg.trainer.samples_per_prompt
    seed = rollout_seed(trainer.cfg.seed, step, gen_batch)
    env = getattr(trainer.task, "env", None)
    if env is not None:
        episodes = play_episodes(trainer.engine, trainer.tokenizer, env, rows, G, max_turns=r.multiturn.max_turns,
                                 turn_tokens=r.multiturn.turn_tokens, temperature=r.temperature, top_p=r.top_p,
                                 seed=seed)
        batch, n_tokens = episodes.batch, episodes.tokens_generated
    elif r.tree.enabled:
        trees = tree_rollouts(trainer.engine, trainer.tokenizer, prompts, r.tree, max_new_tokens=r.max_new_tokens,
                              temperature=r.temperature, top_p=r.top_p, seed=seed)
        batch, n_tokens = trees.batch, trees.tokens_generated
    else:
        batch = trainer.engine.generate(prompts, G, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                        top_p=r.top_p, seed=seed)
        n_tokens = int(batch.response_mask.sum().item())
    return with_trainer_logprobs(trainer, batch), n_tokens


def with_trainer_logprobs(trainer: Trainer, batch: RolloutBatch) -> RolloutBatch:
    """The trainer's own log-probs and entropies of the sampled tokens, where the engine's are not its own
    (``engine.exact_logprobs`` False: vLLM, or a decode step in another precision). The engine's log-probs move to
    ``batch.sampler_logprobs``, from which the update computes the truncated importance weights (step 6)."""
    if trainer.engine.exact_logprobs:
        return batch
    model, t = trainer.model, trainer.cfg.trainer
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bool(t.bf16)):
            logprobs, entropies = response_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                                    batch.response_mask, batch.temperature, with_entropy=True,
                                                    share_prompts=t.share_prompts, head_mm=trainer.cfg.model.lm_head_mm)
    finally:
        model.train(was_training)
    mask = batch.policy_mask  # an episode's environment tokens keep 0, as the engine gives them
    return replace(batch, sampler_logprobs=batch.logprobs, logprobs=logprobs.float().cpu() * mask,
                   entropies=entropies.float().cpu() * mask)


class TrainerSampling:
    """The engine as components that sample outside step 2 see it (DRO's offline rounds): the same
    :func:`with_trainer_logprobs` completion, so their batches carry the trainer's log-probs and entropies too."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.pad_id = trainer.engine.pad_id
        self.exact_logprobs = True

    def generate(self, prompts, group_size, **kwargs) -> RolloutBatch:
        return with_trainer_logprobs(self.trainer, self.trainer.engine.generate(prompts, group_size, **kwargs))

    def policy_changed(self) -> None:
        self.trainer.engine.policy_changed()


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
    return _merge(parts, Q, trainer.engine.pad_id)


def _merge(parts: List[Collected], Q: int, pad_id: int) -> Collected:
    """Concatenate the kept groups of several generation batches; at most Q groups."""
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
    )


# ------------------------------------------------------------------------------------------------ 4. advantages


def advantages(cfg, data: Collected, step: int, metrics: Dict[str, Any]):
    """Step 4: ``(seq_adv [Qk, G], token_adv [N, T])``.

    ``combine=sum`` (or a single source): the weighted sum of the sources' scores, then the registered
    advantage estimator; otherwise the registered multi-objective combiner over the per-source table.
    Dense scores add their reward-to-go (DeepSeekMath process supervision).
    """
    a = cfg.trainer.advantage
    if a.combine != SUM and data.table.shape[-1] > 1:
        seq_adv, combine_stats = combine_objectives(data.table, data.weights, a.combine, eps=a.eps,
                                                    valid=data.valid, names=data.names)  # [Qk, G]
        metrics.update({f"advantage/{k}": v for k, v in combine_stats.items()})
    else:
        tree_ids = data.batch.tree_ids  # [N] Tree-GRPO rollouts (rollout.tree), else None
        seq_adv = algos.compute_advantages(data.scores, a.estimator, eps=a.eps, valid=data.valid,
                                           tree_ids=None if tree_ids is None else tree_ids.view_as(data.scores))
    token_adv = algos.token_advantages(seq_adv, data.token, data.batch.response_mask,
                                       group_size=data.batch.group_size, eps=a.eps, reward_mask=data.token_mask,
                                       valid=data.valid)  # [N, T]
    check_finite("advantages", token_adv, step)
    return seq_adv, token_adv


def verl_shaping(trainer: Trainer, data: Collected, seq_adv: torch.Tensor, token_adv: torch.Tensor, step: int,
                 metrics: Dict[str, Any]):
    """Step 4, ``trainer.advantage.verl_shaping``: VERL's exploration-exploitation bonus (arXiv 2509.23808;
    docs/algorithms.md "VERL advantage shaping"). Returns the shaped ``(seq_adv [Qk, G], token_adv [N, T])``.

    Each response's (ER, ERV, ERA) under the policy that sampled it (models/effective_rank.response_rank_dynamics),
    the bonus against the running baselines of earlier steps (algos.verl_shaped_advantages; none at the first step,
    which only starts the baselines), added to the response's last token or to all its tokens
    (``verl.tokens``); then this step's means (over accepted rollouts) update the baselines."""
    v = trainer.cfg.trainer.advantage.verl
    t0 = time.perf_counter()
    batch = data.batch
    dyn = response_rank_dynamics(trainer.model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                 batch.response_mask, stride=int(v.stride))  # [N, 3] (ER, ERV, ERA)
    stats = dyn.flip(-1)  # [N, 3] in algos.VERL_STATS order (ERA, ERV, ER), the order of w_explore / w_exploit
    valid = data.valid.reshape(-1)
    baseline = trainer.verl_baseline
    n_valid = max(int(valid.sum()), 1)
    names = algos.VERL_STATS
    out = {f"verl/{k}_mean": float(stats[valid, i].sum() / n_valid) for i, k in enumerate(names)}
    if baseline is None:
        bonus = torch.zeros(stats.shape[0], dtype=torch.float64)  # the first step only starts the baselines
    else:
        seq_adv, parts = algos.verl_shaped_advantages(
            seq_adv, stats, baseline, w_explore=list(v.w_explore), w_exploit=list(v.w_exploit), gain=v.gain,
            weight=v.weight, kappa=v.kappa, clip=v.clip, valid=data.valid)
        bonus = parts["bonus"]
        out.update({"verl/gate_mean": float(parts["gate"][valid].sum() / n_valid),
                    "verl/phi_mean": float(parts["phi"][valid].sum() / n_valid),
                    "verl/capped_frac": float(((parts["phi"] > bonus) & (bonus > 0))[valid].float().sum() / n_valid)})
        out.update({f"verl/baseline_{k}": float(baseline[i]) for i, k in enumerate(names)})
    mask = batch.response_mask
    if v.tokens == "all":
        token_adv = token_adv + algos.broadcast_to_tokens(bonus, mask).to(token_adv.dtype)
    else:  # the response's final policy token (right-padded rows: position length - 1; an episode's last turn ends
        # before the environment's last reply); empty responses get nothing
        policy = batch.policy_mask
        last = (policy * torch.arange(1, policy.shape[1] + 1)).argmax(-1)  # [N] index of the last policy token
        rows = torch.nonzero(policy.sum(-1) > 0).flatten()
        token_adv = token_adv.clone()
        token_adv[rows, last[rows]] += bonus[rows].to(token_adv.dtype)
    trainer.verl_baseline = algos.verl_ema_update(baseline, stats[valid].sum(0) / n_valid, float(v.ema_alpha))
    out.update({"verl/bonus_mean": float(bonus[valid].sum() / n_valid),
                "verl/bonus_frac": float((bonus > 0)[valid].float().sum() / n_valid),
                "verl/active": float(baseline is not None), "time/verl": time.perf_counter() - t0})
    metrics.update(out)
    check_finite("advantages", token_adv, step)
    return seq_adv, token_adv


# ------------------------------------------------------------------------------------------------ 5. loss masks


def loss_masks(pipeline: Pipeline, cfg, data: Collected, metrics: Dict[str, Any]):
    """Step 5: ``(mask [N, T], pg_mask [N, T])``.

    ``mask``: the policy's tokens of accepted rollouts (``batch.policy_mask``: an episode's environment tokens never
    count), minus truncated rollouts with ``trainer.mask_truncated`` (the KL and entropy terms average over it);
    ``pg_mask``: ``mask`` narrowed by the batch-scope token filters (the policy-gradient term only, as the 80/20
    paper masks it; micro-batch-scope filters narrow it inside :func:`update_policy`), which thus see only the
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


def update_policy(trainer: Trainer, step: int, batch: RolloutBatch, advantages: torch.Tensor, mask: torch.Tensor,
                  reg_mask: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """Step 6: ``mu`` passes x mini-batches (whole groups, one optimizer step each) x micro-batches.

    advantages  # [N, T] token advantages
    mask        # [N, T] policy-gradient loss mask
    reg_mask    # [N, T] the mask the KL and entropy terms average over (default ``mask``)
    The pipeline's micro-batch-scope token filters (the 80/20 official code's scope) are applied per
    micro-batch, before the mini-batch's normalisers are computed, so that accumulation is exact.
    """
    cfg, model = trainer.cfg, trainer.model
    t = cfg.trainer
    policy_loss = algos.POLICY_LOSSES.get(t.policy_loss).fn
    micro_filters = trainer.pipeline.micro_token_filters
    Q, G = batch.num_groups, batch.group_size
    device = next(model.parameters()).device
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bool(t.bf16))
    max_len = cfg.rollout.max_new_tokens
    old_logprobs = batch.logprobs  # [N, T] pi_old: the sampler's log-probs, or the trainer's recomputation of them
    tis_stats: Dict[str, float] = {}
    if batch.sampler_logprobs is not None and t.tis_cap > 0:
        # another engine or precision sampled (step 2 recomputed pi_old with the trainer): each token weighted by
        # the truncated importance weight min(pi_trainer / pi_sampler, cap) (algos.truncated_is_weights)
        weights, tis_stats = algos.truncated_is_weights(old_logprobs, batch.sampler_logprobs, batch.policy_mask,
                                                        t.tis_cap)
        advantages = advantages * weights
    ref_logprobs = None
    if trainer.ref_model is not None:
        with torch.no_grad(), autocast:
            ref_logprobs, _ = response_logprobs(trainer.ref_model, batch.prompt_ids, batch.prompt_mask,
                                                batch.response_ids, batch.response_mask, batch.temperature,
                                                share_prompts=t.share_prompts, head_mm=cfg.model.lm_head_mm)
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
                for f in micro_filters:
                    for micro in micros:
                        mb_mask[micro], _ = f.fn(batch.entropies[micro], mb_mask[micro], f.opts)
            norms = algos.loss_normalisers(mb_mask[rows])
            reg_norms = algos.loss_normalisers(reg_mask[rows])
            trainer.optimizer.zero_grad(set_to_none=True)
            for micro in micros:
                with autocast:
                    logprobs, entropy = response_logprobs(
                        model, batch.prompt_ids[micro], batch.prompt_mask[micro], batch.response_ids[micro],
                        batch.response_mask[micro], batch.temperature, with_entropy=t.entropy_coef > 0,
                        share_prompts=t.share_prompts, head_mm=cfg.model.lm_head_mm)
                m = mb_mask[micro].to(device)
                m_reg = reg_mask[micro].to(device)
                loss, stats = policy_loss(
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
                check_finite("loss", loss.detach(), step)
                loss.backward()
                stats["loss"] = loss.item()
                for k, v in stats.items():
                    # pg_loss/kl/loss are already scaled by the global normalisers: sum over micro-batches;
                    # the ratios/fractions are per micro-batch: averaged below
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + optimizer_step(trainer, step) * t.grad_accum
    trainer.engine.policy_changed()  # an engine with its own copy of the weights (vLLM) refreshes it before sampling
    model.eval()
    n_opt = t.mu * t.mini_batches
    summed = {"loss", "pg_loss", "kl"}
    return {**{k: (v / n_opt if k in summed else v / count) for k, v in sums.items()}, **tis_stats}


def optimizer_step(trainer: Trainer, step: int) -> float:
    """One optimizer step on the accumulated gradients: clip to ``trainer.max_grad_norm`` (0: measure only), stop
    on a non-finite gradient norm or weight, step the optimizer and the schedule; returns the gradient norm."""
    t = trainer.cfg.trainer
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    if t.max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
    else:
        grad_norm = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    # a NaN/inf gradient would poison the weights (and every later checkpoint): stop before the step
    check_finite("gradient norm (before the optimizer step; lower trainer.lr or set trainer.max_grad_norm)",
                 grad_norm.detach(), step)
    trainer.optimizer.step()
    trainer.scheduler.step()
    check_weights_finite(params, step, f"after the optimizer step (trainer.lr={t.lr})")
    return float(grad_norm)


def update_preference(trainer: Trainer, step: int, data: Collected, mask: torch.Tensor) -> Dict[str, float]:
    """Step 6 with ``trainer.objective=dpo``: RLSF's pairs within each group (trainers/preference.rlsf_pairs over
    ``data.scores [Qk, G]``, gated rollouts left out), then the DPO loss on the responses' log-probabilities
    (``mask [N, T]``: the tokens that count) against the frozen initial policy; ``mu`` passes x mini-batches of
    whole groups, one optimizer step each (grad_accum is 1: validated)."""
    cfg, model = trainer.cfg, trainer.model
    t = cfg.trainer
    batch = data.batch
    Q, G = batch.num_groups, batch.group_size
    device = next(model.parameters()).device
    chosen, rejected, margin = preference.rlsf_pairs(data.scores, t.dpo_threshold, data.valid)  # [P] rows
    with torch.no_grad():
        ref_logprobs, _ = response_logprobs(trainer.ref_model, batch.prompt_ids, batch.prompt_mask,
                                            batch.response_ids, batch.response_mask, batch.temperature,
                                            share_prompts=t.share_prompts, head_mm=cfg.model.lm_head_mm)
    ref_logps = preference.sequence_logps(ref_logprobs.float().cpu(), mask)  # [N]
    model.train()
    sums: Dict[str, float] = {}
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
    for epoch in range(t.mu):
        order = torch.randperm(Q, generator=gen) if epoch > 0 else torch.arange(Q)
        for group_ids in order.chunk(t.mini_batches):
            rows = (group_ids[:, None] * G + torch.arange(G)[None, :]).flatten()  # [n_mb]
            position = torch.full((Q * G,), -1, dtype=torch.long)
            position[rows] = torch.arange(rows.numel())
            in_mb = position[chosen] >= 0  # pairs never cross groups, so both rows are in or out together
            trainer.optimizer.zero_grad(set_to_none=True)
            logprobs, _ = response_logprobs(model, batch.prompt_ids[rows], batch.prompt_mask[rows],
                                            batch.response_ids[rows], batch.response_mask[rows], batch.temperature,
                                            share_prompts=t.share_prompts, head_mm=cfg.model.lm_head_mm)
            logps = preference.sequence_logps(logprobs.float(), mask[rows].to(device))  # [n_mb]
            loss, stats = preference.dpo_loss(logps, ref_logps[rows].to(device), position[chosen[in_mb]].to(device),
                                              position[rejected[in_mb]].to(device), t.dpo_beta)
            check_finite("loss", loss.detach(), step)
            loss.backward()
            grad_norm = optimizer_step(trainer, step)
            for k, v in {"loss": loss.item(), "grad_norm": grad_norm, **stats}.items():
                sums[k] = sums.get(k, 0.0) + v
    trainer.engine.policy_changed()
    model.eval()
    n_opt = t.mu * t.mini_batches
    mean = {k: v / n_opt for k, v in sums.items()}  # over the optimizer steps
    out = {"loss": mean["loss"], "grad_norm": mean["grad_norm"], "dpo/reward_acc": mean["reward_acc"],
           "dpo/reward_margin": mean["reward_margin"]}
    out["dpo/pairs"] = float(chosen.numel())  # all pairs of the step (the per-mini-batch mean is not it)
    out["dpo/margin_mean"] = float(margin.mean()) if margin.numel() else 0.0
    return out


# ------------------------------------------------------------------------------------------------ 7. log


def effective_rank_metrics(model, batch: RolloutBatch) -> Dict[str, float]:
    """``effective_rank/mean`` of the batch's responses under ``model`` (``trainer.effective_rank``) and its
    cost ``time/effective_rank`` (models/effective_rank.py)."""
    t0 = time.perf_counter()
    ranks = response_effective_ranks(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                     batch.response_mask)
    ranks = ranks[~ranks.isnan()]
    return {"effective_rank/mean": ranks.mean().item() if ranks.numel() else math.nan,
            "time/effective_rank": time.perf_counter() - t0}


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


def budget_spent(trainer: Trainer) -> Dict[str, float]:
    """``{"time/budget_spent": 0 | 1}`` with ``trainer.time_budget`` (1: training stops after this step), else {}."""
    budget = trainer.cfg.trainer.time_budget
    return {"time/budget_spent": float(trainer.totals["elapsed"] >= budget)} if budget > 0 else {}


# ------------------------------------------------------------------------------------------------ eval


def run_eval(trainer: Trainer, eval_task, run_dir: Path, step: int, judge=None) -> Dict[str, Any]:
    """Evaluate the current policy on the eval split (pass@k, or the open-ended metrics for a task without a
    verifier); outputs under eval/step-N/, numbers logged under eval/."""
    cfg = trainer.cfg
    summary, per_problem, records = evaluate_policy(cfg, trainer.engine, eval_task, model=trainer.model,
                                                    tokenizer=trainer.tokenizer, judge=judge, progress=False)
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
