"""The rule rewards of a drox run, scored one response at a time (no verl import; ``reward_manager.py`` wraps this).

What the launcher can hand to verl's reward loop (``drox verl``) is drox's rule-based sources, weighted and summed
as drox sums them (``trainer.advantage.combine=sum``):

* ``outcome``: the task's verifier, ``correct`` / ``incorrect`` points (RLVR; DAPO Eq. 7 with ±1), times ``weight``;
* ``format``: 1 when the response holds a non-empty final-answer container (Spurious Rewards §3), times ``weight``.

The verifier is drox's own (:mod:`drox.tasks.verify`, :class:`drox.tasks.countdown.CountdownVerifier`), chosen by
the name the exported row carries, so a verl reward worker needs no drox config, only the row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["RewardSpec", "VERIFIERS", "row_of", "score_response"]

VERIFIERS = ("math", "countdown")
"""Verifier names a row may carry in ``extra_info.drox_verifier`` (``Verifier.name`` of drox's verifiers)."""


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    value = node.get(key, None) if hasattr(node, "get") else getattr(node, key, None)
    return default if value is None else value


@dataclass(frozen=True)
class RewardSpec:
    """The reward of one response: ``outcome_weight * (correct ? correct : incorrect) + format_weight * has_box``.

    Read from the ``drox:`` block of the verl config (:meth:`from_config`); the defaults are drox's plain RLVR."""

    outcome_weight: float = 1.0
    correct: float = 1.0
    incorrect: float = 0.0
    format_weight: float = 0.0
    format_pattern: Optional[str] = None
    verify_timeout: float = 5.0

    @classmethod
    def from_config(cls, drox_node: Any) -> "RewardSpec":
        """``drox.reward.outcome.{weight,correct,incorrect}``, ``drox.reward.format.{weight,pattern}`` and
        ``drox.verify_timeout`` of verl's config (``drox_node`` = ``config.drox``; None gives the defaults)."""
        reward = _get(drox_node, "reward")
        outcome, fmt = _get(reward, "outcome"), _get(reward, "format")
        return cls(
            outcome_weight=float(_get(outcome, "weight", 1.0)),
            correct=float(_get(outcome, "correct", 1.0)),
            incorrect=float(_get(outcome, "incorrect", 0.0)),
            format_weight=float(_get(fmt, "weight", 0.0)),
            format_pattern=_get(fmt, "pattern", None),
            verify_timeout=float(_get(drox_node, "verify_timeout", 5.0)),
        )


def row_of(ground_truth: Any, extra_info: Optional[Mapping[str, Any]]) -> Tuple[Dict[str, Any], str]:
    """(the dataset row the verifier reads, the verifier's name) for one verl sample.

    Rows exported by drox carry them in ``extra_info.drox_row`` (JSON) and ``extra_info.drox_verifier``; any other
    verl dataset (e.g. verl's own GSM8K parquet) is scored by the math verifier against ``ground_truth``."""
    extra = extra_info or {}
    text = extra.get("drox_row") if hasattr(extra, "get") else None
    row = json.loads(text) if text else {}
    row.setdefault("answer", "" if ground_truth is None else str(ground_truth))
    name = (extra.get("drox_verifier") if hasattr(extra, "get") else None) or "math"
    if name not in VERIFIERS:
        raise ValueError(f"extra_info.drox_verifier={name!r}: unknown verifier; drox's verl reward manager knows "
                         f"{', '.join(VERIFIERS)}")
    return row, name


_VERIFIER_CACHE: Dict[Tuple[str, float], Any] = {}


def _verifier(name: str, timeout: float):
    key = (name, float(timeout))
    if key not in _VERIFIER_CACHE:
        if name == "countdown":
            from drox.tasks.countdown import CountdownVerifier

            _VERIFIER_CACHE[key] = CountdownVerifier()
        else:
            from drox.tasks.verify import MathVerifier

            _VERIFIER_CACHE[key] = MathVerifier(timeout)
    return _VERIFIER_CACHE[key]


def score_response(text: str, row: Mapping[str, Any], verifier: str, spec: RewardSpec) -> Tuple[float, Dict[str, float]]:
    """(reward, extra) for one decoded response.

    ``extra`` holds scalars only (verl's validation averages every non-string value): ``acc`` (1.0 when the
    verifier accepts, the metric DAPO's ``filter_groups.metric=acc`` reads), each source's own score ``outcome``
    (its points) and ``format`` (0/1, whatever its weight: the objectives of drox's multi-objective advantages),
    ``verifier_timeouts`` and ``score`` (= the reward).
    """
    result = _verifier(verifier, spec.verify_timeout)([text], [dict(row)])
    correct = bool(result.correct[0])
    outcome = spec.correct if correct else spec.incorrect
    score = spec.outcome_weight * outcome
    from drox.rewards.format import has_container

    has_box = 1.0 if has_container(text, spec.format_pattern) else 0.0
    score += spec.format_weight * has_box
    extra = {"acc": 1.0 if correct else 0.0, "outcome": float(outcome), "format": has_box,
             "verifier_timeouts": float(result.timeouts), "score": float(score)}
    return float(score), extra
