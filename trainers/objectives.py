"""Step 6 of the training step, the update: the registered objectives (``trainer.objective``) and the optimizer
step they share.

``pg`` (the default): the registered policy loss (``trainer.policy_loss``: PPO's clipped surrogate, Schulman et al.
arXiv 1707.06347, with DAPO's clip-higher, arXiv 2503.14476; or GSPO, GSPO-token, CISPO) against the behaviour
log-probs on the token advantages, plus the KL to the frozen reference (GRPO, arXiv 2402.03300 Eq. 4) and the entropy bonus; the other
built-in, ``dpo`` (RLSF), lives with its pairs in trainers/preference.py. An objective receives the trainer (its
model, optimizer, scheduler, engine, config), the step's kept groups and masks, and its parsed options, and steps
the optimizer itself (:func:`optimizer_step`); see drox.components for the contract.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from drox.components import register_objective
from drox.errors import check_finite, check_weights_finite
from drox.models.forward import response_logprobs
from drox.rollout.base import RolloutBatch
from drox.trainers import algos

__all__ = ["optimizer_step", "pg_objective", "update_policy"]


@register_objective("pg", reference=lambda cfg: cfg.trainer.kl_coef > 0, verl="drox.integrations.verl.mapping:nothing")
def pg_objective(trainer, step: int, data, token_adv: torch.Tensor, mask: torch.Tensor, pg_mask: torch.Tensor,
                 opts=None) -> Dict[str, float]:
    """``trainer.objective=pg``: :func:`update_policy` on the token advantages; the policy-gradient term over
    ``pg_mask [N, T]``, the KL and entropy terms over ``mask [N, T]``."""
    return update_policy(trainer, step, data.batch, token_adv, pg_mask, reg_mask=mask)


def update_policy(trainer, step: int, batch: RolloutBatch, advantages: torch.Tensor, mask: torch.Tensor,
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
    policy_loss, clip = algos.resolve_policy_loss(getattr(trainer.pipeline, "policy_loss", None), t)
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
                                                share_prompts=t.share_prompts, head_mm=cfg.model.lm_head_mm,
                                                head_rows=cfg.model.head_chunk_rows)
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
                        share_prompts=t.share_prompts, head_mm=cfg.model.lm_head_mm,
                        head_rows=cfg.model.head_chunk_rows)
                m = mb_mask[micro].to(device)
                m_reg = reg_mask[micro].to(device)
                loss, stats = policy_loss(
                    logprobs.float(), old_logprobs[micro].to(device), advantages[micro].to(device), m,
                    agg=t.loss_agg, max_len=max_len, **clip, **norms)
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


def optimizer_step(trainer, step: int) -> float:
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


