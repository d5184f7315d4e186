"""DRO's cross-rollout statistics over verl trajectories (no verl import; used by ``sampler.py``).

DRO (Xu et al., arXiv 2506.13351 v1) scores the reference answer ``y`` after each rollout's reasoning: ``L[i, j] =
log π(y_j | q, reasoning_i, y_<j)`` for the G rollouts i of a prompt. Its query filter (§4.2.2) keeps the prompts
whose reference tokens' log-probs vary across the rollouts: ``σ_j = std_i L[i, j]`` (population std) and the
statistic ``max_j σ_j``. Under verl, each trajectory carries its row ``L[i, :]`` as ``extra_fields["drox_L"]``
(a list of floats, |y| long), written by the rollout side; the functions here group them and call drox's own
functions (:func:`drox.signals.r3.masked_sigma`, :func:`drox.signals.r3.sigma_max_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

import torch

from drox.signals.r3 import VarianceConfig, masked_sigma, r3_rewards, sigma_max_of, splice
from drox.signals.spans import encode, split_reasoning

__all__ = ["L_FIELD", "R3Options", "group_r3", "group_sigma_max", "reference_logprobs", "scoring_request",
           "spliced_ids"]

L_FIELD = "drox_L"
"""``extra_fields`` key of a trajectory's reference-token log-probs ``L[i, :]``."""


def _group_table(rows: Sequence[Sequence[float]]) -> torch.Tensor:
    """One group's ``L[i, :]`` lists (``[G][J]``, equal lengths: one reference answer) as ``[1, G, J]`` float64."""
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise ValueError(f"the rollouts of one group carry {sorted(lengths)} reference log-probs; one reference "
                         "answer gives one length")
    J = lengths.pop() if lengths else 0
    return torch.tensor([list(map(float, r)) for r in rows], dtype=torch.float64).reshape(1, len(rows), J)


def group_sigma_max(rows: Sequence[Sequence[float]]) -> float:
    """``max_j σ_j`` of one group from its rollouts' ``L[i, :]`` (``[G][J]``, equal lengths: one reference).

    Example: rows ``[[-1, -2], [-3, -2]]``: σ = (1, 0) -> 1.0. A group of one rollout, or an empty reference,
    gives 0 (no spread to measure)."""
    L = _group_table(rows)  # [1, G, J]
    J = L.shape[-1]
    sigma = masked_sigma(L, torch.ones(1, J, dtype=torch.float64), torch.ones(1, len(rows), dtype=torch.bool))
    return float(sigma_max_of(sigma)[0])


_V = VarianceConfig()  # drox's defaults of reward.variance


@dataclass(frozen=True)
class R3Options:
    """``drox.r3`` of verl's config: drox's ``reward.variance`` options that the rollout side and the trainer read
    (``weight`` of the source, the ``weighting`` map w(σ) with ``tau``/``top_p``, the splice ``template``, the
    row's ``reference_field``), with the defaults of :class:`drox.signals.r3.VarianceConfig`."""

    weight: float = _V.weight
    weighting: str = _V.weighting
    tau: float = _V.tau
    top_p: float = _V.top_p
    template: str = _V.template
    reference_field: str = _V.reference_field

    @classmethod
    def from_config(cls, drox_node: Any) -> "R3Options":
        node = drox_node.get("r3", None) if drox_node is not None and hasattr(drox_node, "get") else None
        if node is None:
            return cls()
        values = {k: node.get(k) for k in cls.__dataclass_fields__ if node.get(k, None) is not None}
        return cls(**values)


def spliced_ids(tokenizer, prompt_ids: Sequence[int], response_text: str, reference: str,
                template: str) -> Tuple[List[int], int, int]:
    """DRO's teacher-forced sequence for one rollout, as drox's own R3 builds it (v1 §4.1 steps 1-2): the prompt
    ids, then the template's head with this rollout's reasoning (its text before the final answer), then the
    reference answer's tokens, encoded on their own so that every rollout of the prompt scores the same tokens.

    Returns ``(ids, first, n)``: the sequence, the position of the first reference token, the reference's length.
    """
    reasoning, _ = split_reasoning(response_text)
    ref_ids = encode(tokenizer, reference)
    tail, start = splice(tokenizer, reasoning, ref_ids, template)
    return list(prompt_ids) + tail, len(prompt_ids) + start, len(ref_ids)


def scoring_request() -> dict:
    """Sampling parameters of the scoring request to verl's rollout server: one forward pass over the sequence,
    the log-prob of each of its tokens (``prompt_logprobs=0``: the actual token's only), nothing worth sampling
    (vLLM needs at least one new token), temperature 1 so the log-probs are the policy's own."""
    return {"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0, "detokenize": False}


def reference_logprobs(prompt_logprobs: Sequence[Sequence[float]], first: int, n: int) -> List[float]:
    """``L[i, :]``: the log-probs of the ``n`` reference tokens that start at position ``first`` of the scored
    sequence. verl's server returns ``prompt_logprobs[t] = [log p(token t+1 | tokens <= t)]`` (one entry per
    position, the last one padding), so token ``p`` is at ``prompt_logprobs[p - 1][0]``."""
    if first < 1 or first + n > len(prompt_logprobs):
        raise ValueError(f"reference tokens {first}..{first + n - 1} are outside the {len(prompt_logprobs)} scored "
                         "positions")
    return [float(prompt_logprobs[first + j - 1][0]) for j in range(n)]


def group_r3(rows: Sequence[Sequence[float]], opts: R3Options) -> List[float]:
    """R3 of each rollout of one group (DRO v1 §4.1.3): ``R3_i = Σ_j w(σ_j) L[i, j]`` with σ_j the cross-rollout
    std (:func:`drox.signals.r3.r3_rewards`, the same function drox's own trainer uses). ``[G][J]`` -> ``[G]``."""
    L = _group_table(rows)  # [1, G, J]
    J = L.shape[-1]
    r3, _, _ = r3_rewards(L, torch.ones(1, J, dtype=torch.float64), opts.weighting, opts.tau, opts.top_p)
    return r3[0].tolist()
