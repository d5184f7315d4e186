"""Multi-objective advantage combiners: K reward objectives per rollout -> one advantage per rollout.

Pure tensor functions in the style of :mod:`drox.trainers.algos`. Layout: ``table [Q, G, K]`` holds objective
``k``'s score of rollout ``g`` of prompt ``q`` (group-major, as everywhere in drox); ``weights [K]`` are the
base/static weights; ``valid [Q, G]`` bool (None = all) marks rollouts that enter the statistics (gated-out
rows get advantage 0 and may hold anything, NaN included). Formulas and papers: docs/algorithms.md
"Multi-objective advantages".

* ``dvao`` — DVAO (arXiv 2605.25604; third-party formula): ``A_i = Σ_k b_k (r_ik − μ_k) / Σ_k b_k σ_k``.
* ``sum_then_normalize`` — reward combination (RC; TRL ``multi_objective_aggregation="sum_then_normalize"``).
* ``normalize_then_sum`` — GDPO (arXiv 2601.05242; TRL ``"normalize_then_sum"``): per-objective group z-scores,
  weighted sum, then batch normalisation.
* ``normalize_then_sum_no_batch`` — advantage combination (AC): GDPO without the batch normalisation.

Every combiner returns ``(adv [Q, G], stats)``; :func:`combine_objectives` adds ``sigma/<k>`` (mean within-group
population std of objective k), ``adv/abs_max`` and ``adv/mean_sq`` (DVAO's argument is about advantage magnitude).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from drox.components import COMBINERS, SUM, combine_choices
from drox.masked_stats import float_dtype, group_moments
from drox.trainers.algos import grpo_advantages

Tensor = torch.Tensor

#: :data:`COMBINERS` (drox.components), ``trainer.advantage.combine``: name -> ``fn(table [Q, G, K] float64, weights
#: [K] float64, valid [Q, G] bool, eps) -> (adv [Q, G] float64, {"weight": [K] float64 | None, ...})``. Inputs are
#: already checked and invalid entries zeroed. ``sum`` (:data:`SUM`) is not a combiner: it means "weighted sum of
#: the sources' scores, then the advantage estimator", which the trainer does without this module.


def register_combiner(name: str, **meta):
    """Decorator: register a combiner under ``name`` in :data:`COMBINERS`."""
    return COMBINERS.register(name, **meta)


def _population_stats(table: Tensor, valid: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Per group and objective over the valid rows: ``(n [Q,1,1], centred x [Q,G,K] (0 on invalid),
    population std σ [Q,1,K])``. ``table`` float64 with invalid entries zeroed."""
    m = group_moments(table, valid)
    return m.n, m.centred, m.std()  # population std (correction 0), as DVAO defines it


@register_combiner("dvao", verl="drox.integrations.verl.mapping:combiner")
def dvao(table: Tensor, weights: Tensor, valid: Tensor, eps: float):
    """DVAO (docs/algorithms.md; two independent third-party readings of the paper's Eq. 8).

    Per group: ``x_ik = r_ik − μ_k``, ``σ_k`` the population std, ``A_i = Σ_k b_k x_ik / Σ_k b_k σ_k``; the
    dynamic weights ``v_k = b_k σ_k / Σ_l b_l σ_l`` (so ``A_i = Σ_k v_k x_ik / σ_k``). ``A = 0`` when the group has
    ≤ 1 valid rollout or ``Σ_k b_k σ_k ≤ eps``. Bounded: ``|A_i| ≤ √(n−1)`` for n valid rollouts.
    Shapes: ``table [Q, G, K]``, ``weights [K]`` (≥ 0), ``valid [Q, G]`` -> ``[Q, G]``; ``stats["weight"] [K]``
    is ``v_k`` averaged over the groups where it is defined (0 when none is).
    """
    if (weights < 0).any():
        raise ValueError(f"dvao needs non-negative base weights, got {weights.tolist()}")
    n, x, sigma = _population_stats(table, valid)
    den = (weights * sigma).sum(-1)  # [Q, 1]
    live = (den > eps) & (n.squeeze(-1) > 1)  # [Q, 1]
    adv = (x * weights).sum(-1) / torch.where(live, den, torch.ones_like(den))
    adv = torch.where(live & valid, adv, torch.zeros_like(adv))
    v = (weights * sigma).squeeze(1) / torch.where(live, den, torch.ones_like(den))  # [Q, K]
    nlive = live.sum()
    weight = (v * live).sum(0) / nlive if nlive > 0 else torch.zeros_like(weights)
    return adv, {"weight": weight, "zero_groups": (~live).double().mean()}


@register_combiner("sum_then_normalize", verl="drox.integrations.verl.mapping:combiner")
def sum_then_normalize(table: Tensor, weights: Tensor, valid: Tensor, eps: float):
    """Reward combination (RC; docs/algorithms.md): ``R_i = Σ_k w_k r_ik``, then GRPO per group,
    ``A_i = (R_i − mean_g R) / (std_g R + eps)`` with the unbiased std (TRL, and :func:`algos.grpo_advantages`,
    which also gives constant groups and groups with < 2 valid rows exactly 0). TRL's eps is 1e-4.
    Shapes: ``table [Q, G, K]``, ``weights [K]``, ``valid [Q, G]`` -> ``[Q, G]``."""
    return grpo_advantages((table * weights).sum(-1), eps=eps, valid=valid), {}


def _objective_zscores(table: Tensor, valid: Tensor, eps: float) -> Tensor:
    """Per-objective group z-scores ``(r_k − mean_g r_k) / (std_g r_k + eps)``, unbiased std (TRL's ``nanstd``);
    constant objectives in a group give 0. ``[Q, G, K]`` -> ``[Q, G, K]``."""
    return torch.stack([grpo_advantages(table[..., k], eps=eps, valid=valid) for k in range(table.shape[-1])], -1)


@register_combiner("normalize_then_sum_no_batch", verl="drox.integrations.verl.mapping:combiner")
def normalize_then_sum_no_batch(table: Tensor, weights: Tensor, valid: Tensor, eps: float):
    """Advantage combination (AC; docs/algorithms.md): ``A_i = Σ_k w_k z_ik`` with ``z`` the per-objective group
    z-scores (GDPO before its batch normalisation). Grows with K (DVAO's criticism).
    Shapes: ``table [Q, G, K]``, ``weights [K]``, ``valid [Q, G]`` -> ``[Q, G]``."""
    adv = (_objective_zscores(table, valid, eps) * weights).sum(-1)
    return torch.where(valid, adv, torch.zeros_like(adv)), {}


@register_combiner("normalize_then_sum", verl="drox.integrations.verl.mapping:combiner")
def normalize_then_sum(table: Tensor, weights: Tensor, valid: Tensor, eps: float):
    """GDPO (arXiv 2601.05242; docs/algorithms.md): AC's ``A = Σ_k w_k z_k``, then batch-wise
    ``Â = (A − mean_batch A) / (std_batch A + eps)`` over all valid rows of the batch (unbiased std, as TRL).
    As in TRL, rows of groups with no signal (A = 0) enter the batch statistics and so get ``−mean/std``.
    Fewer than 2 valid rows -> all 0. Shapes: ``table [Q, G, K]``, ``weights [K]``, ``valid [Q, G]`` -> ``[Q, G]``."""
    a, _ = normalize_then_sum_no_batch(table, weights, valid, eps)
    n = valid.sum()
    if n < 2:
        return torch.zeros_like(a), {}
    mean = a[valid].mean()
    std = a[valid].std()  # unbiased, torch default (TRL: rewards.std())
    adv = (a - mean) / (std + eps)
    return torch.where(valid, adv, torch.zeros_like(adv)), {"batch_mean": mean, "batch_std": std}


def combine_objectives(
    table: Tensor,
    weights,
    mode: str = "dvao",
    eps: float = 1e-6,
    valid: Optional[Tensor] = None,
    names: Optional[Sequence[str]] = None,
) -> Tuple[Tensor, Dict[str, float]]:
    """Combine K objectives into one advantage per rollout with the combiner ``mode`` (a key of :data:`COMBINERS`).

    Args:
        table: ``[Q, G, K]`` per-objective scores.
        weights: ``[K]`` base weights (tensor or sequence); DVAO needs them ≥ 0.
        mode: ``dvao`` | ``sum_then_normalize`` | ``normalize_then_sum`` | ``normalize_then_sum_no_batch``.
        eps: DVAO: the denominator threshold; the others: added to every std (TRL uses 1e-4).
        valid: ``[Q, G]`` bool or None; False rows leave all statistics and get 0.
        names: K objective names for the stats keys (default ``"0"``, ``"1"``, ...).
    Returns:
        ``(adv [Q, G], stats)``, adv in the table's floating dtype (float32 for integer/bool tables); stats:
        ``weight/<name>`` (DVAO effective weights, averaged over groups), ``sigma/<name>``, ``adv/abs_max``,
        ``adv/mean_sq`` (over valid rows), and mode-specific scalars.
    Raises:
        ValueError: unknown mode, bad shapes, or NaN/inf in a valid entry.
    """
    combiner = COMBINERS.get(mode).fn
    if table.dim() != 3:
        raise ValueError(f"table must be [Q, G, K], got shape {list(table.shape)}")
    Q, G, K = table.shape
    w = torch.as_tensor(weights, dtype=torch.float64, device=table.device).reshape(-1)
    if w.numel() != K:
        raise ValueError(f"{w.numel()} weights for K = {K} objectives")
    if valid is None:
        valid = torch.ones(Q, G, dtype=torch.bool, device=table.device)
    else:
        valid = valid.to(device=table.device, dtype=torch.bool)
        if tuple(valid.shape) != (Q, G):
            raise ValueError(f"valid has shape {list(valid.shape)}, expected [Q, G] = [{Q}, {G}]")
    if names is None:
        names = [str(k) for k in range(K)]
    elif len(names) != K:
        raise ValueError(f"{len(names)} names for K = {K} objectives")
    t = table.to(torch.float64)
    if not torch.isfinite(t[valid]).all():
        raise ValueError("combine_objectives: NaN/inf in the scores of a valid rollout")
    # invalid rows may hold anything (a reward never computed for a gated rollout): zero them first
    t = torch.where(valid.unsqueeze(-1), t, torch.zeros((), dtype=t.dtype, device=t.device))

    adv, extra = combiner(t, w, valid, eps)

    stats: Dict[str, float] = {}
    weight = extra.pop("weight", None)
    if weight is not None:
        stats.update({f"weight/{nm}": float(weight[k]) for k, nm in enumerate(names)})
    n, _, sigma = _population_stats(t, valid)
    multi = n.reshape(Q) > 1
    sig = sigma.reshape(Q, K)[multi].mean(0) if multi.any() else torch.zeros(K, dtype=t.dtype)
    stats.update({f"sigma/{nm}": float(sig[k]) for k, nm in enumerate(names)})
    a = adv[valid]
    stats["adv/abs_max"] = float(a.abs().max()) if a.numel() else 0.0
    stats["adv/mean_sq"] = float((a**2).mean()) if a.numel() else 0.0
    stats.update({k: float(v) for k, v in extra.items()})
    return adv.to(float_dtype(table)), stats
