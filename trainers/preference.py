"""Preference pairs from a group's own scores, and the DPO loss over them (RLSF's second stage).

Pure tensor functions in the style of :mod:`drox.trainers.algos`; layout group-major as everywhere in drox
(rollout ``g`` of prompt ``q`` is row ``q * G + g``). docs/algorithms.md "RLSF: preference pairs and DPO".

* :func:`rlsf_pairs` — RLSF (van Niekerk et al., arXiv 2507.21931; code ``ConfidentLLM``
  ``cot_preference_data.py::_rank_data``): within each group, every ordered pair (i, j)
  with ``s_i >= threshold`` and ``s_i > s_j`` is (chosen i, rejected j), with margin ``exp(s_i - s_j)``.
* :func:`dpo_loss` — DPO (Rafailov et al. 2023, arXiv 2305.18290, Eq. 7):
  ``-log σ(β [(log π(y_c) - log π_ref(y_c)) - (log π(y_r) - log π_ref(y_r))])``, averaged over pairs. RLSF's
  margin is not part of DPO's loss (the code uses it for its reward-model variant); it is returned for logging.

``trainer.objective=dpo`` trains with them: the registered objective :func:`update_preference`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from drox.components import register_objective
from drox.errors import check_finite
from drox.models.forward import response_logprobs
from drox.trainers.objectives import optimizer_step

Tensor = torch.Tensor


def rlsf_pairs(scores: Tensor, threshold: float = 0.9, valid: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor, Tensor]:
    """Preference pairs of every group: ``scores [Q, G]`` (e.g. answer-span confidence) -> ``(chosen [P],
    rejected [P], margin [P])``; chosen/rejected are row indices in ``0 .. Q*G-1`` (group-major), ordered by
    group, then chosen, then rejected. ``valid [Q, G]`` bool (None = all): invalid rollouts are in no pair."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [Q, G], got shape {list(scores.shape)}")
    Q, G = scores.shape
    ok = torch.ones(Q, G, dtype=torch.bool) if valid is None else valid.to(torch.bool)
    s = scores.detach().to(torch.float64).cpu()
    i_better = s.unsqueeze(2) > s.unsqueeze(1)  # [Q, G(i), G(j)]: s_i > s_j
    keep = i_better & (s >= threshold).unsqueeze(2) & ok.unsqueeze(2) & ok.unsqueeze(1)
    q, i, j = keep.nonzero(as_tuple=True)
    margin = torch.exp(s[q, i] - s[q, j])
    return q * G + i, q * G + j, margin


def sequence_logps(logprobs: Tensor, mask: Tensor) -> Tensor:
    """``logprobs [N, T]`` token log-probs, ``mask [N, T]`` -> ``[N]`` the log-probability of each response."""
    return (logprobs * mask).sum(-1)


def dpo_loss(policy_logps: Tensor, ref_logps: Tensor, chosen: Tensor, rejected: Tensor, beta: float = 0.1
             ) -> Tuple[Tensor, Dict[str, float]]:
    """DPO over pairs: ``policy_logps [N]`` (differentiable) and ``ref_logps [N]`` sequence log-probs,
    ``chosen/rejected [P]`` row indices -> ``(loss, stats)``; loss is the mean over the P pairs (0 when P = 0,
    still attached to the graph). stats: ``pairs``, ``reward_acc`` (share of pairs whose implicit reward
    β·(log π − log π_ref) ranks chosen above rejected), ``reward_margin`` (mean of that difference)."""
    if beta <= 0:
        raise ValueError(f"DPO needs beta > 0, got {beta}")
    if chosen.numel() == 0:
        return policy_logps.sum() * 0.0, {"pairs": 0.0, "reward_acc": 0.0, "reward_margin": 0.0}
    ratios = policy_logps - ref_logps.to(policy_logps.dtype)  # [N] log π / π_ref
    logits = beta * (ratios[chosen] - ratios[rejected])  # [P]
    loss = -F.logsigmoid(logits).mean()
    stats = {"pairs": float(chosen.numel()), "reward_acc": (logits > 0).float().mean().item(),
             "reward_margin": logits.detach().mean().item()}
    return loss, stats


def _dpo_options(cfg) -> Dict[str, float]:
    return {"beta": cfg.trainer.dpo_beta, "threshold": cfg.trainer.dpo_threshold}


@dataclass
class DPOOptions:
    """``trainer.objective=dpo``'s options, read from ``trainer.dpo_beta`` and ``trainer.dpo_threshold`` (checked
    by drox.config.validate, with the grad_accum=1 it needs)."""

    beta: float = 0.1
    """DPO's beta (the strength of the implicit KL to the initial policy)."""
    threshold: float = 0.9
    """A response can be "chosen" only with a reward >= this (RLSF's code: 0.9 on confidence)."""


@register_objective("dpo", DPOOptions, reference=lambda cfg: True, options_from=_dpo_options,
                    verl="verl trains the policy-gradient objective only")
def update_preference(trainer, step: int, data, token_adv, loss_mask, mask: torch.Tensor,
                      opts: DPOOptions) -> Dict[str, float]:
    """Step 6 with ``trainer.objective=dpo``: RLSF's pairs within each group (:func:`rlsf_pairs` over
    ``data.scores [Qk, G]``, gated rollouts left out), then the DPO loss on the responses' log-probabilities
    (``mask [N, T]``: the tokens that count) against the frozen initial policy; ``mu`` passes x mini-batches of
    whole groups, one optimizer step each (grad_accum is 1: validated)."""
    cfg, model = trainer.cfg, trainer.model
    t = cfg.trainer
    batch = data.batch
    Q, G = batch.num_groups, batch.group_size
    device = next(model.parameters()).device
    chosen, rejected, margin = rlsf_pairs(data.scores, opts.threshold, data.valid)  # [P] rows
    with torch.no_grad():
        ref_logprobs, _ = response_logprobs(trainer.ref_model, batch.prompt_ids, batch.prompt_mask,
                                            batch.response_ids, batch.response_mask, batch.temperature,
                                            share_prompts=t.share_prompts, head_mm=cfg.model.lm_head_mm,
                                            head_rows=cfg.model.head_chunk_rows)
    ref_logps = sequence_logps(ref_logprobs.float().cpu(), mask)  # [N]
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
                                            share_prompts=t.share_prompts, head_mm=cfg.model.lm_head_mm,
                                            head_rows=cfg.model.head_chunk_rows)
            logps = sequence_logps(logprobs.float(), mask[rows].to(device))  # [n_mb]
            loss, stats = dpo_loss(logps, ref_logps[rows].to(device), position[chosen[in_mb]].to(device),
                                              position[rejected[in_mb]].to(device), opts.beta)
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
