"""Log-probabilities and entropies of tokens from logits: the one definition used by the sampler
(behaviour log-probs), the trainer's loss, reference models and reward sources that score text.

Pure tensor functions, in float32 whatever the logits' dtype, chunked over rows so that the float32
copy of ``[N, T, V]`` logits is bounded.
"""

from __future__ import annotations

from typing import Optional

import torch

Tensor = torch.Tensor

__all__ = ["entropy_from_logits", "logprobs_from_logits", "scaled_logits", "top2_margin"]


def _row_chunks(n: int, chunk_size: Optional[int]):
    step = n if not chunk_size or chunk_size <= 0 else int(chunk_size)
    for start in range(0, n, max(step, 1)):
        yield slice(start, min(start + step, n))


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def scaled_logits(logits: Tensor, temperature: float) -> Tensor:
    """``logits.float() / temperature``, without the division at temperature 1: dividing by 1.0 is exact, so the
    values are the same bits, and a [N, T, V] copy (and its backward) is saved."""
    z = logits.float()
    return z if temperature == 1.0 else z / temperature


def entropy_from_logits(logits: Tensor, temperature: float = 1.0, chunk_size: Optional[int] = None) -> Tensor:
    """Per-token entropy ``H = -sum_v p_v log p_v`` of ``softmax(logits / temperature)``
    (docs/algorithms.md "Entropy bonus").

    Math in float32 whatever the logits dtype; ``chunk_size`` rows of N at a time bound the float32
    temporaries to ``chunk_size * T * V``. Differentiable. Shapes: ``logits [N, T, V]`` -> ``[N, T]`` float32.
    """
    _check_temperature(temperature)
    outs = []
    for sl in _row_chunks(logits.shape[0], chunk_size):
        z = scaled_logits(logits[sl], temperature)
        logp = torch.log_softmax(z, dim=-1)
        outs.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(outs, 0) if len(outs) != 1 else outs[0]


def logprobs_from_logits(
    logits: Tensor, tokens: Tensor, temperature: float = 1.0, chunk_size: Optional[int] = None
) -> Tensor:
    """Log-probability of ``tokens`` under ``softmax(logits / temperature)``, in float32.

    Computed as ``z[token] - logsumexp(z)`` with ``z = logits.float() / temperature`` — the same value as a
    gather after ``log_softmax`` without materialising the ``[N, T, V]`` log-softmax; ``chunk_size`` rows of N
    at a time bound the float32 copy. Use the rollout's sampling temperature so the values match the behaviour
    policy. Differentiable. Shapes: ``logits [N, T, V]``, ``tokens [N, T]`` long -> ``[N, T]`` float32.
    """
    _check_temperature(temperature)
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(f"tokens {list(tokens.shape)} do not match logits {list(logits.shape)}")
    outs = []
    for sl in _row_chunks(logits.shape[0], chunk_size):
        z = scaled_logits(logits[sl], temperature)
        picked = z.gather(-1, tokens[sl].long().unsqueeze(-1)).squeeze(-1)
        outs.append(picked - torch.logsumexp(z, dim=-1))
    return torch.cat(outs, 0) if len(outs) != 1 else outs[0]


def top2_margin(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``p_(1) - p_(2)``, the gap between the two largest probabilities of ``softmax(logits / temperature)``
    (RLSF's answer-span disparity, arXiv 2507.21931; docs/algorithms.md), in float32.

    Read off the two largest logits: ``exp(z_(1) - lse(z)) - exp(z_(2) - lse(z))``, without materialising the
    probabilities. Shapes: ``logits [..., V]`` -> ``[...]`` float32, in [0, 1].
    """
    _check_temperature(temperature)
    z = scaled_logits(logits, temperature)
    top2 = z.topk(2, dim=-1).values  # [..., 2]
    lse = torch.logsumexp(z, dim=-1)
    return (top2[..., 0] - lse).exp() - (top2[..., 1] - lse).exp()
