"""What drox's trainer subclass adds to verl's advantage step (no verl import; ``trainer.py`` is the verl glue).

verl 0.9.1 hands a registered estimator only ``token_level_rewards``, ``response_mask``, the group ids and
``config.algorithm`` (docs/verl.md "Advantage estimators"), so what needs more than that runs in the trainer, after
verl's own advantage step, on the fields verl keeps per trajectory:

* **multi-objective advantages** (``trainer.advantage.combine`` = ``dvao`` | ``sum_then_normalize`` |
  ``normalize_then_sum`` | ``normalize_then_sum_no_batch``): each reward source's own score, which
  ``DroxRewardManager`` puts in ``reward_extra_info`` (``outcome``, ``format``), becomes a column of the table
  ``[Q, G, K]`` that :func:`drox.trainers.multiobj.combine_objectives` turns into one advantage per rollout
  (DVAO: arXiv 2605.25604, ``A_i = Σ_k b_k (r_ik − μ_k) / Σ_k b_k σ_k``; GDPO: arXiv 2601.05242); every valid token
  of the rollout gets it (:func:`drox.trainers.algos.broadcast_to_tokens`), replacing verl's advantage;
* **DRO's R3 reward** (``+reward=variance``, v1 §4.1.3): the rollout side put each trajectory's reference-token
  log-probs ``L[i, :]`` in ``extra_fields["drox_L"]``; per group, ``R3_i = Σ_j w(σ_j) L[i, j]``
  (:func:`drox.integrations.verl.r3.group_r3`) is added, times the source's weight, to the rule rewards' sum
  (``rm_scores``), and drox's estimator (``grpo`` | ``dr_grpo`` | ``rloo``) turns the total into the advantage of
  every valid token, replacing verl's;
* **dense PRM step rewards** (``+reward=prm`` with ``reward.prm.dense=true``; DeepSeekMath, arXiv 2402.03300,
  §4.1.3 process supervision): ``DroxRewardManager`` put each step's score and the response token where the step ends
  in ``reward_extra_info["drox_steps"]`` (JSON, :mod:`drox.integrations.verl.rules`); the scores, times the source's
  weight, are placed at those tokens (:func:`dense_step_rewards`), normalised over all step rewards of the group and
  summed from each token on (:func:`drox.trainers.algos.dense_process_advantages`), and that reward-to-go is added to
  the sequence advantage (verl's estimator over the other sources, or the combiner's, or R3's), which is how drox's
  own trainer combines them (``trainers/loop.advantages``: ``algos.token_advantages(seq_adv, token, ...)``);
* **the 80/20 token mask** (``+filter=entropy``; Wang et al., arXiv 2506.01939): the top-ρ tokens by the entropy
  verl computed under the sampling policy (its ``entropy`` field) over the whole batch
  (:func:`drox.filters.entropy.entropy_filter`, scope ``batch``); the others leave ``response_mask``, which is the
  mask verl's policy loss aggregates over, so token-mean divides by the kept tokens as in drox.

Options come from the ``drox.trainer`` block of verl's config (:class:`TrainerSide`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple


import torch

from drox.integrations.verl import config_get
from drox.integrations.verl.estimators import group_rows

Tensor = torch.Tensor

__all__ = ["TrainerSide", "dense_advantages", "dense_step_rewards", "dense_steps_of", "objective_table",
           "trainer_side_advantages"]


@dataclass(frozen=True)
class TrainerSide:
    """``drox.trainer`` of verl's config: ``combine`` (``sum`` = verl's estimator as configured), ``objectives`` and
    ``weights`` (the sources' ``reward_extra_info`` keys and weights, K of each), ``eps``, ``entropy_rho`` (None =
    no token mask) and ``entropy_invert``."""

    combine: str = "sum"
    objectives: Tuple[str, ...] = ()
    weights: Tuple[float, ...] = ()
    eps: float = 1e-6
    entropy_rho: Optional[float] = None
    entropy_invert: bool = False
    r3: bool = False
    estimator: str = "grpo"
    dense: bool = False
    dense_weight: float = 1.0

    @classmethod
    def from_config(cls, drox_node: Any) -> "TrainerSide":
        """``drox.trainer.*``, and ``drox.reward.prm.{enable,dense,weight}`` (the keys ``DroxRewardManager`` reads, so
        the reward side and the trainer cannot disagree on whether step rewards are dense)."""
        node = config_get(drox_node, "trainer")
        entropy = config_get(node, "entropy")
        prm = config_get(config_get(drox_node, "reward"), "prm")
        spec = cls(
            combine=str(config_get(node, "combine", "sum")),
            objectives=tuple(str(k) for k in config_get(node, "objectives", ())),
            weights=tuple(float(w) for w in config_get(node, "weights", ())),
            eps=float(config_get(node, "eps", 1e-6)),
            entropy_rho=None if config_get(entropy, "rho") is None else float(config_get(entropy, "rho")),
            entropy_invert=bool(config_get(entropy, "invert", False)),
            r3=bool(config_get(node, "r3", False)),
            estimator=str(config_get(node, "estimator", "grpo")),
            dense=bool(config_get(prm, "enable", False)) and bool(config_get(prm, "dense", False)),
            dense_weight=float(config_get(prm, "weight", 1.0)),
        )
        spec.check()
        return spec

    def check(self) -> None:
        from drox.errors import ConfigError
        from drox.trainers.multiobj import combine_choices

        if self.combine not in combine_choices():
            raise ConfigError(f"drox.trainer.combine={self.combine} is not allowed; choose one of: "
                              f"{', '.join(combine_choices())}")
        if self.multi_objective and len(self.objectives) != len(self.weights):
            raise ConfigError(f"drox.trainer: {len(self.objectives)} objectives but {len(self.weights)} weights")
        if self.r3 and self.multi_objective:
            raise ConfigError("drox.trainer.r3 adds R3 to the summed reward; a multi-objective combiner "
                              f"(drox.trainer.combine={self.combine}) is not supported with it")
        if self.r3 and self.estimator not in ("grpo", "dr_grpo", "rloo"):
            raise ConfigError(f"drox.trainer.estimator={self.estimator} is not allowed with R3; choose one of: grpo, "
                              "dr_grpo, rloo")
        if self.entropy_rho is not None and not 0 < self.entropy_rho <= 1:
            raise ConfigError(f"drox.trainer.entropy.rho={self.entropy_rho} must be in (0, 1]")

    @property
    def multi_objective(self) -> bool:
        """A combiner over several objectives (with one objective drox uses the estimator, as here)."""
        return self.combine != "sum" and len(self.objectives) > 1

    @property
    def active(self) -> bool:
        return self.multi_objective or self.entropy_rho is not None or self.r3 or self.dense


def objective_table(extra_fields: Sequence[Any], names: Sequence[str]) -> Tensor:
    """``[N, K]`` float64: objective ``names[k]`` of trajectory ``n``, read from its ``extra_fields`` (verl's per-
    trajectory dict, whose ``reward_extra_info`` holds what the reward manager returned)."""
    from drox.errors import ConfigError

    rows: List[List[float]] = []
    for n, extra in enumerate(extra_fields):
        info = (extra or {}).get("reward_extra_info") or {}
        missing = [k for k in names if k not in info]
        if missing:
            raise ConfigError(f"trajectory {n}: reward_extra_info has no {', '.join(missing)} (it has "
                              f"{', '.join(sorted(info)) or 'nothing'}); drox.trainer.objectives must name keys that "
                              "the reward manager returns")
        rows.append([float(info[k]) for k in names])
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(names))


def dense_steps_of(extra_fields: Sequence[Any], keys: Optional[Sequence[Any]] = None
                   ) -> List[List[Tuple[float, Optional[int]]]]:
    """Each trajectory's PRM steps ``[(score, token)]`` from its ``extra_fields["reward_extra_info"]["drox_steps"]``
    (:func:`drox.integrations.verl.rules.decode_steps`); ``keys`` name the trajectories in the error."""
    from drox.errors import ConfigError
    from drox.integrations.verl.rules import STEPS_FIELD, decode_steps

    out = []
    for n, extra in enumerate(extra_fields):
        info = (extra or {}).get("reward_extra_info") or {}
        if STEPS_FIELD not in info:
            name = keys[n] if keys is not None else n
            raise ConfigError(f"trajectory {name}: reward_extra_info has no {STEPS_FIELD}; dense step rewards need "
                              "DroxRewardManager with drox.reward.prm.dense=true (reward.reward_manager.name="
                              "DroxRewardManager)")
        out.append(decode_steps(info[STEPS_FIELD]))
    return out


def dense_step_rewards(steps: Sequence[Sequence[Tuple[float, Optional[int]]]], response_mask: Tensor,
                       weight: float = 1.0) -> Tuple[Tensor, Tensor, Dict[str, float]]:
    """Step scores placed at their step-end tokens, as drox's ``prm`` source places them (``dense: true``).

    Args:
        steps: ``N`` lists of ``(score, token)``, one per step in order (``token`` None: no response token holds the
            step's end; the step is not placed, as in drox).
        response_mask: ``[N, T]``.
        weight: the source's weight (drox's combiner adds ``weight * token`` scores).
    Returns:
        ``token_rewards [N, T]`` float64 (``weight * score`` at each step's token; a later step ending in the same
        token replaces the earlier), ``placed [N, T]`` bool (the positions holding a step reward, so a step score of
        exactly 0 still counts) and metrics (``drox/reward/prm/steps_placed_frac``). A position outside
        ``response_mask`` (verl may narrow the mask) is placed here and left out by
        :func:`dense_advantages`, as drox's trainer leaves it out.
    """
    N, T = response_mask.shape
    if len(steps) != N:
        raise ValueError(f"{len(steps)} trajectories of steps for {N} rows")
    token = torch.zeros(N, T, dtype=torch.float64)
    placed = torch.zeros(N, T, dtype=torch.bool)
    total = sum(len(row) for row in steps)
    count = 0
    for n, row in enumerate(steps):
        for score, t in row:
            if t is None:
                continue
            if not 0 <= t < T:
                raise ValueError(f"row {n}: a step ends at response token {t}, outside the responses (T = {T})")
            token[n, t], placed[n, t] = float(weight) * float(score), True
            count += 1
    return token, placed, {"drox/reward/prm/steps_placed_frac": count / max(total, 1)}


def dense_advantages(uids: Sequence[Any], response_mask: Tensor, token_rewards: Tensor, placed: Tensor,
                     eps: float = 1e-6) -> Tensor:
    """DeepSeekMath §4.1.3 process supervision over verl rows (whole groups, any row order): the step rewards of each
    group normalised over all of the group's steps, then reward-to-go per token
    (:func:`drox.trainers.algos.dense_process_advantages`, the function drox's trainer calls).

    uids ``[N]``; response_mask, token_rewards, placed ``[N, T]`` -> advantages ``[N, T]`` float64, 0 on padding."""
    from drox.trainers.algos import dense_process_advantages

    N = token_rewards.shape[0]
    rows, valid = group_rows(uids, N)  # [Q, G]
    G = rows.shape[1]
    flat_valid = valid.reshape(-1)  # [Q*G]
    take = rows.reshape(-1).clamp_min(0)
    keep = flat_valid[:, None]
    adv = dense_process_advantages(token_rewards[take].to(torch.float64) * keep, response_mask[take] * keep, G,
                                   eps=eps, reward_mask=placed[take] & keep, valid=flat_valid)  # [Q*G, T]
    out = torch.zeros(N, token_rewards.shape[1], dtype=torch.float64)
    out[rows.reshape(-1)[flat_valid]] = adv[flat_valid].to(torch.float64)
    return out


def r3_advantages(spec: TrainerSide, r3_opts, uids: Sequence[Any], base_scores: Tensor,
                  rows_L: Sequence[Sequence[float]]) -> Tuple[Tensor, Dict[str, float]]:
    """Sequence advantages ``[N]`` with DRO's R3 in the reward: per group, ``score_i = base_i + weight · R3_i``, then
    drox's estimator ``spec.estimator`` over the group (:func:`drox.trainers.algos.compute_advantages`).

    ``base_scores [N]``: each trajectory's rule reward (the sum of its ``rm_scores``); ``rows_L``: its ``L[i, :]``;
    ``r3_opts``: :class:`drox.integrations.verl.r3.R3Options`."""
    from drox.integrations.verl.r3 import group_r3
    from drox.trainers.algos import compute_advantages

    N = base_scores.shape[0]
    rows, valid = group_rows(uids, N)  # [Q, G]
    r3 = torch.zeros(N, dtype=torch.float64)
    for q in range(rows.shape[0]):
        members = rows[q][valid[q]].tolist()
        r3[members] = torch.tensor(group_r3([rows_L[n] for n in members], r3_opts), dtype=torch.float64)
    total = base_scores.to(torch.float64) + float(r3_opts.weight) * r3  # [N]
    adv = compute_advantages(total[rows.clamp_min(0)], spec.estimator, eps=spec.eps, valid=valid)  # [Q, G]
    per_row = torch.zeros(N, dtype=torch.float64)
    per_row[rows[valid]] = adv[valid].to(torch.float64)
    return per_row, {"drox/reward/variance/mean": float(r3.mean()) if N else 0.0,
                     "drox/reward/total/mean": float(total.mean()) if N else 0.0}


def trainer_side_advantages(spec: TrainerSide, uids: Sequence[Any], response_mask: Tensor, advantages: Tensor,
                            objectives: Optional[Tensor] = None, entropy: Optional[Tensor] = None,
                            base_scores: Optional[Tensor] = None, rows_L: Optional[Sequence[Sequence[float]]] = None,
                            r3_opts=None, dense_steps: Optional[Sequence[Sequence[Tuple[float, Optional[int]]]]] = None
                            ) -> Tuple[Tensor, Tensor, Dict[str, float]]:
    """drox's trainer-side step on one sampled batch of ``N`` trajectories (whole groups, any row order).

    Args:
        uids: ``[N]`` group ids. response_mask, advantages: ``[N, T]`` (verl's, after its estimator).
        objectives: ``[N, K]`` per-source scores (:func:`objective_table`), needed by a combiner.
        entropy: ``[N, T]`` per-token entropy under the sampling policy, needed by the token mask.
        base_scores, rows_L, r3_opts: ``[N]`` rule rewards, ``N`` rows ``L[i, :]`` and the R3 options, needed by R3.
        dense_steps: ``N`` lists of PRM steps ``(score, token)`` (:func:`dense_steps_of`), needed by dense rewards;
            their reward-to-go is added to the sequence advantage (verl's, the combiner's or R3's).
    Returns:
        ``(advantages [N, T], response_mask [N, T], metrics)``; the mask is a subset of the input mask.
    """
    from drox.trainers.algos import broadcast_to_tokens

    metrics: Dict[str, float] = {}
    mask = response_mask
    if spec.multi_objective:
        from drox.trainers.multiobj import combine_objectives

        if objectives is None:
            raise ValueError("a multi-objective combiner needs the objectives table [N, K]")
        rows, valid = group_rows(uids, advantages.shape[0])  # [Q, G]
        table = objectives[rows.clamp_min(0)]  # [Q, G, K]; padding members masked by valid
        adv, stats = combine_objectives(table, list(spec.weights), spec.combine, eps=spec.eps, valid=valid,
                                        names=list(spec.objectives))  # [Q, G]
        per_row = torch.zeros(advantages.shape[0], dtype=torch.float64)
        per_row[rows[valid]] = adv[valid].to(torch.float64)
        advantages = broadcast_to_tokens(per_row, response_mask).to(advantages.dtype)  # [N, T]
        metrics.update({f"drox/advantage/{k}": v for k, v in stats.items()})
    if spec.r3:
        if base_scores is None or rows_L is None or r3_opts is None:
            raise ValueError("R3 needs the rule rewards [N], the reference log-probs and the R3 options")
        per_row, stats = r3_advantages(spec, r3_opts, uids, base_scores, rows_L)
        advantages = broadcast_to_tokens(per_row, response_mask).to(advantages.dtype)  # [N, T]
        metrics.update(stats)
    if spec.dense:
        if dense_steps is None:
            raise ValueError("dense step rewards need each trajectory's PRM steps")
        token, placed, stats = dense_step_rewards(dense_steps, response_mask, spec.dense_weight)  # [N, T] each
        dense = dense_advantages(uids, response_mask, token, placed, eps=spec.eps)  # [N, T]
        advantages = (advantages.to(torch.float64) + dense).to(advantages.dtype)  # drox: token_advantages' sum
        metrics.update(stats)
    if spec.entropy_rho is not None:
        from drox.filters.entropy import EntropyConfig, entropy_filter

        if entropy is None:
            raise ValueError("the entropy token mask needs the per-token entropy [N, T]")
        mask, stats = entropy_filter(entropy, response_mask, EntropyConfig(rho=spec.entropy_rho,
                                                                           invert=spec.entropy_invert))
        metrics.update({f"drox/filter/entropy/{k}": v for k, v in stats.items()})
    return advantages, mask, metrics
