"""Effective rank of a response's hidden states: how many directions its representations spread over.

Roy & Vetterli, "The effective rank: a measure of effective dimensionality" (EUSIPCO 2007), Def. 1: for a
matrix with singular values s_1 >= ... >= s_r, p_i = s_i / sum_j s_j and

    erank = exp(-sum_i p_i log p_i)          (0 log 0 = 0),

so erank is 1 for a rank-one matrix and r when the r singular values are equal. Huang et al., "Beyond the
Exploration-Exploitation Trade-off: A Hidden State Approach for LLM Reasoning in RLVR" (arXiv 2509.23808) use
it on the hidden states of a response as a measure of exploration in representation space (docs/algorithms.md
"Effective rank"). Choices the paper leaves to us [ENG]: the last layer's output (after the final norm), one row
per response token at that token's own position, no mean-centring, singular values in float64.

VERL's rank dynamics (:func:`rank_dynamics`, :func:`response_rank_dynamics`; docs/algorithms.md "VERL advantage
shaping"): the effective rank of the mean-centred hidden states of growing prefixes of one response, and its first and
second differences along the tokens (ERV, ERA), as the authors' code computes them; the advantage shaping built on
them is ``drox.trainers.algos.verl_shaped_advantages``.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from drox.models.forward import teacher_forced_inputs

__all__ = ["effective_rank", "rank_dynamics", "response_hidden_states", "response_effective_ranks",
           "response_rank_dynamics"]


def effective_rank(matrix: torch.Tensor, centre: bool = False) -> float:
    """Roy & Vetterli's effective rank of ``matrix  # [T, H]``; nan for an empty or all-zero matrix.

    ``centre``: subtract the mean row first (VERL's code does, for its rank dynamics), so that the rank measures
    the spread of the rows around their mean rather than their common offset."""
    if matrix.numel() == 0:
        return math.nan
    m = matrix.double()
    if centre:
        m = m - m.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(m)  # [min(T, H)]
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


def rank_dynamics(hidden: torch.Tensor, stride: int) -> Tuple[float, float, float]:
    """VERL's ``(ER, ERV, ERA)`` of one response's hidden states ``hidden  # [T, H]`` (its real tokens only).

    Huang et al., arXiv 2509.23808 (ER, ERV, ERA; the formulas as the authors' code computes them, hf618/VERL
    ``verl/trainer/metrics_utils.py``; docs/algorithms.md "VERL advantage shaping"). With ``erc`` the effective
    rank of the mean-centred matrix (:func:`effective_rank` with ``centre=True``) and ``s = stride``:

    * ``ER = erc(hidden)``, 0 for fewer than 2 tokens;
    * prefix ranks ``e_k = erc(hidden[: k*s + 1])`` for ``k = 1, 2, ...`` while ``k*s < T``;
    * velocity terms ``v_k = e_k - mean(e_1 .. e_{k-1})`` (k >= 2), ``ERV = mean_k v_k``;
    * acceleration terms ``a_k = v_k - v_{k-1}`` (k >= 3), ``ERA = mean_k a_k``.

    The differences run along the tokens of one response, not across training steps. ``ERV`` is 0 with fewer than
    2 prefixes (``T <= 2s``) and ``ERA`` 0 with fewer than 3 (``T <= 3s``), as in the authors' code. A prefix whose
    rows are all equal (centred matrix 0) counts as rank 1, the value the authors' code gives it [ENG: their
    ``exp(0)``; :func:`effective_rank` alone says nan].
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    T = hidden.shape[0]

    def erc(m: torch.Tensor) -> float:
        value = effective_rank(m, centre=True)
        return 1.0 if math.isnan(value) else value

    er = erc(hidden) if T >= 2 else 0.0
    prefix = [erc(hidden[: k * stride + 1]) for k in range(1, (T - 1) // stride + 1)]  # k*s < T
    velocity = [e - sum(prefix[:k]) / k for k, e in enumerate(prefix) if k >= 1]
    accel = [b - a for a, b in zip(velocity, velocity[1:])]
    erv = sum(velocity) / len(velocity) if velocity else 0.0
    era = sum(accel) / len(accel) if accel else 0.0
    return er, erv, era


def response_rank_dynamics(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                           response_ids: torch.Tensor, response_mask: torch.Tensor, stride: int,
                           rows_per_pass: int = 16) -> torch.Tensor:
    """``[N, 3]`` float64: each response's :func:`rank_dynamics` ``(ER, ERV, ERA)`` of its last-layer hidden
    states under ``model`` (:func:`response_hidden_states`; shapes as there), in no-grad passes of
    ``rows_per_pass`` rows."""
    out = []
    for start in range(0, response_ids.shape[0], rows_per_pass):
        sl = slice(start, start + rows_per_pass)
        hidden = response_hidden_states(model, prompt_ids[sl], prompt_mask[sl], response_ids[sl], response_mask[sl])
        lengths = response_mask[sl].sum(-1).tolist()
        out += [rank_dynamics(h[: int(n)].cpu(), stride) for h, n in zip(hidden, lengths)]
    return torch.tensor(out, dtype=torch.float64).reshape(-1, 3)
