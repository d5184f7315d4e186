"""``confidence``: the policy's own confidence as the reward (docs/algorithms.md
"Confidence rewards: self-certainty, answer span, negative entropy").

``kind``:

* ``self_certainty`` — Intuitor (Zhao et al., arXiv 2505.19590, Eq. 4):
  ``SC(o|q) = (1/|o|) Σ_t KL(U ‖ p_θ(·|q, o_<t))`` with
  ``KL(U‖p_t) = logsumexp(z_t) − mean_v z_{t,v} − log|V|``
  (the paper's exact value, including the ``−log|V|`` that Intuitor's code drops; a constant, so the
  GRPO advantage is the same). Computed with the CURRENT policy (Intuitor §5.4: a frozen scorer is
  hacked) in teacher-forced passes over the sampled responses; the reduction over V happens inside
  each chunk. ``|V|`` is the width of the model's logits (its padded vocabulary).
* ``answer_span`` — RLSF (van Niekerk et al., arXiv 2507.21931; code ``ConfidentLLM``
  ``ProbabilityDisparity`` + ``AnswerProcessor``; CoT-decoding Δ of Wang & Zhou 2024):
  mean over the final-answer span of ``p(top1) − p(top2)`` (``disparity: top1``, default) or
  ``p(sampled token) − p(top2)`` (``disparity: token``, the RLSF code's ProbabilityDisparity).
  The span [ENG, differs from RLSF]: RLSF generates an answer after "So the answer is" and matches
  it into the trace with difflib; here the answer is :func:`drox.tasks.verify.extract_answer` of the
  response, its LAST occurrence in the response text is the span, and the sampled tokens that overlap
  it are found by decoding prefixes (:class:`drox.signals.spans.TokenCharMap`). No answer, or a
  span that maps to no token: 0 (as RLSF's "no overlap").
* ``neg_entropy`` — entropy minimisation (RENT/EM; Intuitor App. B.4):
  ``−(1/|o|) Σ_t H(p_t)``, read from the rollout's own per-token entropies (no extra pass: the
  sampling policy is the current policy at scoring time). They refer to the sampling
  distribution softmax(z / T_rollout) [ENG].

``temperature`` divides the logits of the scoring pass (self_certainty, answer_span) [ENG, default 1:
the model's own distribution]. Optional gating [ENG; RLSF uses a 0.9 threshold only to choose
preference pairs]: a score below ``threshold`` becomes 0 (``null`` = off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Literal, Optional

import torch

from drox.models.logprobs import scaled_logits, top2_margin
from drox.signals.spans import TokenCharMap, response_ids
from drox.rewards.base import RewardOutput, ScoringContext, register_reward
from drox.tasks.verify import extract_answer
from drox.masked_stats import masked_mean

KINDS = ("self_certainty", "answer_span", "neg_entropy")
DISPARITIES = ("top1", "token")


@dataclass
class ConfidenceConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    kind: Literal[KINDS] = "self_certainty"
    """self_certainty (Intuitor Eq. 4) | answer_span (RLSF p_top1 - p_top2 over the answer) | neg_entropy."""
    temperature: float = 1.0
    """Logits are divided by this in the scoring pass (self_certainty, answer_span). [ENG]"""
    disparity: Literal[DISPARITIES] = "top1"
    """answer_span margin: top1 (p_top1 - p_top2, CoT-decoding Δ) | token (p_sampled - p_top2, RLSF code)."""
    threshold: Optional[float] = None
    """Scores below this become 0 (null = no gating). [ENG]"""

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"reward.confidence.temperature must be > 0, got {self.temperature}")


# ------------------------------------------------------------------------------------------------ pure math


def self_certainty_tokens(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-token ``KL(U ‖ p_t) = logsumexp(z_t) − mean_v z_{t,v} − log|V|`` (Intuitor Eq. 4; docs/algorithms.md).

    logits  # [b, T, V] -> [b, T] float32, ``z = logits / temperature``; >= 0, 0 iff p_t is uniform.
    """
    z = scaled_logits(logits, temperature)
    return torch.logsumexp(z, -1) - z.mean(-1) - math.log(z.shape[-1])


def disparity_tokens(logits: torch.Tensor, tokens: torch.Tensor, mode: str = "top1",
                     temperature: float = 1.0) -> torch.Tensor:
    """Per-token confidence margin (RLSF ``ProbabilityDisparity``; docs/algorithms.md).

    logits  # [b, T, V], tokens  # [b, T] -> [b, T]:
    ``top1``: p_(1) − p_(2) (the two largest probabilities); ``token``: p(tokens_t) − p_(2).
    """
    if mode == "top1":
        return top2_margin(logits, temperature)
    p = torch.softmax(scaled_logits(logits, temperature), -1)
    top2 = p.topk(2, dim=-1).values  # [b, T, 2]
    return p.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1) - top2[..., 1]


def span_mean(values: torch.Tensor, spans: List[Optional[tuple]]) -> torch.Tensor:
    """Mean of ``values[n, first..last]`` per row; 0 where the span is None.

    values  # [N, T], spans: N x (first, last) inclusive token indices or None -> [N]
    """
    out = torch.zeros(values.shape[0])
    for n, span in enumerate(spans):
        if span is not None:
            out[n] = values[n, span[0] : span[1] + 1].float().mean()
    return out


def gate(scores: torch.Tensor, threshold: Optional[float]) -> torch.Tensor:
    """Threshold gating [ENG]: scores below ``threshold`` become 0; None leaves them unchanged."""
    if threshold is None:
        return scores
    return torch.where(scores >= threshold, scores, torch.zeros_like(scores))


def answer_token_span(tokenizer, ids: List[int], text: str) -> Optional[tuple]:
    """(first, last) sampled-token indices of the final answer's last occurrence in ``text``, or None."""
    answer = extract_answer(text)
    if not answer:
        return None
    start = text.rfind(answer)
    if start < 0:
        return None
    return TokenCharMap(tokenizer, ids).span(start, start + len(answer))


def answer_spans(tokenizer, batch) -> List[Optional[tuple]]:
    """:func:`answer_token_span` of every rollout row of ``batch``."""
    return [answer_token_span(tokenizer, response_ids(batch, n), batch.texts[n]) for n in range(batch.num_rows)]


# ------------------------------------------------------------------------------------------------ the source


@register_reward("confidence", ConfidenceConfig,
                 verl="self-certainty needs the policy's full logits, which verl 0.9.1's engine does not return "
                      "(verl RFC #7712)")
def confidence(ctx: ScoringContext, cfg: ConfidenceConfig) -> RewardOutput:
    batch = ctx.batch
    Q, G = batch.num_groups, batch.group_size
    if cfg.temperature <= 0:
        raise ValueError(f"reward.confidence.temperature must be > 0, got {cfg.temperature}")
    mask = batch.response_mask.float()
    diagnostics = {}

    if cfg.kind == "neg_entropy":
        raw = -masked_mean(batch.entropies.float(), mask, dim=-1)
    elif cfg.kind == "self_certainty":
        def reduce(logits, ids, m):
            return self_certainty_tokens(logits, cfg.temperature) * m

        per_token = ctx.forward(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask, reduce)
        raw = masked_mean(per_token, mask, dim=-1)
    else:  # answer_span
        if ctx.tokenizer is None:
            raise ValueError("reward.confidence kind=answer_span needs the tokenizer in the scoring context")

        def reduce(logits, ids, m):
            return disparity_tokens(logits, ids, cfg.disparity, cfg.temperature) * m

        spans = answer_spans(ctx.tokenizer, batch)
        if any(s is not None for s in spans):
            per_token = ctx.forward(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                                    reduce)
        else:  # no rollout has an answer: every score is 0, skip the pass
            per_token = torch.zeros_like(mask)
        raw = span_mean(per_token, spans)
        diagnostics["span_found_frac"] = sum(s is not None for s in spans) / max(len(spans), 1)
        diagnostics["span_tokens_mean"] = (sum(s[1] - s[0] + 1 for s in spans if s is not None)
                                           / max(sum(s is not None for s in spans), 1))
    seq = gate(raw.float(), cfg.threshold).view(Q, G)
    diagnostics["raw_mean"] = raw.float().mean().item()
    if cfg.threshold is not None:
        diagnostics["gated_frac"] = (raw < cfg.threshold).float().mean().item()
    return RewardOutput(seq=seq, diagnostics=diagnostics)


__all__ = ["ConfidenceConfig", "answer_spans", "answer_token_span", "confidence", "disparity_tokens", "gate",
           "self_certainty_tokens", "span_mean"]
