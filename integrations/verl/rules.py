"""The rule rewards of a drox run, scored one response at a time (no verl import; ``reward_manager.py`` wraps this).

What the launcher can hand to verl's reward loop (``drox verl``) is drox's rule-based sources, weighted and summed
as drox sums them (``trainer.advantage.combine=sum``):

* ``outcome``: the task's verifier, ``correct`` / ``incorrect`` points (RLVR; DAPO Eq. 7 with ±1), times ``weight``;
* ``format``: 1 when the response holds a non-empty final-answer container (Spurious Rewards §3), times ``weight``;
* ``prm`` with ``kind=oracle``: drox's rule step checker (:func:`drox.signals.prm.check_steps`; every ``a op b = c``
  is a step, correct / incorrect points). Sequence mode: the steps' aggregate (:func:`drox.rewards.prm.aggregate_steps`:
  min / last / prod / mean) times ``weight``. Dense mode (DeepSeekMath §4.1.3, ``reward.prm.dense``): nothing enters
  the reward; each step's score, its character end in the response and the response token holding that character
  (:class:`drox.signals.spans.TokenCharMap`, the helper drox's own ``prm`` source uses) go into
  ``reward_extra_info[STEPS_FIELD]`` as a JSON string, and drox's trainer subclass turns them into reward-to-go
  advantages (``advantage.py``).

The verifier is drox's own (:mod:`drox.tasks.verify`, :class:`drox.tasks.countdown.CountdownVerifier`), chosen by
the name the exported row carries, so a verl reward worker needs no drox config, only the row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from drox.integrations.verl import config_get
from drox.signals.prm import AGGREGATIONS, PRMConfig, check_steps

__all__ = ["AGGREGATIONS", "PRMSpec", "RewardSpec", "STEPS_FIELD", "VERIFIERS", "aggregate", "decode_steps",
           "encode_steps", "prm_step_scores", "row_of", "score_response", "step_tokens"]

VERIFIERS = ("math", "countdown")
"""Verifier names a row may carry in ``extra_info.drox_verifier`` (``Verifier.name`` of drox's verifiers)."""

STEPS_FIELD = "drox_steps"
"""``reward_extra_info`` key of a trajectory's dense PRM steps: a JSON string (verl's validation averages every
non-string value of ``reward_extra_info``, docs/verl.md "The reward loop"), :func:`encode_steps`."""


_PRM = PRMConfig()  # drox's defaults of reward.prm


@dataclass(frozen=True)
class PRMSpec:
    """drox's ``reward.prm`` with ``kind=oracle`` (:class:`drox.signals.prm.PRMConfig`, whose defaults these are), read
    from ``drox.reward.prm`` of verl's config; ``enable`` (off by default) is set by ``drox verl`` for ``+reward=prm``."""

    enable: bool = False
    weight: float = _PRM.weight
    aggregation: str = _PRM.aggregation
    dense: bool = _PRM.dense
    empty_score: float = _PRM.empty_score
    match_reference: bool = _PRM.match_reference
    correct: float = _PRM.correct
    incorrect: float = _PRM.incorrect

    @classmethod
    def from_config(cls, node: Any) -> "PRMSpec":
        """``drox.reward.prm.{enable,weight,aggregation,dense,empty_score,match_reference,correct,incorrect}``."""
        spec = cls(enable=bool(config_get(node, "enable", False)),
                   weight=float(config_get(node, "weight", _PRM.weight)),
                   aggregation=str(config_get(node, "aggregation", _PRM.aggregation)),
                   dense=bool(config_get(node, "dense", _PRM.dense)),
                   empty_score=float(config_get(node, "empty_score", _PRM.empty_score)),
                   match_reference=bool(config_get(node, "match_reference", _PRM.match_reference)),
                   correct=float(config_get(node, "correct", _PRM.correct)),
                   incorrect=float(config_get(node, "incorrect", _PRM.incorrect)))
        if spec.aggregation not in AGGREGATIONS:
            from drox.errors import ConfigError

            raise ConfigError(f"drox.reward.prm.aggregation={spec.aggregation} is not allowed; choose one of: "
                              f"{', '.join(AGGREGATIONS)}")
        return spec


@dataclass(frozen=True)
class RewardSpec:
    """The reward of one response: ``outcome_weight * (correct ? correct : incorrect) + format_weight * has_box
    (+ prm.weight * aggregate of the steps, sequence-mode PRM)``.

    Read from the ``drox:`` block of the verl config (:meth:`from_config`); the defaults are drox's plain RLVR."""

    outcome_weight: float = 1.0
    correct: float = 1.0
    incorrect: float = 0.0
    format_weight: float = 0.0
    format_pattern: Optional[str] = None
    verify_timeout: float = 5.0
    prm: PRMSpec = field(default_factory=PRMSpec)

    @classmethod
    def from_config(cls, drox_node: Any) -> "RewardSpec":
        """``drox.reward.outcome.{weight,correct,incorrect}``, ``drox.reward.format.{weight,pattern}``,
        ``drox.reward.prm.*`` (:class:`PRMSpec`) and ``drox.verify_timeout`` of verl's config (``drox_node`` =
        ``config.drox``; None gives the defaults)."""
        reward = config_get(drox_node, "reward")
        outcome, fmt = config_get(reward, "outcome"), config_get(reward, "format")
        return cls(
            outcome_weight=float(config_get(outcome, "weight", 1.0)),
            correct=float(config_get(outcome, "correct", 1.0)),
            incorrect=float(config_get(outcome, "incorrect", 0.0)),
            format_weight=float(config_get(fmt, "weight", 0.0)),
            format_pattern=config_get(fmt, "pattern", None),
            verify_timeout=float(config_get(drox_node, "verify_timeout", 5.0)),
            prm=PRMSpec.from_config(config_get(reward, "prm")),
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


def prm_step_scores(text: str, row: Mapping[str, Any], spec: PRMSpec) -> List[Tuple[float, int]]:
    """``[(score, end_char)]`` for each step of ``text``: drox's oracle checker :func:`drox.signals.prm.check_steps`
    (against the row's ``steps`` column when ``match_reference``), ``correct`` / ``incorrect`` points, as drox's
    ``prm`` source scores them."""
    reference = None
    if spec.match_reference:
        if "steps" not in row:
            raise ValueError("reward.prm match_reference=true needs a 'steps' column in the exported row "
                             "(extra_info.drox_row); this task has none")
        reference = list(row["steps"])
    return [(spec.correct if ok else spec.incorrect, end) for ok, end in check_steps(text, reference)]


def aggregate(scores: Sequence[float], spec: PRMSpec) -> float:
    """One response's step scores -> its sequence score, :func:`drox.rewards.prm.aggregate_steps` (``empty_score``
    when there is no step)."""
    import torch

    from drox.rewards.prm import aggregate_steps

    S = len(scores)
    values = torch.zeros(1, max(S, 1))  # [1, S]: the layout drox's prm source builds
    mask = torch.zeros(1, max(S, 1))
    values[0, :S] = torch.tensor([float(x) for x in scores])
    mask[0, :S] = 1.0
    return float(aggregate_steps(values, mask, spec.aggregation, spec.empty_score)[0])


def step_tokens(tokenizer, response_ids: Sequence[int], ends: Sequence[int]) -> List[Optional[int]]:
    """The response token holding each step's last character (``end - 1``), None where none does: drox's own
    mapping for dense PRM rewards (:class:`drox.signals.spans.TokenCharMap`: prefixes of the sampled ids are decoded
    with special tokens skipped, as the response text was)."""
    from drox.signals.spans import TokenCharMap

    cmap = TokenCharMap(tokenizer, response_ids)
    return [cmap.token_of(int(end) - 1) for end in ends]


def encode_steps(scores: Sequence[float], ends: Sequence[int], tokens: Sequence[Optional[int]]) -> str:
    """The :data:`STEPS_FIELD` value: ``{"score": [..], "end": [..], "token": [..]}`` as compact JSON (one entry per
    step, in order; ``token`` null for a step no response token holds)."""
    if not len(scores) == len(ends) == len(tokens):
        raise ValueError(f"{len(scores)} step scores, {len(ends)} ends and {len(tokens)} tokens")
    return json.dumps({"score": [float(x) for x in scores], "end": [int(e) for e in ends],
                       "token": [None if t is None else int(t) for t in tokens]}, separators=(",", ":"))


def decode_steps(text: str) -> List[Tuple[float, Optional[int]]]:
    """``[(score, token)]`` of one trajectory from its :data:`STEPS_FIELD` value (:func:`encode_steps`)."""
    value = json.loads(text)
    scores, tokens = value["score"], value["token"]
    if len(scores) != len(tokens):
        raise ValueError(f"{STEPS_FIELD}: {len(scores)} step scores but {len(tokens)} tokens")
    return [(float(s), None if t is None else int(t)) for s, t in zip(scores, tokens)]


def score_response(text: str, row: Mapping[str, Any], verifier: str, spec: RewardSpec, tokenizer=None,
                   response_ids: Optional[Sequence[int]] = None) -> Tuple[float, Dict[str, Any]]:
    """(reward, extra) for one decoded response.

    ``extra`` holds scalars (verl's validation averages every non-string value): ``acc`` (1.0 when the
    verifier accepts, the metric DAPO's ``filter_groups.metric=acc`` reads), each source's own score ``outcome``
    (its points) and ``format`` (0/1, whatever its weight: the objectives of drox's multi-objective advantages),
    ``verifier_timeouts`` and ``score`` (= the reward). With the PRM on (``spec.prm.enable``) also ``prm`` (its
    sequence score as drox's combiners see it: the aggregate, 0 in dense mode), ``prm_aggregate`` and ``prm_steps``
    (the number of steps); in dense mode also :data:`STEPS_FIELD` (a JSON string, :func:`encode_steps`), whose token
    positions need the policy's ``tokenizer`` and the sampled ``response_ids`` that decode to ``text``.
    """
    result = _verifier(verifier, spec.verify_timeout)([text], [dict(row)])
    correct = bool(result.correct[0])
    outcome = spec.correct if correct else spec.incorrect
    score = spec.outcome_weight * outcome
    from drox.signals.rubric import has_container

    has_box = 1.0 if has_container(text, spec.format_pattern) else 0.0
    score += spec.format_weight * has_box
    extra: Dict[str, Any] = {"acc": 1.0 if correct else 0.0, "outcome": float(outcome), "format": has_box,
                             "verifier_timeouts": float(result.timeouts)}
    prm = spec.prm
    if prm.enable:
        steps = prm_step_scores(text, row, prm)
        agg = aggregate([s for s, _ in steps], prm)
        extra.update({"prm": 0.0 if prm.dense else agg, "prm_aggregate": agg, "prm_steps": float(len(steps))})
        if prm.dense:
            if tokenizer is None or response_ids is None:
                raise ValueError("reward.prm dense=true needs the tokenizer and the response's token ids (step-end "
                                 "tokens)")
            ends = [end for _, end in steps]
            extra[STEPS_FIELD] = encode_steps([s for s, _ in steps], ends, step_tokens(tokenizer, response_ids, ends))
        else:
            score += prm.weight * agg
    extra["score"] = float(score)
    return float(score), extra
