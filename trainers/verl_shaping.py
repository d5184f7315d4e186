"""VERL's advantage shaping as a registered advantage shaper (``trainer.advantage.verl_shaping``; options
``trainer.advantage.verl``): Huang et al., "Beyond the Exploration-Exploitation Trade-off: A Hidden State
Approach for LLM Reasoning in RLVR", arXiv 2509.23808. The formulas are :func:`drox.trainers.algos.verl_shaped_advantages`;
this is the step's glue: the rank dynamics of what was sampled, the bonus, the running baselines (its state).
"""

from __future__ import annotations

import time
from typing import Optional

import torch

from drox.components import register_shaper
from drox.config import VERLConfig
from drox.errors import check_finite
from drox.models.effective_rank import response_rank_dynamics
from drox.trainers import algos

__all__ = ["verl_shaping"]


@register_shaper("verl", VERLConfig, enabled=lambda cfg: bool(cfg.trainer.advantage.verl_shaping),
                 verl="trainer.advantage.verl_shaping=true needs the responses' hidden states")
def verl_shaping(trainer, step: int, data, seq_adv: torch.Tensor, token_adv: torch.Tensor, v: VERLConfig,
                 baseline: Optional[torch.Tensor]):
    """``trainer.advantage.verl_shaping``: VERL's exploration-exploitation bonus (Huang et al., arXiv 2509.23808;
    docs/algorithms.md "VERL advantage shaping"). Returns ``(seq_adv [Qk, G], token_adv [N, T], baselines [3],
    metrics)``: the shaped advantages and the updated running baselines (the shaper's state, checkpointed).

    Each response's (ER, ERV, ERA) under the policy that sampled it (models/effective_rank.response_rank_dynamics),
    the bonus against the running baselines of earlier steps (algos.verl_shaped_advantages; none at the first step,
    which only starts the baselines), added to the response's last token or to all its tokens
    (``verl.tokens``); then this step's means (over accepted rollouts) update the baselines."""
    t0 = time.perf_counter()
    batch = data.batch
    dyn = response_rank_dynamics(trainer.model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                 batch.response_mask, stride=int(v.stride))  # [N, 3] (ER, ERV, ERA)
    stats = dyn.flip(-1)  # [N, 3] in algos.VERL_STATS order (ERA, ERV, ER), the order of w_explore / w_exploit
    valid = data.valid.reshape(-1)
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
    baseline_next = algos.verl_ema_update(baseline, stats[valid].sum(0) / n_valid, float(v.ema_alpha))
    out.update({"verl/bonus_mean": float(bonus[valid].sum() / n_valid),
                "verl/bonus_frac": float((bonus > 0)[valid].float().sum() / n_valid),
                "verl/active": float(baseline is not None), "time/verl": time.perf_counter() - t0})
    check_finite("advantages", token_adv, step)
    return seq_adv, token_adv, baseline_next, out
