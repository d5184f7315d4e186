"""Setting a run up: seeds, the policy (LoRA, a checkpoint's weights), the frozen reference, the learning-rate
schedule, the state a resume restores, and the batch sizes in words (the loop's, trainers/loop.py)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from drox.models.loading import align_weights, load_policy
from drox.rewards.base import load_scoring_state
from drox.trainers.checkpoint import load_trainer_state, set_rng_state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def describe_sizes(cfg, pipeline) -> str:
    """The batch semantics in one paragraph (the most common confusion in TRL/verl issues); the rollout shape
    (drox.components) says what one group is and how many completion tokens a rollout holds at most."""
    t = cfg.trainer
    rows = t.prompts_per_step * t.samples_per_prompt
    per_mb = rows // t.mini_batches
    shape, cap = pipeline.shape.meta["describe"](cfg)
    return (
        f"per step: Q={t.prompts_per_step} prompts x G={t.samples_per_prompt} samples{shape} = {rows} rollouts "
        f"(<= {rows * cap} completion tokens); update: mu={t.mu} pass(es) x "
        f"{t.mini_batches} mini-batch(es) of {per_mb} rollouts = {t.mu * t.mini_batches} optimizer step(s) per "
        f"training step, each mini-batch in {t.grad_accum} micro-batch(es) of ~{math.ceil(per_mb / t.grad_accum)}; "
        f"{t.steps} training steps"
    )


def restore(trainer, resume_from: Path) -> int:
    """Load a checkpoint's trainer state (optimizer, schedule, prompt order, RNG, reward sources' and advantage
    shapers' state, totals) into ``trainer``; returns the step it was saved at."""
    state = load_trainer_state(resume_from)
    if "optimizer" in state:
        trainer.optimizer.load_state_dict(state["optimizer"])
    else:
        trainer.console.print(f"[yellow]{resume_from.name} holds no optimizer state (trainer.checkpoint=weights): AdamW "
                              "restarts from zero moments, so this run will differ from an uninterrupted one",
                              highlight=False, soft_wrap=True)
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])
    trainer.scoring_state.update(load_scoring_state(state.get("scoring", {}), trainer.model))
    trainer.totals.update(state.get("totals", {}))
    shapers: Dict[str, Any] = dict(state.get("shapers", {}))
    if "verl_baseline" in state:  # checkpoints written before the shapers were registered components
        shapers.setdefault("verl", state["verl_baseline"])
    trainer.shaper_state.update(shapers)
    trainer.console.print(f"resumed from {resume_from} at step {state['step']}")
    return int(state["step"])
