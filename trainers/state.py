"""What the training loop carries from step to step (:class:`Trainer`), what one step trains on
(:class:`Collected`) and the stages of a run (``trainer.srl_steps``): the records trainers/loop.py and the
registered objectives and shapers (drox.components) share, plus the trainer's view of the rollout engine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig
from rich.console import Console

from drox.models.effective_rank import response_effective_ranks
from drox.models.forward import response_logprobs
from drox.rewards.base import ScoringContext, scoring_state_dict
from drox.rollout.base import RolloutBatch, concat_batches
from drox.tasks.srl import expand_steps
from drox.trainers.checkpoint import rng_state
from drox.trainers.metrics import MetricsLogger
from drox.trainers.sampler import PromptSampler


@dataclass
class Trainer:
    """Everything a training step reads or advances (built once by :func:`run_training`)."""

    cfg: DictConfig
    pipeline: Any  # drox.pipeline.Pipeline
    task: Any  # drox.tasks.Task, the training split
    model: Any  # the policy being trained
    tokenizer: Any
    engine: Any  # rollout engine sampling from ``model``
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: PromptSampler
    reference: Any  # trainers/setup.FrozenReference: the frozen initial policy (KL term, reward sources' reference)
    ref_model: Any  # reference() when the KL term needs it, else None
    logger: MetricsLogger
    console: Console
    scoring_state: Dict[str, Any] = field(default_factory=dict)  # sources' state across steps (lagged policy)
    totals: Dict[str, float] = field(default_factory=lambda: {"samples_seen": 0, "elapsed": 0.0})
    shaper_state: Dict[str, Any] = field(default_factory=dict)  # advantage shapers' state across steps (VERL's
    #   running baselines), by shaper name

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
        return getattr(self.engine, "score_tokens", None) if r.vllm.score_prompts else None

    def checkpoint_state(self, step: int) -> Dict[str, Any]:
        """Everything a resume needs besides the weights; the optimizer's moments only with checkpoint=full."""
        state = {"scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(), "rng": rng_state(),
                 "step": step, "totals": dict(self.totals), "scoring": scoring_state_dict(self.scoring_state)}
        if self.cfg.trainer.get("checkpoint", "full") == "full":
            state["optimizer"] = self.optimizer.state_dict()
        shapers = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in self.shaper_state.items()
                   if v is not None}
        if shapers:
            state["shapers"] = shapers
        return state



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


def merge_collected(parts: List[Collected], Q: int, pad_id: int) -> Collected:
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


@dataclass
class TrainingStage:
    """Steps up to ``last`` of a run, with their own training rows and reward sources (``trainer.srl_steps``)."""

    name: str
    last: int
    task: Any
    pipeline: Any  # drox.pipeline.Pipeline


def training_stages(cfg, task, pipeline) -> List[TrainingStage]:
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


def with_trainer_logprobs(trainer: "Trainer", batch: RolloutBatch) -> RolloutBatch:
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
                                                    share_prompts=t.share_prompts, head_mm=trainer.cfg.model.lm_head_mm,
                                                    head_rows=trainer.cfg.model.head_chunk_rows)
    finally:
        model.train(was_training)
    mask = batch.policy_mask  # an episode's environment tokens keep 0, as the engine gives them
    return replace(batch, sampler_logprobs=batch.logprobs, logprobs=logprobs.float().cpu() * mask,
                   entropies=entropies.float().cpu() * mask)


class TrainerSampling:
    """The engine as components that sample outside step 2 see it (DRO's offline rounds): the same
    :func:`with_trainer_logprobs` completion, so their batches carry the trainer's log-probs and entropies too."""

    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer
        self.pad_id = trainer.engine.pad_id
        self.exact_logprobs = True
        self.rollouts = 0  # rollouts sampled through it: they count in ``samples_seen``

    def generate(self, prompts, group_size, **kwargs) -> RolloutBatch:
        batch = self.trainer.engine.generate(prompts, group_size, **kwargs)
        self.rollouts += batch.num_rows
        return with_trainer_logprobs(self.trainer, batch)

    def policy_changed(self) -> None:
        self.trainer.engine.policy_changed()


def effective_rank_metrics(model, batch: RolloutBatch) -> Dict[str, float]:
    """``effective_rank/mean`` of the batch's responses under ``model`` (``trainer.effective_rank``) and its
    cost ``time/effective_rank`` (models/effective_rank.py)."""
    t0 = time.perf_counter()
    ranks = response_effective_ranks(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                     batch.response_mask)
    ranks = ranks[~ranks.isnan()]
    return {"effective_rank/mean": ranks.mean().item() if ranks.numel() else math.nan,
            "time/effective_rank": time.perf_counter() - t0}


def budget_spent(trainer: "Trainer") -> Dict[str, float]:
    """``{"time/budget_spent": 0 | 1}`` with ``trainer.time_budget`` (1: training stops after this step), else {}."""
    budget = trainer.cfg.trainer.time_budget
    return {"time/budget_spent": float(trainer.totals["elapsed"] >= budget)} if budget > 0 else {}
