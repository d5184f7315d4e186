"""Core RL algorithm math: advantage estimators, policy losses, KL estimators and loss aggregation.

Pure functions over tensors with documented shapes, registered by name (the style of verl's
``trainer/ppo/core_algos.py``) and independent of drox's training loop, so that the same functions can be
registered into verl unchanged. The formulas, their papers and equations, and the choices that are drox's
own are written out in ``docs/algorithms.md``.

Data layout
-----------
A rollout batch is ``Q`` prompts x ``G`` samples, flattened to ``N = Q * G`` rows in *group-major* order:
rows ``q*G .. q*G + G - 1`` belong to prompt ``q`` (so ``x.view(Q, G, ...)`` recovers the groups).
Response tensors are ``[N, T]`` with a response mask ``[N, T]`` (1 on real completion tokens, 0 on
padding). Sequence scores are ``[Q, G]``; dense (per-token) scores are ``[Q, G, T]`` or ``[N, T]``.

Registries (``drox.registry.Registry``; the config's allowed values are their names)
-------------------------------------------------------------------------------------
* :data:`ADVANTAGE_ESTIMATORS` (``trainer.advantage.estimator``): ``fn(scores [Q, G], eps, valid [Q, G] bool)
  -> [Q, G]``; :func:`compute_advantages` dispatches. An estimator registered with ``tree_ids=True`` (Tree-GRPO's
  ``tree``, ``tree_2norm``) also receives ``tree_ids [Q, G]``; one registered with ``step=True`` (``nsr``, for
  A-NSR's schedules) receives ``step`` and ``total_steps``, and its ``stats=fn(scores, valid, opts, step,
  total_steps) -> dict`` is logged as ``advantage/<name>/<key>``. Dense scores: :func:`token_advantages`.
* :data:`POLICY_LOSSES` (``trainer.policy_loss``): ``fn(logprobs, old_logprobs, advantages, mask [N, T], *,
  clip_low, clip_high, agg, max_len, num_seqs, num_tokens) -> (loss, stats)``; ``ppo_clip``, ``gspo``,
  ``gspo_token``, ``cispo``. A loss registered with an options dataclass (gspo*, cispo: their clip ranges, in
  ``trainer.gspo`` / ``trainer.cispo``) receives its fields in place of ``trainer.clip_low/clip_high``
  (:func:`resolve_policy_loss`).
* :data:`LOSS_AGGREGATIONS` (``trainer.loss_agg``): ``fn(loss_mat, mask [N, T], max_len, num_seqs, num_tokens)
  -> scalar``; :func:`agg_loss` dispatches.
* :data:`KL_ESTIMATORS` (``trainer.kl_estimator``): ``fn(logprobs, ref_logprobs [N, T]) -> [N, T]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import torch

from drox.components import ADVANTAGE_ESTIMATORS, KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES
from drox.config import CISPOConfig, GSPOConfig, MaxRLOptions, PassKOptions, PKPOOptions
from drox.registry import parse_dataclass
from drox.masked_stats import float_dtype, group_moments, masked_mean
from drox.signals.passk import min_group_size, subset_tables
from drox.signals.sign import NSROptions, SignOptions, WReinforceOptions, a_nsr_weights, sign_advantages, sign_values

Tensor = torch.Tensor

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "POLICY_LOSSES",
    "agg_loss",
    "broadcast_to_tokens",
    "DENSE_ADVANTAGES",
    "combine_advantages",
    "cispo_loss",
    "compute_advantages",
    "dense_process_advantages",
    "dr_grpo_advantages",
    "grpo_advantages",
    "gspo_loss",
    "gspo_token_loss",
    "kl_penalty",
    "loss_normalisers",
    "masked_mean",
    "maxrl_advantages",
    "no_baseline_advantages",
    "nsr_weights",
    "passk_advantages",
    "per_token_advantages",
    "pkpo_advantages",
    "policy_loss",
    "register_advantage_estimator",
    "resolve_policy_loss",
    "rloo_advantages",
    "sequence_log_ratio",
    "token_advantages",
    "tree_2norm_advantages",
    "tree_advantages",
    "truncated_is_weights",
    "VERL_STATS",
    "verl_ema_update",
    "verl_relative_deviation",
    "verl_shaped_advantages",
]


# ---------------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------------


def _check_same_shape(**tensors: Optional[Tensor]) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items() if v is not None}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k} {list(s)}" for k, s in shapes.items())
        raise ValueError(f"shape mismatch: {desc} (expected all equal)")


# ---------------------------------------------------------------------------------------------------------------
# 1. sequence-level advantage estimators  (scores [Q, G] -> advantages [Q, G])
# ---------------------------------------------------------------------------------------------------------------

def register_advantage_estimator(name: str, options: Optional[type] = None, **meta):
    """Decorator: register ``fn(scores [Q, G], eps, valid [Q, G] bool) -> [Q, G]`` under ``name``; with
    ``tree_ids=True`` it also receives ``tree_ids [Q, G]``; with an ``options`` dataclass it also receives
    ``opts``, parsed from ``trainer.advantage.<name>`` (``+trainer.advantage.<name>.<option>=...``)."""
    return ADVANTAGE_ESTIMATORS.register(name, options, **meta)


def _prepare(scores: Tensor, valid: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """(scores as float64 with invalid entries 0, valid [Q, G] bool); checks the shapes."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [Q, G], got shape {list(scores.shape)}")
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    else:
        valid = valid.to(device=scores.device, dtype=torch.bool)
        _check_same_shape(scores=scores, valid=valid)
    # invalid rows may hold anything (even NaN, e.g. a reward never computed for a gated rollout)
    s = torch.where(valid, scores.to(torch.float64), torch.zeros((), dtype=torch.float64, device=scores.device))
    return s, valid


def _constant(m) -> Tensor:
    """[Q, 1] bool: the group has fewer than 2 valid entries or they are all identical (no contrast)."""
    return (m.n < 2) | m.all_equal


@register_advantage_estimator("grpo", group_baseline=True, verl="drox.integrations.verl.mapping:estimator")
def grpo_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None) -> Tensor:
    """GRPO outcome supervision, DeepSeekMath (arXiv 2402.03300) §4.1.2 / Eq. 3; docs/algorithms.md.

    ``A_i = (r_i - mean_g r) / (std_g r + eps)`` with the *unbiased* std (torch default, as verl and TRL).
    Shapes: ``scores [Q, G]``, ``valid [Q, G] bool | None`` -> ``[Q, G]``.
    Invalid entries are left out of the group mean/std and get 0. A group whose valid scores are all identical,
    or that has fewer than 2 valid entries (e.g. G = 1), gets exactly 0 (never NaN). Note: verl gives a
    singleton group mean 0 / std 1 (advantage = raw score); drox deliberately gives 0 (no contrast, no signal).
    """
    s, valid = _prepare(scores, valid)
    m = group_moments(s, valid)
    adv = m.centred / (m.std(unbiased=True) + eps)
    adv = torch.where(valid & ~_constant(m), adv, torch.zeros_like(adv))
    return adv.to(float_dtype(scores))


@register_advantage_estimator("dr_grpo", group_baseline=True, verl="drox.integrations.verl.mapping:estimator")
def dr_grpo_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None) -> Tensor:
    """Dr. GRPO (Liu et al. 2025, arXiv 2503.20783) mean-centred advantage; docs/algorithms.md.

    ``A_i = r_i - mean_g r`` (no std division; ``eps`` unused). Shapes: ``scores [Q, G]`` -> ``[Q, G]``.
    Invalid entries are excluded from the mean and get 0; constant groups get exactly 0.
    """
    s, valid = _prepare(scores, valid)
    m = group_moments(s, valid)
    adv = torch.where(valid & ~_constant(m), s - m.mean, torch.zeros_like(s))
    return adv.to(float_dtype(scores))


@register_advantage_estimator("rloo", group_baseline=True, verl="drox.integrations.verl.mapping:estimator")
def rloo_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None) -> Tensor:
    """RLOO leave-one-out baseline (Ahmadian et al. 2024, arXiv 2402.14740); docs/algorithms.md.

    ``A_i = r_i - (sum_{j != i} r_j) / (n - 1)`` over the ``n`` valid members of the group (``eps`` unused).
    Shapes: ``scores [Q, G]`` -> ``[Q, G]``. Groups with fewer than 2 valid entries (G = 1) and constant
    groups get exactly 0; invalid entries get 0.
    """
    s, valid = _prepare(scores, valid)
    m = group_moments(s, valid)
    total = m.x.sum(-1, keepdim=True)
    baseline = (total - s) / (m.n - 1).clamp_min(1.0)
    adv = torch.where(valid & ~_constant(m), s - baseline, torch.zeros_like(s))
    return adv.to(float_dtype(scores))


@register_advantage_estimator("none", verl="the verl backend maps grpo, dr_grpo, rloo, psr, nsr and w_reinforce to "
                                                  "verl estimators; none (scores used as advantages) has none")
def no_baseline_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None) -> Tensor:
    """No baseline: ``A_i = r_i`` (REINFORCE; PSR / NSR / W-REINFORCE, Zhu et al. arXiv 2506.01347 §2.2).

    Shapes: ``scores [Q, G]`` -> ``[Q, G]``; invalid entries get 0. PSR / NSR / W-REINFORCE's sample weighting
    (e.g. ``A = R - 1`` for NSR with 0/1 rewards) is their own estimators' (``psr``, ``nsr``, ``w_reinforce``). See
    docs/algorithms.md
    "No baseline: the none estimator".
    """
    s, valid = _prepare(scores, valid)
    return torch.where(valid, s, torch.zeros_like(s)).to(float_dtype(scores))


def _sign_selective(name: str, scores: Tensor, valid: Optional[Tensor], opts) -> Tensor:
    s, valid = _prepare(scores, valid)
    adv = sign_advantages(s > float(opts.correct_above), *sign_values(name, opts)).to(s) * float(opts.scale)
    return torch.where(valid, adv, torch.zeros_like(adv)).to(float_dtype(scores))


def _alone(what: str):
    """A config-time check: estimator ``what`` (its advantages, in words) replaces the weighted sum's estimator, and a
    multi-objective combiner would silently bypass it, so ``trainer.advantage.combine`` must be ``sum``."""

    def check(opts, cfg) -> None:
        if cfg.trainer.advantage.combine != "sum":
            a = cfg.trainer.advantage
            raise ValueError(f"trainer.advantage.estimator={a.estimator}: {what} and cannot be combined with "
                             f"trainer.advantage.combine={a.combine}; use combine=sum")

    return check


_sign_check = _alone("its advantages are sign-selective rewards (no baseline)")


@register_advantage_estimator("psr", SignOptions, check=_sign_check,
                              verl="drox.integrations.verl.mapping:sign_estimator")
def psr_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None,
                   opts: Optional[SignOptions] = None) -> Tensor:
    """PSR (Zhu et al. arXiv 2506.01347 Eq. 3): ``A = scale`` where ``score > correct_above``, else 0; no baseline.

    Shapes: ``scores [Q, G]`` -> ``[Q, G]``; invalid entries get 0. Example: scores ``[[1, 0]]`` -> ``[[1, 0]]``."""
    return _sign_selective("psr", scores, valid, opts or SignOptions())


def nsr_weights(scores: Tensor, valid: Optional[Tensor], opts: NSROptions, step: Optional[int] = None,
                total_steps: Optional[int] = None) -> Dict[str, float]:
    """``{"lam": λ(t), "beta": β(t)}``, the weights ``nsr`` gives a correct and an incorrect rollout this step
    (:func:`drox.signals.sign.a_nsr_weights`; ``schedule=accuracy`` reads p̂ = the fraction of the valid rollouts of
    ``scores [Q, G]`` that are correct); ``{}`` for ``schedule=constant``. The loop logs them as
    ``advantage/nsr/{lam,beta}``."""
    if getattr(opts, "schedule", "constant") == "constant":
        return {}
    accuracy = None
    if opts.schedule == "accuracy":
        s, valid = _prepare(scores, valid)
        n = int(valid.sum().item())
        accuracy = ((s > float(opts.correct_above)) & valid).sum().item() / n if n else 0.0
    lam, beta = a_nsr_weights(opts, step, total_steps, accuracy)
    return {"lam": lam, "beta": beta}


@register_advantage_estimator("nsr", NSROptions, check=_sign_check, step=True, stats=nsr_weights,
                              verl="drox.integrations.verl.mapping:sign_estimator")
def nsr_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None,
                   opts: Optional[NSROptions] = None, step: Optional[int] = None,
                   total_steps: Optional[int] = None) -> Tensor:
    """NSR (Eq. 4): ``A = -scale`` where ``score <= correct_above``, else 0; no baseline. With ``opts.schedule``
    other than ``constant``, A-NSR (arXiv 2605.07137; docs/algorithms.md "A-NSR: scheduled weights for the two
    halves"): ``A = λ(t)·scale`` correct, ``-β(t)·scale`` incorrect (:func:`nsr_weights`), ``step`` = t,
    ``total_steps`` = T.

    Shapes: ``scores [Q, G]`` -> ``[Q, G]``; invalid entries get 0. Example: scores ``[[1, 0]]`` -> ``[[0, -1]]``;
    ``schedule=accuracy`` (β 1.5 -> 0.5): p̂ = 1/2, β = 1.0, ``[[0, -1]]``; ``schedule=exp`` at t = 10 of 100:
    ``[[0.065, -1.2408]]``."""
    opts = opts or NSROptions()
    if getattr(opts, "schedule", "constant") == "constant":  # plain SignOptions are accepted too
        return _sign_selective("nsr", scores, valid, opts)
    w = nsr_weights(scores, valid, opts, step, total_steps)
    s, valid = _prepare(scores, valid)
    adv = sign_advantages(s > float(opts.correct_above), w["lam"], -w["beta"]).to(s) * float(opts.scale)
    return torch.where(valid, adv, torch.zeros_like(adv)).to(float_dtype(scores))


@register_advantage_estimator("w_reinforce", WReinforceOptions, check=_sign_check,
                              verl="drox.integrations.verl.mapping:sign_estimator")
def w_reinforce_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None,
                           opts: Optional[WReinforceOptions] = None) -> Tensor:
    """W-REINFORCE (§5 Eq. 9, ``λ·L_PSR + L_NSR``): ``A = λ·scale`` correct, ``-scale`` incorrect; no baseline.

    Shapes: ``scores [Q, G]`` -> ``[Q, G]``; invalid entries get 0. Example (λ = 0.1): ``[[1, 0]]`` -> ``[[0.1, -1]]``."""
    return _sign_selective("w_reinforce", scores, valid, opts or WReinforceOptions())


def _subset_tables(n: int, k: int, device) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`drox.signals.passk.subset_tables` as float64 tensors ``(top [n], with_i [n, n], others [n, n],
    loo [n, n])`` on ``device``."""
    return tuple(torch.tensor(t, dtype=torch.float64, device=device) for t in subset_tables(n, k))  # type: ignore


def _over_sorted_groups(scores: Tensor, valid: Optional[Tensor], min_n: int, fn) -> Tensor:
    """Apply ``fn(n, g [R, n]) -> [R, n]`` to the valid scores of every group, sorted ascending, groups of equal
    valid count ``n`` together; the results go back to the rollouts' own positions. Groups with fewer than ``min_n``
    valid rollouts and invalid rollouts get 0. Shapes: ``scores [Q, G]`` -> ``[Q, G]`` float64."""
    s, valid = _prepare(scores, valid)
    n = valid.sum(-1)  # [Q]
    ranked, order = torch.where(valid, s, torch.full_like(s, float("inf"))).sort(-1)  # valid ones first, ascending
    out = torch.zeros_like(s)
    for size in sorted(set(n[n >= max(min_n, 1)].tolist())):
        rows = n == size
        out[rows, :size] = fn(int(size), ranked[rows, :size])
    return torch.zeros_like(s).scatter(-1, order, out)


def _passk_check(opts, cfg) -> None:
    """Config-time check of ``passk`` / ``pkpo``: ``k`` fits the group (one line, before anything runs)."""
    name, G = cfg.trainer.advantage.estimator, int(cfg.trainer.samples_per_prompt)
    _alone("its advantages average over the k-subsets of each group")(opts, cfg)
    need = min_group_size(name, opts)
    if G < need:
        rule = "k < G (k = G leaves one subset and no spread)" if name == "passk" else (
            "k < G (its baseline averages k-subsets of the other rollouts)" if need > opts.k else
            "k <= G (pass@k has no unbiased estimate from fewer than k samples)")
        raise ValueError(f"trainer.advantage.{name}.k={opts.k} with trainer.samples_per_prompt={G}: {name} needs "
                         f"{rule}; lower k or raise samples_per_prompt")


@register_advantage_estimator("passk", PassKOptions, group_baseline=True, check=_passk_check,
                              verl="verl 0.9.1 has no analytic pass@k advantage: its grpo_passk is Tang et al.'s "
                                   "best-of-group advantage (arXiv 2503.19595), another estimator")
def passk_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None,
                     opts: Optional[PassKOptions] = None) -> Tensor:
    """Pass@k Training's analytic advantage (Chen et al., arXiv 2508.10751; the authors' RUCAIBox/Passk_Training
    ``code/passk_adv.py`` and README); docs/algorithms.md "Pass@k Training: analytic pass@k advantage".

    Each k-subset ``I`` of a group's ``n`` valid rollouts is rewarded ``max_I r`` (pass@k on 0/1 rewards); ``R̄`` and
    ``σ`` are the mean and population std of that reward over all ``C(n, k)`` subsets, and rollout ``i`` gets the
    mean normalised reward of the subsets that contain it: ``A_i = (mean_{I ∋ i} max_I r − R̄) / (σ + eps)``. On 0/1
    rewards with ``N_neg`` wrong rollouts this is the paper's closed form, ``R̄ = 1 − C(N_neg, k) / C(n, k)``,
    ``σ = sqrt(R̄ (1 − R̄))``, ``Â_pos = (1 − R̄) / σ``,
    ``Â_neg = (1 − R̄ − C(N_neg − 1, k − 1) / C(n − 1, k − 1)) / σ``; on other rewards, the same average over subsets
    (drox's extension: the paper derives the 0/1 case).
    k = 1 is GRPO with the population std.

    Shapes: ``scores [Q, G]``, ``valid [Q, G] bool | None`` -> ``[Q, G]``. Invalid rollouts are left out and get 0; a
    group with at most k valid rollouts, or whose subsets all have the same max (all wrong, or fewer than k wrong),
    gets exactly 0. Example (k = 2): ``[[1, 0, 0]]`` -> ``R̄ = 2/3``, ``σ = √2/3`` -> ``[[0.7071, -0.3536, -0.3536]]``.
    """
    opts = opts or PassKOptions()
    k = int(opts.k)

    def fn(n: int, g: Tensor) -> Tensor:
        top, with_i, _, _ = _subset_tables(n, k, g.device)
        mean = g @ top  # [R] R̄: the mean subset max
        std = ((g - mean[:, None]).square() @ top).sqrt()  # [R] σ over the subsets
        per_rollout = (n / k) * (g @ with_i.T)  # [R, n] mean max of the subsets containing each rollout
        adv = (per_rollout - mean[:, None]) / (std[:, None] + eps)
        flat = (g[:, k - 1] == g[:, n - 1])[:, None]  # every subset has the same max: no spread
        return torch.where(flat, torch.zeros_like(adv), adv)

    return _over_sorted_groups(scores, valid, min_group_size("passk", opts), fn).to(float_dtype(scores))


@register_advantage_estimator("pkpo", PKPOOptions, group_baseline=True, check=_passk_check,
                              verl="verl 0.9.1 has no PKPO transformation: its grpo_passk (norm_adv_by_std_in_grpo="
                                   "false) is only the k = G case, divided by G")
def pkpo_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None,
                    opts: Optional[PKPOOptions] = None) -> Tensor:
    """PKPO's pass@k reward transformation (Walder & Karkhanis, "Pass@K Policy Optimization", arXiv 2505.15201 §2-4);
    docs/algorithms.md "PKPO: pass@k reward transformation".

    For a group of ``n`` valid rewards ``g`` (any real values: ``max_g@k``, Eq. 11; pass@k on 0/1 rewards) and each
    rollout ``i``, averaging over the ``C(n, k)`` subsets ``I`` of size k:

    * ``baseline=loo_minus_one`` (Eq. 33, the paper's PKPO): ``s_i = (1/C(n,k)) Σ_{I ∋ i} (max_I g − max_{I∖i} g)``;
    * ``baseline=loo`` (Eq. 29): ``s_i = S(i, k, [n]) − (1/(n−1)) Σ_{j≠i} S(j, k, [n]∖i)``;
    * ``baseline=none`` (Eqs. 19-21, 27): ``s_i = S(i, k, [n]) = (1/C(n,k)) Σ_{I ∋ i} max_I g``;

    and ``A_i = n · s_i``, so that the mean over the group of ``A_i ∇log π(o_i)`` is the paper's unbiased estimate
    ``Σ_i s_i ∇log π(o_i)`` of ``∇ max_g@k``. Computed from the sorted rewards in ``O(n²)`` per group
    (:func:`drox.signals.passk.subset_tables`), not over subsets. k = 1 with ``loo_minus_one`` (no k-1 subset) is the
    paper's k_opt = 1 baseline, leave-one-out centring (Eq. 26): :func:`rloo_advantages`. On 0/1 rewards with
    ``baseline=none``: ``A = k`` on correct rollouts and ``k · ρ(n−1, c, k−1)`` on wrong ones (Eq. 8, times n).

    Shapes: ``scores [Q, G]``, ``valid [Q, G] bool | None`` -> ``[Q, G]``. Invalid rollouts are left out and get 0; a
    group with fewer than k valid rollouts (k + 1 for ``loo``) gets 0. Example (k = 2, loo_minus_one): ``[[1, 0, 0]]``
    -> ``[[2, 0, 0]]``: the right rollout's two pairs each beat the other member's 0, the wrong ones add nothing.
    """
    opts = opts or PKPOOptions()
    k = int(opts.k)
    if k == 1 and opts.baseline == "loo_minus_one":
        return rloo_advantages(scores, eps, valid)

    def fn(n: int, g: Tensor) -> Tensor:
        _, with_i, others, loo = _subset_tables(n, k, g.device)
        weights = with_i - {"loo_minus_one": others, "loo": loo, "none": torch.zeros_like(with_i)}[opts.baseline]
        return n * (g @ weights.T)  # [R, n]

    return _over_sorted_groups(scores, valid, min_group_size("pkpo", opts), fn).to(float_dtype(scores))


@register_advantage_estimator("maxrl", MaxRLOptions, group_baseline=True,
                              check=_alone("its advantages are normalised by the group's success rate"),
                              verl="verl 0.9.1 has no MaxRL estimator ((r - mean) / mean)")
def maxrl_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None,
                     opts: Optional[MaxRLOptions] = None) -> Tensor:
    """MaxRL (Tajwar et al., "Maximum Likelihood Reinforcement Learning", arXiv 2602.02710, Algorithm 1 and Eq. 11);
    docs/algorithms.md "MaxRL: maximum-likelihood advantage".

    ``r_i = 1`` where ``score > correct_above``, else 0; ``μ`` = the mean of ``r`` over the group's valid rollouts;
    ``A_i = (r_i − μ) / μ``, and 0 for the whole group when ``μ = 0``. Per prompt, the mean of ``A_i ∇log π(o_i)`` is
    Eq. 11's ``Σ_i (r_i / K − 1/n) ∇log π(o_i)`` (``K`` = successes), unbiased for the gradient of the order-n
    truncation ``−Σ_{k≤n} (1 − p)^k / k`` of ``log p``; dropping the all-wrong groups (Algorithm 1) makes it
    unbiased for order n − 1 (tests/test_passk_estimators.py checks both by enumeration). ``eps`` is unused.

    Shapes: ``scores [Q, G]``, ``valid [Q, G] bool | None`` -> ``[Q, G]``; invalid rollouts are left out and get 0.
    Example: ``[[1, 0, 0, 0]]`` -> ``μ = 1/4`` -> ``[[3, -1, -1, -1]]``.
    """
    opts = opts or MaxRLOptions()
    s, valid = _prepare(scores, valid)
    m = group_moments((s > float(opts.correct_above)).to(s), valid)
    solved = m.mean > 0  # [Q, 1]
    adv = torch.where(valid & solved, m.centred / torch.where(solved, m.mean, torch.ones_like(m.mean)),
                      torch.zeros_like(s))
    return adv.to(float_dtype(scores))


def _within_trees(scores: Tensor, eps: float, valid: Tensor, tree_ids: Tensor) -> Tensor:
    """GRPO advantage of each rollout among the valid rollouts of its own tree: ``[Q, G]`` -> ``[Q, G]``.

    Row ``(q, i)`` becomes a group of its own whose members are the rollouts ``j`` of prompt ``q`` with
    ``tree_ids[q, j] == tree_ids[q, i]``; :func:`grpo_advantages` over those ``Q*G`` groups, read at ``j = i``.
    """
    Q, G = scores.shape
    if tree_ids.shape != scores.shape:
        raise ValueError(f"tree_ids {list(tree_ids.shape)} must be [Q, G] = {list(scores.shape)}")
    tree_ids = tree_ids.to(scores.device)
    same = (tree_ids[:, :, None] == tree_ids[:, None, :]) & valid[:, None, :]  # [Q, G(i), G(j)]
    adv = grpo_advantages(scores.reshape(Q, 1, G).expand(Q, G, G).reshape(Q * G, G), eps,
                          same.reshape(Q * G, G))  # [Q*G, G]
    return adv.view(Q, G, G).diagonal(dim1=1, dim2=2)  # [Q, G]


@register_advantage_estimator("tree", group_baseline=True, tree_ids=True,
                              verl="it normalises within rollout trees, which verl does not sample")
def tree_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None,
                    tree_ids: Optional[Tensor] = None) -> Tensor:
    """Tree-GRPO (Ji et al., "Tree Search for LLM Agent Reinforcement Learning", arXiv 2509.21240; the authors'
    ``adv_estimator == 'tree'``): intra-tree + inter-tree GRPO advantage; docs/algorithms.md "Tree-GRPO: tree-search
    rollouts and tree advantages".

    ``A_i = GRPO_i(among the leaves of i's own tree) + GRPO_i(among all leaves of the prompt)``, each
    ``(r_i - mean) / (std + eps)`` with the unbiased std, as :func:`grpo_advantages` (constant or one-member groups
    give 0; invalid rollouts are left out and get 0).
    Shapes: ``scores [Q, G]``, ``valid [Q, G] bool | None``, ``tree_ids [Q, G]`` (any integer labels; rollouts of
    one prompt with equal labels form one tree) -> ``[Q, G]``.
    """
    if tree_ids is None:
        raise ValueError("the tree advantage needs tree_ids [Q, G] (rollout.tree.enabled=true)")
    s, valid = _prepare(scores, valid)
    adv = grpo_advantages(s, eps, valid) + _within_trees(s, eps, valid, tree_ids)
    return adv.to(float_dtype(scores))


@register_advantage_estimator("tree_2norm", group_baseline=True, tree_ids=True,
                              verl="it normalises within rollout trees, which verl does not sample")
def tree_2norm_advantages(scores: Tensor, eps: float = 1e-6, valid: Optional[Tensor] = None,
                          tree_ids: Optional[Tensor] = None) -> Tensor:
    """Tree-GRPO's sequential variant (the authors' ``adv_estimator == 'tree_2norm'``, arXiv 2509.21240's code):
    the GRPO advantage among all leaves of the prompt, then GRPO-normalised again among the leaves of each tree.

    ``z = GRPO(r) over the prompt``; ``A_i = GRPO_i(z among the leaves of i's tree)``.
    Shapes: ``scores [Q, G]``, ``valid [Q, G] bool | None``, ``tree_ids [Q, G]`` -> ``[Q, G]``; docs/algorithms.md
    "Tree-GRPO: tree-search rollouts and tree advantages".
    """
    if tree_ids is None:
        raise ValueError("the tree_2norm advantage needs tree_ids [Q, G] (rollout.tree.enabled=true)")
    s, valid = _prepare(scores, valid)
    adv = _within_trees(grpo_advantages(s, eps, valid), eps, valid, tree_ids)
    return adv.to(float_dtype(scores))


def compute_advantages(
    scores: Tensor, estimator: str = "grpo", eps: float = 1e-6, valid: Optional[Tensor] = None,
    tree_ids: Optional[Tensor] = None, opts: Any = None, step: Optional[int] = None, total_steps: Optional[int] = None,
) -> Tensor:
    """Dispatch to a registered sequence-level advantage estimator.

    Args:
        scores: ``[Q, G]`` per-rollout scores (rewards), one row per prompt.
        estimator: a key of :data:`ADVANTAGE_ESTIMATORS` (``grpo``, ``dr_grpo``, ``rloo``, ``none``).
        eps: added to the group std (``grpo``).
        valid: ``[Q, G]`` bool or None; ``False`` rows (e.g. rejected by a gate) are left out of the group
            statistics and get advantage 0. Their scores may be anything, NaN included.
        tree_ids: ``[Q, G]`` or None: each rollout's tree within its group (Tree-GRPO rollouts,
            ``RolloutBatch.tree_ids``); passed only to estimators registered with ``tree_ids=True``.
        opts: the estimator's parsed options (drox.pipeline), passed only to one registered with options.
        step, total_steps: the training step (1-based) and the run's number of steps, passed only to an estimator
            registered with ``step=True`` (``nsr``'s A-NSR schedules).
    Returns:
        ``[Q, G]`` advantages, in the scores' floating dtype (float32 for integer/bool scores).
    Raises:
        ValueError: unknown estimator (the message lists the registered ones) or bad shapes.
    """
    component = ADVANTAGE_ESTIMATORS.get(estimator)
    extra: Dict[str, Any] = {"tree_ids": tree_ids} if component.meta.get("tree_ids") else {}
    if component.meta.get("step"):
        extra.update(step=step, total_steps=total_steps)
    if component.options is not None:
        extra["opts"] = opts if opts is not None else component.options()
    return component.fn(scores, eps=eps, valid=valid, **extra)


# ---------------------------------------------------------------------------------------------------------------
# 2. dense (per-token) advantages
# ---------------------------------------------------------------------------------------------------------------


def broadcast_to_tokens(adv: Tensor, mask: Tensor) -> Tensor:
    """Give every valid token of a rollout its sequence advantage (GRPO §4.1.2: ``Â_{i,t} = r̃_i``).

    Shapes: ``adv [N]`` (or ``[Q, G]``, flattened group-major), ``mask [N, T]`` -> ``[N, T]`` (0 on padding).
    """
    adv = adv.reshape(-1)
    if mask.dim() != 2 or adv.shape[0] != mask.shape[0]:
        raise ValueError(f"adv has {adv.shape[0]} rows but mask is {list(mask.shape)}; expected [N] and [N, T]")
    out_dtype = float_dtype(adv)
    return adv.to(out_dtype)[:, None] * mask.to(out_dtype)


def _rows_valid(valid: Optional[Tensor], n: int, device: torch.device) -> Tensor:
    if valid is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    valid = valid.reshape(-1).to(device=device, dtype=torch.bool)
    if valid.shape[0] != n:
        raise ValueError(f"valid has {valid.shape[0]} entries, expected N = {n}")
    return valid


def dense_process_advantages(
    token_rewards: Tensor,
    mask: Tensor,
    group_size: int,
    eps: float = 1e-6,
    reward_mask: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
) -> Tensor:
    """GRPO process supervision, DeepSeekMath (arXiv 2402.03300) §4.1.3; docs/algorithms.md.

    Step rewards sit at the end token of each step. They are normalised over *all* step rewards of *all* G
    outputs of the group, ``r̃ = (r - mean(R)) / (std(R) + eps)`` (unbiased std, as in :func:`grpo_advantages`;
    the paper writes ``std(R)`` without saying which, [ENG]), and each token gets the sum of the normalised
    rewards at its own and later positions (reward-to-go): ``Â_{i,t} = sum_{index(j) >= t} r̃_i^{index(j)}``.

    Args:
        token_rewards: ``[N, T]`` step rewards, ``N = Q * G`` group-major (``[Q, G, T]`` is also accepted).
        mask: ``[N, T]`` response mask.
        group_size: ``G``.
        eps: added to the group std.
        reward_mask: ``[N, T]`` bool or None: which positions carry a step reward. None -> the nonzero entries
            of ``token_rewards`` (so a step reward of exactly 0 is only counted when ``reward_mask`` says so).
            Positions are always intersected with ``mask``.
        valid: ``[N]`` or ``[Q, G]`` bool or None: rows left out of the group statistics; they get 0.
            (Rows whose ``mask`` is all 0 are left out automatically.)
    Returns:
        ``[N, T]`` token advantages (0 on padding). Groups with fewer than 2 step rewards, or whose step rewards
        are all identical, get exactly 0.
    """
    r, pos = _dense_positions(token_rewards, mask, reward_mask, valid)
    N, T = r.shape
    G = int(group_size)
    if G < 1 or N % G != 0:
        raise ValueError(f"N = {N} rows is not a multiple of group_size {G}")
    Q = N // G

    # group statistics over all step rewards of the group's G outputs: view each group as one row of G*T
    norm = grpo_advantages(r.reshape(Q, G * T), eps=eps, valid=pos.reshape(Q, G * T)).to(torch.float64)
    norm = norm.reshape(N, T)
    # reward-to-go: reverse cumulative sum along T (includes the reward at position t itself)
    rtg = norm.flip(-1).cumsum(-1).flip(-1)
    return (rtg * mask.to(torch.float64)).to(float_dtype(token_rewards))


def _dense_positions(token_rewards: Tensor, mask: Tensor, reward_mask: Optional[Tensor], valid: Optional[Tensor]):
    """``(r [N, T] float64, pos [N, T] bool)``: the dense rewards flattened to rows (``[Q, G, T]`` accepted) and the
    positions that carry one (``reward_mask``, else the nonzero entries; within ``mask`` and the valid rows), ``r`` 0
    everywhere else."""
    if token_rewards.dim() == 3:
        token_rewards = token_rewards.reshape(-1, token_rewards.shape[-1])
    if reward_mask is not None and reward_mask.dim() == 3:
        reward_mask = reward_mask.reshape(-1, reward_mask.shape[-1])
    _check_same_shape(token_rewards=token_rewards, mask=mask, reward_mask=reward_mask)
    rows = _rows_valid(valid, token_rewards.shape[0], token_rewards.device)
    r = token_rewards.to(torch.float64)
    pos = (r != 0) if reward_mask is None else reward_mask.to(torch.bool)
    pos = pos & mask.to(torch.bool) & rows[:, None]
    return torch.where(pos, r, torch.zeros_like(r)), pos


def per_token_advantages(
    token_rewards: Tensor,
    mask: Tensor,
    reward_mask: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
) -> Tensor:
    """Each dense reward as its own token's advantage, ``Â_{i,t} = r_{i,t}``: no group normalisation, no sum over
    later tokens (discount 0). The on-policy distillation recipe, where ``r_t`` is the teacher's minus the policy's
    log-probability of the sampled token (docs/algorithms.md "On-policy distillation: a teacher's per-token reverse
    KL"); ``trainer.advantage.dense=per_token``.

    Shapes: ``token_rewards [N, T]`` (or ``[Q, G, T]``), ``mask [N, T]``, ``reward_mask`` and ``valid`` as in
    :func:`dense_process_advantages` -> ``[N, T]``, 0 off the rewarded positions and on rows that are not valid.
    """
    r, _ = _dense_positions(token_rewards, mask, reward_mask, valid)
    return r.to(float_dtype(token_rewards))


DENSE_ADVANTAGES = ("reward_to_go", "per_token")
"""``trainer.advantage.dense``: :func:`dense_process_advantages` | :func:`per_token_advantages` (drox.config's CHOICES
holds the same names for the config check)."""


def combine_advantages(
    seq_adv: Optional[Tensor],
    token_adv: Optional[Tensor],
    seq_weight: float = 1.0,
    token_weight: float = 1.0,
) -> Tensor:
    """Sum a broadcast sequence advantage and a dense token advantage: ``w_s * seq_adv + w_t * token_adv``.

    Shapes: ``seq_adv [N, T] | None``, ``token_adv [N, T] | None`` -> ``[N, T]``. One of them may be None
    (then the other, times its weight, is returned); both None -> ValueError.
    """
    if seq_adv is None and token_adv is None:
        raise ValueError("combine_advantages needs at least one of seq_adv / token_adv")
    if seq_adv is None:
        return token_weight * token_adv
    if token_adv is None:
        return seq_weight * seq_adv
    _check_same_shape(seq_adv=seq_adv, token_adv=token_adv)
    return seq_weight * seq_adv + token_weight * token_adv


def token_advantages(
    seq_adv: Optional[Tensor],
    token_scores: Optional[Tensor],
    mask: Tensor,
    group_size: Optional[int] = None,
    eps: float = 1e-6,
    reward_mask: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
    dense: str = "reward_to_go",
) -> Tensor:
    """Per-token advantages from per-rollout advantages and/or per-token scores.

    Args:
        seq_adv: ``[Q, G]`` or ``[N]`` sequence advantages (already from :func:`compute_advantages`), or None.
        token_scores: ``[Q, G, T]`` or ``[N, T]`` raw dense scores (step rewards), or None; turned into
            advantages by :func:`dense_process_advantages` (DeepSeekMath §4.1.3 process supervision) or, with
            ``dense="per_token"``, :func:`per_token_advantages` (each score at its own token).
        mask: ``[N, T]`` response mask.
        group_size: ``G``; needed only when ``token_scores`` is ``[N, T]`` and ``seq_adv`` is not ``[Q, G]``.
        eps, reward_mask, valid: passed to :func:`dense_process_advantages` (reward_mask, valid: also to
            :func:`per_token_advantages`).
        dense: ``trainer.advantage.dense``, one of :data:`DENSE_ADVANTAGES`.
    Returns:
        ``[N, T]``: ``broadcast_to_tokens(seq_adv) + dense advantages(token_scores)`` (missing terms
        are omitted; both None -> ValueError).
    """
    if dense not in DENSE_ADVANTAGES:
        raise ValueError(f"dense={dense!r}; choose one of: {', '.join(DENSE_ADVANTAGES)}")
    seq_tok = broadcast_to_tokens(seq_adv, mask) if seq_adv is not None else None
    dense_tok = None
    if token_scores is not None and dense == "per_token":
        dense_tok = per_token_advantages(token_scores, mask, reward_mask=reward_mask, valid=valid)
    elif token_scores is not None:
        G = group_size
        if token_scores.dim() == 3:
            G = token_scores.shape[1] if G is None else G
            if G != token_scores.shape[1]:
                raise ValueError(f"group_size {G} disagrees with token_scores {list(token_scores.shape)}")
        elif G is None and seq_adv is not None and seq_adv.dim() == 2:
            G = seq_adv.shape[1]
        if G is None:
            raise ValueError("token_scores is [N, T]: pass group_size (or seq_adv as [Q, G])")
        dense_tok = dense_process_advantages(token_scores, mask, G, eps=eps, reward_mask=reward_mask, valid=valid)
    return combine_advantages(seq_tok, dense_tok)


# ---------------------------------------------------------------------------------------------------------------
# 2b. VERL exploration-exploitation advantage shaping (Huang et al., arXiv 2509.23808)
# ---------------------------------------------------------------------------------------------------------------

#: the order of VERL's three hidden-state statistics in every ``[..., 3]`` tensor below
VERL_STATS = ("era", "erv", "er")


def verl_relative_deviation(stats: Tensor, baseline: Tensor, clip: float = 5.0, eps: float = 1e-8) -> Tensor:
    """VERL's relative deviation of each response's statistics from their running baselines.

    ``delta = clamp((x - mu) / (|mu| + eps), -clip, clip)``, per statistic. Shapes: ``stats [N, 3]`` (columns
    :data:`VERL_STATS`: ERA, ERV, ER of each response, models/effective_rank.rank_dynamics), ``baseline [3]`` (the
    EMA of their batch means over earlier steps, :func:`verl_ema_update`) -> ``[N, 3]`` float64.
    """
    if stats.dim() != 2 or stats.shape[-1] != 3 or baseline.shape != (3,):
        raise ValueError(f"stats must be [N, 3] and baseline [3], got {list(stats.shape)} and {list(baseline.shape)}")
    x, mu = stats.to(torch.float64), baseline.to(device=stats.device, dtype=torch.float64)
    return ((x - mu) / (mu.abs() + eps)).clamp(-clip, clip)


def verl_ema_update(baseline: Optional[Tensor], batch_mean: Tensor, alpha: float) -> Tensor:
    """The running baseline after one more step: ``(1 - alpha) * mu + alpha * m`` with ``m`` this step's batch
    mean ``[3]``; the first step's mean itself when there is no baseline yet (``baseline`` None) [ENG: the
    authors' code starts the EMA at 0, which makes the next step's relative deviations hit the clip]."""
    m = batch_mean.to(torch.float64)
    if baseline is None:
        return m.clone()
    return (1.0 - alpha) * baseline.to(torch.float64) + alpha * m


def verl_shaped_advantages(
    adv: Tensor,
    stats: Tensor,
    baseline: Tensor,
    w_explore=(0.0, 0.0, 1.0),
    w_exploit=(0.0, 1.0, 0.0),
    gain: float = 2.0,
    weight: float = 1.0,
    kappa: float = 2.0,
    clip: float = 5.0,
    valid: Optional[Tensor] = None,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """VERL's exploration-exploitation shaping of sequence advantages (Huang et al., arXiv 2509.23808, the method
    "VERL"; the paper's equation numbers were not checked: the formulas are the authors' code's, hf618/VERL
    ``verl/trainer/reward_manager_versions.py`` for the auxiliary signal and ``verl/trainer/ppo/ray_trainer.py``
    ``compute_advantage`` for the clipped bonus; docs/algorithms.md "VERL advantage shaping").

    For response ``i`` with statistics ``x_i = (ERA_i, ERV_i, ER_i)`` and relative deviations
    ``delta_i = verl_relative_deviation(x_i, baseline, clip)``:

    * meta-controller (ERA): ``g_i = sigmoid(gain * delta_i[ERA])``;
    * dual-channel weights: ``w_i = g_i * w_explore + (1 - g_i) * w_exploit``;
    * auxiliary signal: ``phi_i = weight * sum_m w_i[m] * tanh(delta_i[m])`` (defaults: ``g_i tanh(delta_ER) +
      (1 - g_i) tanh(delta_ERV)``: exploration, ER above its baseline, is rewarded when ERA is above its
      baseline, exploitation, ERV above its baseline, when it is below);
    * bonus: ``b_i = min(max(phi_i, 0), |A_i| / kappa)``; shaped advantage ``A_i + b_i``.

    The bonus is never negative and never more than ``|A_i| / kappa``, so it cannot flip a sign and a group with
    no contrast (``A = 0``) gets none. It is added to the group-normalised advantage (not normalised again).

    Args:
        adv: ``[Q, G]`` (or ``[N]``) advantages from the estimator / combiner.
        stats: ``[N, 3]`` per-response ``(ERA, ERV, ER)``, group-major like ``adv``.
        baseline: ``[3]`` the running baselines of the three statistics.
        w_explore, w_exploit: 3 weights each, in :data:`VERL_STATS` order.
        gain: the slope of the ERA gate; weight: the overall scale of ``phi``; kappa: the bonus cap divisor.
        clip: bound of the relative deviations. valid: ``[Q, G]`` bool or None; invalid rows get no bonus.
    Returns:
        ``(shaped adv, shape of adv; parts)``, ``parts`` holding ``[N]`` float64 tensors ``delta`` ``[N, 3]``,
        ``gate``, ``phi``, ``bonus``.
    """
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")
    a = adv.reshape(-1).to(torch.float64)
    if stats.shape[0] != a.shape[0]:
        raise ValueError(f"stats has {stats.shape[0]} rows but adv has {a.shape[0]} entries")
    delta = verl_relative_deviation(stats.to(a.device), baseline, clip)  # [N, 3]
    gate = torch.sigmoid(gain * delta[:, 0])  # [N]
    w_e = torch.as_tensor(w_explore, dtype=torch.float64, device=a.device)
    w_x = torch.as_tensor(w_exploit, dtype=torch.float64, device=a.device)
    w = gate[:, None] * w_e + (1.0 - gate[:, None]) * w_x  # [N, 3]
    phi = weight * (w * torch.tanh(delta)).sum(-1)  # [N]
    bonus = torch.minimum(phi.clamp_min(0.0), a.abs() / kappa)
    rows = _rows_valid(valid, a.shape[0], a.device)
    bonus = torch.where(rows, bonus, torch.zeros_like(bonus))
    shaped = (a + bonus).reshape(adv.shape).to(float_dtype(adv))
    return shaped, {"delta": delta, "gate": gate, "phi": phi, "bonus": bonus}


# ---------------------------------------------------------------------------------------------------------------
# 3. loss aggregation
# ---------------------------------------------------------------------------------------------------------------

def loss_normalisers(mask: Tensor) -> Dict[str, float]:
    """Global normalisers of a mini-batch, to pass to every micro-batch's :func:`agg_loss` / :func:`policy_loss`.

    Shapes: ``mask [N, T]`` -> ``{"num_tokens": sum of mask, "num_seqs": number of rows with >= 1 valid token}``.
    """
    m = mask.float()
    return {"num_tokens": float(m.sum().item()), "num_seqs": float((m.sum(-1) > 0).sum().item())}


@LOSS_AGGREGATIONS.register("token-mean")
def token_mean(loss_mat: Tensor, mask: Tensor, max_len=None, num_seqs=None, num_tokens=None) -> Tensor:
    """``sum_{i,t} L m / sum_{i,t} m``: DAPO Eq. 12, the token-level loss (verl's default)."""
    m = mask.to(loss_mat.dtype)
    denom = m.sum() if num_tokens is None else torch.as_tensor(float(num_tokens), dtype=loss_mat.dtype)
    return (loss_mat * m).sum() / denom.to(loss_mat.device).clamp_min(1.0)


def _seq_mean(per_seq: Tensor, tok_count: Tensor, num_seqs: Optional[float]) -> Tensor:
    """Mean of per-sequence values over the non-empty sequences (or over the global ``num_seqs``)."""
    if num_seqs is None:
        denom = (tok_count > 0).sum().to(per_seq.dtype)
    else:
        denom = torch.as_tensor(float(num_seqs), dtype=per_seq.dtype, device=per_seq.device)
    return per_seq.sum() / denom.clamp_min(1.0)


@LOSS_AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(loss_mat: Tensor, mask: Tensor, max_len=None, num_seqs=None, num_tokens=None) -> Tensor:
    """``(1/|S|) sum_{i in S} (sum_t L m) / n_i``: GRPO Eq. 3 (1/G and 1/|o_i|)."""
    m = mask.to(loss_mat.dtype)
    tok_count = m.sum(-1)
    return _seq_mean((loss_mat * m).sum(-1) / tok_count.clamp_min(1.0), tok_count, num_seqs)


@LOSS_AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss_mat: Tensor, mask: Tensor, max_len=None, num_seqs=None, num_tokens=None) -> Tensor:
    """``(1/|S|) sum_{i in S} (sum_t L m) / max_len``: Dr. GRPO as its authors coded it (per-sequence token
    sum over the constant generation budget). verl's mode of this name omits the 1/|S| (a constant factor)."""
    if max_len is None or max_len <= 0:
        raise ValueError("seq-mean-token-sum-norm needs max_len > 0 (the max generation length, Dr. GRPO)")
    m = mask.to(loss_mat.dtype)
    return _seq_mean((loss_mat * m).sum(-1) / float(max_len), m.sum(-1), num_seqs)


@LOSS_AGGREGATIONS.register("seq-mean-token-sum")
def seq_mean_token_sum(loss_mat: Tensor, mask: Tensor, max_len=None, num_seqs=None, num_tokens=None) -> Tensor:
    """``(1/|S|) sum_{i in S} sum_t L m``."""
    m = mask.to(loss_mat.dtype)
    return _seq_mean((loss_mat * m).sum(-1), m.sum(-1), num_seqs)


def agg_loss(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    max_len: Optional[int] = None,
    num_seqs: Optional[float] = None,
    num_tokens: Optional[float] = None,
) -> Tensor:
    """Aggregate a per-token loss matrix into a scalar with the registered aggregation ``mode``.

    Modes (``m`` = mask, ``n_i = sum_t m_it``, ``S`` = sequences with ``n_i > 0``): ``token-mean``,
    ``seq-mean-token-mean``, ``seq-mean-token-sum-norm``, ``seq-mean-token-sum`` (see each function and
    docs/algorithms.md "Loss aggregation"). Empty sequences contribute 0 and are excluded from ``|S|``; an
    all-empty batch gives 0 (never NaN), still attached to the graph.

    Gradient accumulation: pass the *global* normalisers of the whole mini-batch (:func:`loss_normalisers`)
    to each micro-batch call; then the sum of the micro-batch losses equals the loss of the full mini-batch
    in every mode. Without them each micro-batch is normalised by its own counts.

    Shapes: ``loss_mat [N, T]``, ``mask [N, T]`` (0/1, any dtype) -> scalar. ``max_len``: the constant
    normaliser of ``seq-mean-token-sum-norm`` (the max generation length, not a micro-batch's padded T).
    """
    fn = LOSS_AGGREGATIONS.get(mode).fn
    _check_same_shape(loss_mat=loss_mat, mask=mask)
    return fn(loss_mat, mask, max_len=max_len, num_seqs=num_seqs, num_tokens=num_tokens)


# ---------------------------------------------------------------------------------------------------------------
# 4. policy losses: PPO clipped surrogate, GSPO, GSPO-token, CISPO
# ---------------------------------------------------------------------------------------------------------------


def _check_range(clip_low: float, clip_high: float, low_below_one: bool = True) -> None:
    if not clip_low >= 0 or not clip_high >= 0 or (low_below_one and clip_low >= 1):
        bound = "0 <= clip_low < 1" if low_below_one else "clip_low >= 0"
        raise ValueError(f"need {bound} and clip_high >= 0, got {clip_low}, {clip_high}")


def _prepare_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """The advantages as a detached ``[N, T]`` tensor in the log-probs' dtype (``[N]`` is broadcast over T); checks
    that every input is ``[N, T]``."""
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    return advantages.detach().to(logprobs.dtype)


def _clipped_surrogate(ratio: Tensor, adv: Tensor, clip_low: float, clip_high: float) -> Tuple[Tensor, Tensor]:
    """PPO's ``-min(ratio A, clip(ratio, 1 - clip_low, 1 + clip_high) A)`` elementwise, and where the clipped branch
    was taken. Computed as ``where(clipped, clipped_branch, unclipped)`` with ``clipped = clipped_branch > unclipped``
    (strict): the gradient w.r.t. ``ratio`` is exactly 0 where clipped and exactly ``-A`` elsewhere (a tie at the
    boundary counts as unclipped)."""
    unclipped = -adv * ratio
    clipped_branch = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    is_clipped = clipped_branch > unclipped
    return torch.where(is_clipped, clipped_branch, unclipped), is_clipped


def _max_over(values: Tensor, where: Tensor) -> Tensor:
    """The largest entry of ``values`` (ratios, so >= 0) where ``where`` holds; 0.0 when it holds nowhere."""
    return torch.where(where, values, torch.full_like(values, -float("inf"))).max().clamp_min(0.0)


def _mean_kl(logprobs: Tensor, old_logprobs: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``old_logprobs - logprobs`` over valid tokens (k1 estimate of KL(pi_old || pi)); padding is selected
    away, so a -inf log-prob there cannot make it NaN."""
    diff = torch.where(valid, (old_logprobs - logprobs).detach().float(), torch.zeros((), device=valid.device))
    return masked_mean(diff, valid)


def _loss_stats(over: Tensor, clipped: Tensor, high: Tensor, low: Tensor, ratio: Tensor, adv: Tensor, kl: Tensor,
                **extra: Tensor) -> Dict[str, float]:
    """A policy loss's stats as python floats, over the entries where ``over`` holds (0.0 when none does):
    ``clip_frac``, ``clip_frac_high``, ``clip_frac_low`` (the shares of ``clipped``, ``high``, ``low``),
    ``ratio_mean``, ``ratio_max``, ``adv_mean``, ``ppo_kl`` (``kl``, already a mean) and the mean of each ``extra``."""
    with torch.no_grad():
        values = {"clip_frac": clipped, "clip_frac_high": high, "clip_frac_low": low, "ratio_mean": ratio,
                  "adv_mean": adv, **extra}
        values = {k: masked_mean(v.detach().float(), over) for k, v in values.items()}
        values["ratio_max"] = _max_over(ratio.detach().float(), over)
        values["ppo_kl"] = kl.detach().float()
        return dict(zip(values, map(float, torch.stack(list(values.values())).tolist())))  # one device sync


@POLICY_LOSSES.register("ppo_clip", verl="drox.integrations.verl.mapping:nothing")
def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token-mean",
    max_len: Optional[int] = None,
    num_seqs: Optional[float] = None,
    num_tokens: Optional[float] = None,
    log_ratio_clamp: float = 20.0,
) -> Tuple[Tensor, Dict[str, float]]:
    """PPO clipped surrogate (Schulman et al. 2017) with clip-higher (DAPO Eq. 10); GRPO Eq. 3 without the KL.

    ``ratio = exp(logprobs - old_logprobs)``,
    ``L = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)`` per token, aggregated by
    :func:`agg_loss` (``agg``, ``max_len``, ``num_seqs``, ``num_tokens``). No dual clip (docs/algorithms.md).

    The per-token loss is computed as ``where(clipped, clipped_branch, unclipped_branch)`` with
    ``clipped = clipped_branch > unclipped_branch`` (strict), so the gradient w.r.t. ``logprobs`` is exactly
    zero on clipped tokens and exactly ``-A * ratio`` elsewhere (ties at the boundary count as unclipped).
    ``old_logprobs`` and ``advantages`` are treated as constants (detached). The log-ratio is clamped to
    ``[-log_ratio_clamp, log_ratio_clamp]`` before ``exp`` (as verl does) so extreme ratios cannot overflow.

    Args:
        logprobs, old_logprobs, mask: ``[N, T]``. advantages: ``[N, T]`` (or ``[N]``, broadcast over T).
        clip_low, clip_high: epsilons below / above 1 (DAPO: 0.2 / 0.28).
    Returns:
        ``(loss scalar, stats)``; stats are python floats over valid tokens (0.0 when there are none):
        ``clip_frac`` (fraction of valid tokens on the clipped branch, i.e. zero gradient), ``clip_frac_high``
        (ratio > 1 + clip_high with A > 0), ``clip_frac_low`` (ratio < 1 - clip_low with A < 0),
        ``ratio_mean``, ``ratio_max``, ``adv_mean``, ``ppo_kl`` (mean of ``old_logprobs - logprobs``).
    """
    adv = _prepare_loss(logprobs, old_logprobs, advantages, mask)
    _check_range(clip_low, clip_high)
    log_ratio = (logprobs - old_logprobs.detach()).clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    loss_mat, is_clipped = _clipped_surrogate(ratio, adv, clip_low, clip_high)
    loss = agg_loss(loss_mat, mask, agg, max_len=max_len, num_seqs=num_seqs, num_tokens=num_tokens)
    valid = mask.to(torch.bool)
    return loss, _loss_stats(valid, is_clipped, is_clipped & (adv > 0), is_clipped & (adv < 0), ratio, adv,
                             masked_mean(-log_ratio.detach().float(), valid))


def sequence_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, clamp: float = 20.0) -> Tensor:
    """GSPO's length-normalised sequence log-ratio ``log s_i = (1/|o_i|) sum_t m_it (logprobs - old_logprobs)``.

    Shapes: all ``[N, T]`` -> ``[N]``; 0 for a row without valid tokens; clamped to ``[-clamp, clamp]`` (so ``exp``
    cannot overflow). Padding entries may hold anything, -inf included: they are selected away, not multiplied by
    0. ``old_logprobs`` is a constant (detached); the gradient reaches ``logprobs``.
    """
    valid = mask.to(torch.bool)
    diff = torch.where(valid, logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))
    count = valid.sum(-1).to(logprobs.dtype)
    return (diff.sum(-1) / count.clamp_min(1.0)).clamp(-clamp, clamp)


@POLICY_LOSSES.register("gspo", GSPOConfig, verl="not mapped to verl yet: the verl backend runs ppo_clip only")
def gspo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    agg: str = "token-mean",
    max_len: Optional[int] = None,
    num_seqs: Optional[float] = None,
    num_tokens: Optional[float] = None,
    log_ratio_clamp: float = 20.0,
    token_level: bool = False,
) -> Tuple[Tensor, Dict[str, float]]:
    """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv 2507.18071): one importance ratio and one
    clipping decision per response; docs/algorithms.md "GSPO: sequence-level importance ratio".

    ``s_i = exp((1/|o_i|) sum_t (logprobs - old_logprobs))`` (:func:`sequence_log_ratio`, the geometric mean of the
    token ratios), ``A_i`` = the mean of the row's advantages over its valid tokens (the sequence advantage when it
    was broadcast), ``L_i = -min(s_i A_i, clip(s_i, 1 - clip_low, 1 + clip_high) A_i)`` (the clipped branch taken
    strictly, as :func:`policy_loss`: a clipped response gets exactly zero gradient, an unclipped one
    ``d L_i / d logprobs_{i,t} = -A_i s_i / |o_i|``). Every valid token of row ``i`` carries ``L_i`` and
    :func:`agg_loss` aggregates: ``seq-mean-token-mean`` gives the paper's ``(1/G) sum_i L_i``, and with any mode the
    gradient at ``s = 1`` is the on-policy policy gradient under that mode.

    ``token_level=True`` is GSPO-token (:func:`gspo_token_loss`).

    Args:
        logprobs, old_logprobs, mask: ``[N, T]``. advantages: ``[N, T]`` or ``[N]``.
        clip_low, clip_high: epsilons of the sequence ratio (``trainer.gspo``; the paper's 3e-4 / 4e-4).
    Returns:
        ``(loss scalar, stats)``, stats over the rows with at least one valid token (0.0 when there are none):
        ``clip_frac`` (share of those responses on the clipped branch), ``clip_frac_high`` (``s > 1 + clip_high``
        with ``A > 0``), ``clip_frac_low`` (``s < 1 - clip_low`` with ``A < 0``), ``ratio_mean`` / ``ratio_max`` (of
        ``s_i``), ``adv_mean`` (of ``A_i``), ``ppo_kl`` (the token mean of ``old_logprobs - logprobs``).
    """
    adv = _prepare_loss(logprobs, old_logprobs, advantages, mask)
    _check_range(clip_low, clip_high)
    valid = mask.to(torch.bool)
    log_s = sequence_log_ratio(logprobs, old_logprobs, mask, log_ratio_clamp)  # [N]
    if token_level:  # s_{i,t} = sg(s_i) pi / sg(pi): the value s_i, the gradient s_i * d logprobs_{i,t}
        handle = torch.where(valid, logprobs - logprobs.detach(), torch.zeros_like(logprobs))
        ratio, over = torch.exp(log_s.detach()[:, None] + handle), valid  # [N, T]
    else:
        ratio, adv, over = torch.exp(log_s), masked_mean(adv, valid, dim=-1), valid.any(-1)  # [N]
    loss_mat, is_clipped = _clipped_surrogate(ratio, adv, clip_low, clip_high)
    if not token_level:
        loss_mat = loss_mat[:, None].expand_as(logprobs)
    loss = agg_loss(loss_mat, mask, agg, max_len=max_len, num_seqs=num_seqs, num_tokens=num_tokens)
    return loss, _loss_stats(over, is_clipped, is_clipped & (adv > 0), is_clipped & (adv < 0), ratio, adv,
                             _mean_kl(logprobs, old_logprobs, valid))


@POLICY_LOSSES.register("gspo_token", GSPOConfig, options_key="trainer.gspo",
                        verl="not mapped to verl yet: the verl backend runs ppo_clip only")
def gspo_token_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                    **kwargs: Any) -> Tuple[Tensor, Dict[str, float]]:
    """GSPO-token (arXiv 2507.18071): GSPO's sequence ratio with a per-token handle, so that every token can carry its
    own advantage; docs/algorithms.md "GSPO: sequence-level importance ratio".

    ``s_{i,t} = sg(s_i) * exp(logprobs_{i,t} - sg(logprobs_{i,t}))``: numerically ``s_i`` at every token, with the
    gradient of ``s_i * logprobs_{i,t}``. Per token ``L_{i,t} = -min(s_{i,t} A_{i,t}, clip(s_{i,t}, 1 - clip_low,
    1 + clip_high) A_{i,t})``, aggregated by :func:`agg_loss`. The clipping decision is per token (it depends on the
    sign of ``A_{i,t}``) but on the sequence ratio; with the same advantage on every token of a response this is
    :func:`gspo_loss` exactly, value and gradient.

    Shapes and keyword arguments as :func:`gspo_loss` (options from ``trainer.gspo``). Stats as :func:`policy_loss`'s,
    over valid tokens: ``clip_frac`` is the share of valid *tokens* on the clipped branch; ``ratio_mean`` /
    ``ratio_max`` of ``s_{i,t}`` (each response's ratio weighted by its length).
    """
    return gspo_loss(logprobs, old_logprobs, advantages, mask, token_level=True, **kwargs)


@POLICY_LOSSES.register("cispo", CISPOConfig, verl="not mapped to verl yet: the verl backend runs ppo_clip only")
def cispo_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_low: float = 1.0,
               clip_high: float = 0.2, agg: str = "token-mean", max_len: Optional[int] = None,
               num_seqs: Optional[float] = None, num_tokens: Optional[float] = None,
               log_ratio_clamp: float = 20.0) -> Tuple[Tensor, Dict[str, float]]:
    """CISPO (MiniMax-M1, arXiv 2506.13585): clip the importance-sampling weight, not the update, and stop its
    gradient, so every token keeps a gradient; docs/algorithms.md "CISPO: clipped importance-sampling weight".

    ``r = exp(clamp(logprobs - old_logprobs, ±log_ratio_clamp))``, ``w = sg(clip(r, 1 - clip_low, 1 + clip_high))``,
    ``L_{i,t} = -w_{i,t} A_{i,t} logprobs_{i,t}``, aggregated by :func:`agg_loss` (the paper normalises by the batch's
    token count: ``token-mean``). Only the gradient is meaningful, ``d L / d logprobs = -w A`` per token (times the
    aggregation's weight); the loss value includes ``logprobs`` itself and is not a surrogate objective.
    ``clip_low >= 1`` sets no lower bound (the paper's choice; the default).

    Shapes and arguments as :func:`policy_loss` (options from ``trainer.cispo``). Stats over valid tokens:
    ``clip_frac`` (share of tokens whose weight was clipped, either side), ``clip_frac_high`` (``r > 1 + clip_high``),
    ``clip_frac_low`` (``r < 1 - clip_low``), ``ratio_mean`` / ``ratio_max`` (of ``r``, before clipping),
    ``weight_mean`` (of ``w``), ``adv_mean``, ``ppo_kl``.
    """
    adv = _prepare_loss(logprobs, old_logprobs, advantages, mask)
    _check_range(clip_low, clip_high, low_below_one=False)
    log_ratio = (logprobs.detach() - old_logprobs.detach()).clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    weight = ratio.clamp(max(1.0 - clip_low, 0.0), 1.0 + clip_high)
    # padding may hold -inf log-probs: select them away instead of multiplying (0 * inf is NaN)
    valid = mask.to(torch.bool)
    loss_mat = torch.where(valid, -weight * adv * logprobs, torch.zeros_like(logprobs))
    loss = agg_loss(loss_mat, mask, agg, max_len=max_len, num_seqs=num_seqs, num_tokens=num_tokens)
    high, low = ratio > 1.0 + clip_high, ratio < 1.0 - clip_low
    return loss, _loss_stats(valid, high | low, high, low, ratio, adv, masked_mean(-log_ratio.float(), valid),
                             weight_mean=weight)


def resolve_policy_loss(stage: Any, trainer_cfg: Any) -> Tuple[Any, Dict[str, Any]]:
    """``(fn, clip kwargs)`` of ``trainer.policy_loss``: a loss registered with an options dataclass gets its fields
    as keyword arguments (``stage.opts``, parsed by drox.pipeline from ``trainer.<name>``); one without options gets
    ``trainer.clip_low`` / ``trainer.clip_high``. ``stage`` None (a pipeline built by hand): the options are parsed
    here from the trainer config."""
    if stage is None:
        component = POLICY_LOSSES.get(trainer_cfg.policy_loss)
        fn, opts = component.fn, None
        if component.options is not None:
            where = component.meta.get("options_key") or f"trainer.{component.name}"
            raw = getattr(trainer_cfg, where.rpartition(".")[2], None)
            opts = parse_dataclass(component.options, raw, where)
    else:
        fn, opts = stage.fn, stage.opts
    if opts is None:
        return fn, {"clip_low": trainer_cfg.clip_low, "clip_high": trainer_cfg.clip_high}
    return fn, dataclasses.asdict(opts)


def truncated_is_weights(
    trainer_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor, cap: float
) -> Tuple[Tensor, Dict[str, float]]:
    """Truncated importance weights for a sampler whose distribution differs from the trainer's (TIS).

    ``w_t = min(exp(trainer_logprobs_t - sampler_logprobs_t), cap)`` per token, detached (Yao et al. 2025, "Your
    efficient RL framework secretly brings you off-policy RL training"; the correction verl and TRL apply to vLLM
    rollouts). The update multiplies each token's policy-gradient term by ``w_t``; since ``w_t > 0`` this is the
    same as scaling the token's advantage, and it leaves which PPO branch is clipped unchanged.

    Shapes: all ``[N, T]`` -> weights ``[N, T]`` (1 on padding). Stats over valid tokens: ``tis/weight_mean``,
    ``tis/truncated_frac`` (weights that hit the cap), ``tis/mismatch_kl`` (mean of sampler - trainer log-prob, a
    k1 estimate of KL(sampler || trainer)).
    """
    _check_same_shape(trainer_logprobs=trainer_logprobs, sampler_logprobs=sampler_logprobs, mask=mask)
    if not cap > 0:
        raise ValueError(f"the truncation cap must be > 0, got {cap}")
    valid = mask.to(torch.bool)
    raw = torch.exp((trainer_logprobs - sampler_logprobs).detach().float().clamp(max=20.0))
    weights = torch.where(valid, raw.clamp(max=cap), torch.ones_like(raw))
    values = torch.stack([
        masked_mean(weights, valid),
        masked_mean((raw >= cap).float(), valid),
        masked_mean((sampler_logprobs - trainer_logprobs).detach().float(), valid),
    ]).tolist()
    return weights, dict(zip(("tis/weight_mean", "tis/truncated_frac", "tis/mismatch_kl"), map(float, values)))


# ---------------------------------------------------------------------------------------------------------------
# 5. KL estimators
# ---------------------------------------------------------------------------------------------------------------


def _kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return logprobs - ref_logprobs


def _kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return 0.5 * (logprobs - ref_logprobs).square()


def _kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    d = ref_logprobs - logprobs
    return (torch.exp(d) - d - 1.0).clamp(-10.0, 10.0)


# verl's names for the same estimators: kl = k1, mse = k2, low_var_kl = k3
for _name, _fn in (("k1", _kl_k1), ("k2", _kl_k2), ("k3", _kl_k3), ("kl", _kl_k1), ("mse", _kl_k2),
                   ("low_var_kl", _kl_k3)):
    KL_ESTIMATORS.register(_name)(_fn)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from sampled-token log-probs (Schulman, "Approximating KL").

    * ``k1``: ``logp - logp_ref``
    * ``k2``: ``0.5 * (logp - logp_ref)^2``
    * ``k3``: ``exp(logp_ref - logp) - (logp_ref - logp) - 1`` — GRPO Eq. 4 (>= 0); clamped to ``[-10, 10]`` as
      verl's ``low_var_kl`` does (only the upper bound can bind; beyond it the gradient is 0).

    Shapes: ``logprobs [N, T]``, ``ref_logprobs [N, T]`` -> ``[N, T]`` (unmasked; aggregate with
    :func:`agg_loss`). Unknown estimator -> ValueError listing :data:`KL_ESTIMATORS`.
    """
    fn = KL_ESTIMATORS.get(estimator).fn
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    return fn(logprobs, ref_logprobs)
