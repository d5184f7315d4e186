"""Effective rank of a response's hidden states: how many directions its representations spread over.

Roy & Vetterli, "The effective rank: a measure of effective dimensionality" (EUSIPCO 2007), Def. 1: for a
matrix with singular values s_1 >= ... >= s_r, p_i = s_i / sum_j s_j and

    erank = exp(-sum_i p_i log p_i)          (0 log 0 = 0),

so erank is 1 for a rank-one matrix and r when the r singular values are equal. Huang et al., "Beyond the
Exploration-Exploitation Trade-off: A Hidden State Approach for LLM Reasoning in RLVR" (arXiv 2509.23808) use
it on the hidden states of a response as a measure of exploration in representation space (docs/algorithms.md
"Effective rank"). Choices the paper leaves to us [ENG]: the last layer's output (after the final norm), one row
per response token at that token's own position, no mean-centring, singular values in float64. Its velocity and
acceleration (changes of erank across training) and the advantage shaping built on them are not implemented.
"""

from __future__ import annotations

import math

import torch

from drox.models.forward import teacher_forced_inputs

__all__ = ["effective_rank", "response_hidden_states", "response_effective_ranks"]


def effective_rank(matrix: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank of ``matrix  # [T, H]``; nan for an empty or all-zero matrix."""
    if matrix.numel() == 0:
        return math.nan
    s = torch.linalg.svdvals(matrix.double())  # [min(T, H)]
    total = s.sum()
    if total <= 0:
        return math.nan
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def response_hidden_states(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                           response_mask: torch.Tensor) -> torch.Tensor:
    """The last layer's hidden state at each response token's position: ``[N, T, H]`` (padding rows are 0).

    prompt_ids, prompt_mask  # [N, P] left-padded; response_ids, response_mask  # [N, T] right-padded.
    """
    device = next(model.parameters()).device
    input_ids, attn, pos = teacher_forced_inputs(prompt_ids, prompt_mask, response_ids, response_mask)
    out = model.get_decoder()(input_ids=input_ids.to(device), attention_mask=attn.to(device),
                              position_ids=pos.to(device), use_cache=False)
    T = response_ids.shape[1]
    hidden = out.last_hidden_state[:, -T:, :].float()  # [N, T, H]
    return hidden * response_mask.to(device).unsqueeze(-1).float()


def response_effective_ranks(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                             response_ids: torch.Tensor, response_mask: torch.Tensor,
                             rows_per_pass: int = 16) -> torch.Tensor:
    """``[N]`` effective rank of each response's hidden states (its T_n real tokens; nan for an empty response),
    in passes of ``rows_per_pass`` rows (one no-grad forward each)."""
    ranks = []
    for start in range(0, response_ids.shape[0], rows_per_pass):
        sl = slice(start, start + rows_per_pass)
        hidden = response_hidden_states(model, prompt_ids[sl], prompt_mask[sl], response_ids[sl], response_mask[sl])
        lengths = response_mask[sl].sum(-1).tolist()
        ranks += [effective_rank(h[: int(n)]) for h, n in zip(hidden, lengths)]
    return torch.tensor(ranks, dtype=torch.float64)
