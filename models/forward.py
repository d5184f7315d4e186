"""Teacher-forced forward passes over (prompt, response) pairs.

One shared function so that the trainer's loss, a frozen reference model's KL term and
reward sources that need log-probs (DRO's reference likelihood, self-certainty) all count
the same tokens the same way. The vocabulary head runs only on the positions that predict
response tokens (``logits_to_keep``), not on the prompt: on a 49k vocabulary the head is a
large share of the forward cost (SmolLM2-135M: the [49152, 576] head is about a fifth of
each position's matmul work, and the log-softmax and entropy over 49152 logits come on top).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from drox.models.logprobs import entropy_from_logits, logprobs_from_logits
from drox.models.shared_prompt import pack, plan, shared_prompt_logprobs, supports_shared_prompts


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode (no dropout) inside the block, its training flag restored afterwards (also on error).

    Gradients are untouched: combine with ``torch.no_grad()`` where none are needed."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def frozen_copy(model, step: int) -> Dict[str, Any]:
    """A non-trainable copy of ``model`` as kept in ``ScoringContext.state``: ``{"model", "step"}``.

    Entries of this shape are saved with checkpoints and restored on resume
    (:func:`drox.rewards.base.scoring_state_dict`), so a lagged reward policy continues exactly.
    """
    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.grad = None  # the copy never trains; do not carry the policy's last gradients
    clone.requires_grad_(False)
    clone.eval()
    return {"model": clone, "step": step}


def teacher_forced_inputs(prompt_ids, prompt_mask, response_ids, response_mask):
    """(input_ids, attention_mask, position_ids), each [N, P + T]: the left-padded prompt followed by the
    right-padded response, positions counted over real tokens only."""
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)
    attn = torch.cat([prompt_mask, response_mask.to(prompt_mask.dtype)], dim=1)
    return input_ids, attn, (attn.cumsum(-1) - 1).clamp_min(0)


def response_logits(model, prompt_ids, prompt_mask, response_ids, response_mask) -> torch.Tensor:
    """Logits that predict each response token.

    prompt_ids, prompt_mask: [N, P] (left-padded); response_ids, response_mask: [N, T]
    (right-padded). Returns logits [N, T, V] where [:, t] predicts response_ids[:, t].
    """
    T = response_ids.shape[1]
    input_ids, attn, pos = teacher_forced_inputs(prompt_ids, prompt_mask, response_ids, response_mask)
    # the last T+1 positions hold the predictions for response tokens 0..T (the last is unused)
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=False, logits_to_keep=T + 1)
    return out.logits[:, :T, :]


def response_logprobs(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    share_prompts: bool = False,
    head_mm: bool = False,
    head_rows: int = 0,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(log-probs [N, T], entropies [N, T] or None) of the response tokens under ``model``.

    Both refer to softmax(logits / temperature), the distribution the rollout sampled from.
    Padding positions are zeroed. ``share_prompts``: rows that repeat the row before's prompt (a group's
    G samples) are encoded with that prompt once and without padding (``models/shared_prompt.py``) when the
    model supports it and it costs fewer FLOPs; the numbers are the same up to float rounding. ``head_mm``: that
    pass computes the LM head as (W h^T)^T (models/head.py). ``head_rows`` > 0: that pass computes the head, the
    log-probs and entropies ``head_rows`` positions at a time and never holds the [M, V] logits
    (``model.head_chunk_rows``, :func:`drox.models.head.chunked_head_logprobs`).
    """
    if share_prompts and supports_shared_prompts(model):
        packed = pack(prompt_ids.cpu(), prompt_mask.cpu(), response_ids.cpu(), response_mask.cpu())
        if plan(model, prompt_mask, response_mask, packed):
            N, T = response_ids.shape
            return shared_prompt_logprobs(model, packed, N, T, temperature, with_entropy, head_mm=head_mm,
                                          head_rows=head_rows)
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    response_ids, response_mask = response_ids.to(device), response_mask.to(device)
    logits = response_logits(model, prompt_ids, prompt_mask, response_ids, response_mask)
    scale = temperature if temperature > 0 else 1.0
    logprobs = logprobs_from_logits(logits, response_ids, scale) * response_mask
    entropy = entropy_from_logits(logits, scale) * response_mask if with_entropy else None
    return logprobs, entropy
