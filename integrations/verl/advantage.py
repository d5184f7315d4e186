"""What drox's trainer subclass adds to verl's advantage step (no verl import; ``trainer.py`` is the verl glue).

verl 0.9.1 hands a registered estimator only ``token_level_rewards``, ``response_mask``, the group ids and
``config.algorithm`` (SCALEOUT.md §2.1), so what needs more than that runs in the trainer, after verl's own
advantage step, on the fields verl keeps per trajectory:

* **multi-objective advantages** (``trainer.advantage.combine`` = ``dvao`` | ``sum_then_normalize`` |
  ``normalize_then_sum`` | ``normalize_then_sum_no_batch``): each reward source's own score, which
  ``DroxRewardManager`` puts in ``reward_extra_info`` (``outcome``, ``format``), becomes a column of the table
  ``[Q, G, K]`` that :func:`drox.trainers.multiobj.combine_objectives` turns into one advantage per rollout
  (DVAO: arXiv 2605.25604, ``A_i = Σ_k b_k (r_ik − μ_k) / Σ_k b_k σ_k``; GDPO: arXiv 2601.05242); every valid token
  of the rollout gets it (:func:`drox.trainers.algos.broadcast_to_tokens`), replacing verl's advantage;
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

from drox.integrations.verl.estimators import group_rows

Tensor = torch.Tensor

__all__ = ["TrainerSide", "objective_table", "trainer_side_advantages"]


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    value = node.get(key, None) if hasattr(node, "get") else getattr(node, key, None)
    return default if value is None else value


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

    @classmethod
    def from_config(cls, drox_node: Any) -> "TrainerSide":
        node = _get(drox_node, "trainer")
        entropy = _get(node, "entropy")
        spec = cls(
            combine=str(_get(node, "combine", "sum")),
            objectives=tuple(str(k) for k in _get(node, "objectives", ())),
            weights=tuple(float(w) for w in _get(node, "weights", ())),
            eps=float(_get(node, "eps", 1e-6)),
            entropy_rho=None if _get(entropy, "rho") is None else float(_get(entropy, "rho")),
            entropy_invert=bool(_get(entropy, "invert", False)),
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
        if self.entropy_rho is not None and not 0 < self.entropy_rho <= 1:
            raise ConfigError(f"drox.trainer.entropy.rho={self.entropy_rho} must be in (0, 1]")

    @property
    def multi_objective(self) -> bool:
        """A combiner over several objectives (with one objective drox uses the estimator, as here)."""
        return self.combine != "sum" and len(self.objectives) > 1

    @property
    def active(self) -> bool:
        return self.multi_objective or self.entropy_rho is not None


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


def trainer_side_advantages(spec: TrainerSide, uids: Sequence[Any], response_mask: Tensor, advantages: Tensor,
                            objectives: Optional[Tensor] = None,
                            entropy: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Dict[str, float]]:
    """drox's trainer-side step on one sampled batch of ``N`` trajectories (whole groups, any row order).

    Args:
        uids: ``[N]`` group ids. response_mask, advantages: ``[N, T]`` (verl's, after its estimator).
        objectives: ``[N, K]`` per-source scores (:func:`objective_table`), needed by a combiner.
        entropy: ``[N, T]`` per-token entropy under the sampling policy, needed by the token mask.
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
    if spec.entropy_rho is not None:
        from drox.filters.entropy import EntropyConfig, entropy_filter

        if entropy is None:
            raise ValueError("the entropy token mask needs the per-token entropy [N, T]")
        mask, stats = entropy_filter(entropy, response_mask, EntropyConfig(rho=spec.entropy_rho,
                                                                           invert=spec.entropy_invert))
        metrics.update({f"drox/filter/entropy/{k}": v for k, v in stats.items()})
    return advantages, mask, metrics
