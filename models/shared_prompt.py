"""Teacher-forced passes that encode each group's prompt once (the idea of Prefix Grouper, arXiv 2506.05433).

The G responses of a group share their prompt. The plain pass (``models/forward.py``) feeds G copies of it,
each left-padded to the batch's longest prompt and right-padded to its longest response: ``N * (P + T)``
positions. Here each group is one row: its prompt once, then its G responses back to back with no padding
between them, ``P_g + sum_i L_i`` positions. A block attention mask lets every response token see the prompt
and the earlier tokens of its own response only, and each response's position ids restart right after the
prompt, so every token is computed from exactly the context it has in the plain pass: the log-probs agree up
to float rounding. Gradients reach the one copy of the prompt from all G responses, which sums to the
parameter gradient the G copies give (linearity of the chain rule); ``tests/test_shared_prompt.py`` checks
both numbers against the plain pass.

What this version leaves out (our choices, not the paper's): Prefix Grouper splits attention into a prompt
part and a response part so that no work is spent on masked pairs; we hand the model one explicit mask and
its attention computes all ``S^2`` pairs of a row. That is cheap next to the linear layers while responses
are short, and loses when G long responses make the row long, so :func:`plan` picks the cheaper of the two
passes from a FLOP count of both (linear layers ~ 2 * params per position, attention ~ 4 * hidden * layers
per pair of positions). Only model families whose logits are the plain LM head of the last hidden state
(``SHARED_PROMPT_MODEL_TYPES``) and attention implementations that honour a 4-D mask (sdpa, eager) take
this path; anything else gets the plain pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from drox.models.head import chunked_head_logprobs, head_logits
from drox.models.logprobs import entropy_from_logits, logprobs_from_logits
from drox.signals.spans import pad_rows

# families whose CausalLM head is lm_head(final_norm(h)) with no scaling or soft-capping, and whose decoder
# passes a 4-D attention mask through unchanged (transformers' masking_utils returns a 4-D mask as-is)
SHARED_PROMPT_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
_MASKED_ATTENTION = {"sdpa", "eager"}

PROMPT, PADDING = -1, -2  # segment ids; responses are 0 .. G-1 within their row


@dataclass
class PackedGroups:
    """The packed rows of one batch, and where each response token's prediction comes from and goes to.

    input_ids     # [R, S] long: per row, one group's prompt then its responses back to back, then padding
    position_ids  # [R, S] long: 0..P-1 on the prompt, P..P+L_i-1 on response i, 0 on padding
    segment       # [R, S] long: PROMPT, the response's slot in the group (0..G-1), or PADDING
    source_row, source_pos  # [M] long: the (row, position) whose hidden state predicts response token m
    target_row, target_col  # [M] long: where token m sits in the [N, T] response layout
    tokens        # [M] long: the response tokens themselves
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment: torch.Tensor
    source_row: torch.Tensor
    source_pos: torch.Tensor
    target_row: torch.Tensor
    target_col: torch.Tensor
    tokens: torch.Tensor

    @property
    def row_lengths(self) -> torch.Tensor:  # [R] real (non-padding) positions per row
        return (self.segment != PADDING).sum(-1)


def supports_shared_prompts(model) -> bool:
    """Whether ``model`` can take the shared-prompt pass (family and attention implementation)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "get_decoder") or not hasattr(model, "get_output_embeddings"):
        return False
    return (getattr(config, "model_type", None) in SHARED_PROMPT_MODEL_TYPES
            and getattr(config, "_attn_implementation", None) in _MASKED_ATTENTION)


def group_spans(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> List[Tuple[int, int]]:
    """[(start, end)) of each run of consecutive rows with the same prompt (ids and mask)."""
    n = prompt_ids.shape[0]
    if n == 0:
        return []
    same = ((prompt_ids[1:] == prompt_ids[:-1]) & (prompt_mask[1:] == prompt_mask[:-1])).all(-1)  # [N-1]
    starts = [0] + (torch.nonzero(~same).flatten() + 1).tolist()
    return list(zip(starts, starts[1:] + [n]))


def pack(prompt_ids, prompt_mask, response_ids, response_mask) -> Optional[PackedGroups]:
    """The packed layout (CPU tensors in, CPU tensors out), or None when it does not apply: no two consecutive
    rows share a prompt, an empty prompt, or a response mask that is not a prefix of its row (then only the
    plain pass is exact). Padding positions hold token 0; nothing reads them."""
    spans = group_spans(prompt_ids, prompt_mask)
    if len(spans) == prompt_ids.shape[0]:
        return None
    T = response_ids.shape[1]
    lengths = (response_mask != 0).sum(-1)  # [N]
    prefix = torch.arange(T)[None, :] < lengths[:, None]  # [N, T]
    if not torch.equal(prefix, response_mask != 0):
        return None
    rows_ids, rows_pos, rows_seg = [], [], []
    src_row, src_pos, tgt_row, tgt_col, toks = [], [], [], [], []
    for r, (start, end) in enumerate(spans):
        prompt = prompt_ids[start][prompt_mask[start] != 0]
        P = prompt.shape[0]
        if P == 0:
            return None
        ids, pos, seg = [prompt], [torch.arange(P)], [torch.full((P,), PROMPT)]
        offset = P
        for slot, n in enumerate(range(start, end)):
            L = int(lengths[n])
            if L == 0:
                continue
            ids.append(response_ids[n, :L])
            pos.append(torch.arange(P, P + L))
            seg.append(torch.full((L,), slot))
            # token 0 is predicted by the prompt's last position, token t > 0 by the token before it
            src = torch.cat([torch.tensor([P - 1]), torch.arange(offset, offset + L - 1)])
            src_row.append(torch.full((L,), r))
            src_pos.append(src)
            tgt_row.append(torch.full((L,), n))
            tgt_col.append(torch.arange(L))
            toks.append(response_ids[n, :L])
            offset += L
        rows_ids.append(torch.cat(ids))
        rows_pos.append(torch.cat(pos))
        rows_seg.append(torch.cat(seg))

    def stack(rows, fill):
        return pad_rows(rows, fill, side="right")  # [B, S], S = the longest packed row

    cat = (lambda xs: torch.cat(xs).long()) if toks else (lambda xs: torch.zeros(0, dtype=torch.long))
    return PackedGroups(
        input_ids=stack(rows_ids, 0), position_ids=stack(rows_pos, 0), segment=stack(rows_seg, PADDING),
        source_row=cat(src_row), source_pos=cat(src_pos), target_row=cat(tgt_row), target_col=cat(tgt_col),
        tokens=cat(toks),
    )


def attention_mask(segment: torch.Tensor) -> torch.Tensor:
    """The block-causal mask [R, 1, S, S] (bool, True = may attend) of packed rows.

    A query sees earlier-or-same positions that are prompt or its own response; padding sees only itself (a
    row with no allowed key would make softmax NaN, and NaN reaches the gradients even where it is masked).
    """
    S = segment.shape[1]
    idx = torch.arange(S, device=segment.device)
    causal = idx[None, :, None] >= idx[None, None, :]  # [1, S, S] query >= key
    q, k = segment[:, :, None], segment[:, None, :]  # [R, S, 1], [R, 1, S]
    allowed = causal & ((k == PROMPT) | (k == q)) & (q != PADDING) & (k != PADDING)
    allowed = allowed | torch.eye(S, dtype=torch.bool, device=segment.device)[None]
    return allowed[:, None]


def plan(model, prompt_mask: torch.Tensor, response_mask: torch.Tensor, packed: Optional[PackedGroups]) -> bool:
    """True when the packed pass costs fewer FLOPs than the plain one (see the module docstring).

    Plain: N rows of P + T positions each (padding included: it is computed). Packed: R rows of S positions.
    """
    if packed is None:
        return False
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    pair = 4 * config.hidden_size * config.num_hidden_layers  # QK^T and AV, per (query, key) pair

    def cost(rows: int, width: int) -> float:
        return rows * (2 * params * width + pair * width * width)

    N, width = response_mask.shape[0], prompt_mask.shape[1] + response_mask.shape[1]
    R, S = packed.input_ids.shape
    return cost(R, S) < cost(N, width)


def shared_prompt_logprobs(model, packed: PackedGroups, N: int, T: int, temperature: float,
                           with_entropy: bool, head_mm: bool = False,
                           head_rows: int = 0) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(log-probs [N, T], entropies [N, T] or None) of the response tokens, from one packed pass.

    Same contract as :func:`drox.models.forward.response_logprobs`: softmax(logits / temperature), padding 0.
    The LM head runs only on the M real response positions (no padding, the prompt's last position once per
    response that it predicts). ``head_rows`` > 0: the head, log-probs and entropies ``head_rows`` positions at a
    time with a recomputing backward (:func:`drox.models.head.chunked_head_logprobs`), never the [M, V] logits.
    """
    device = next(model.parameters()).device
    seg = packed.segment.to(device)
    mask = attention_mask(seg)
    if model.config._attn_implementation == "eager":  # eager adds the mask to the scores
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
    out = model.get_decoder()(input_ids=packed.input_ids.to(device), attention_mask=mask,
                              position_ids=packed.position_ids.to(device), use_cache=False)
    hidden = out.last_hidden_state[packed.source_row.to(device), packed.source_pos.to(device)]  # [M, H]
    tokens = packed.tokens.to(device)[None]  # [1, M]
    scale = temperature if temperature > 0 else 1.0
    where = (packed.target_row.to(device), packed.target_col.to(device))

    def scatter(values: torch.Tensor) -> torch.Tensor:  # [M] -> [N, T], 0 elsewhere (differentiable)
        return torch.zeros(N, T, dtype=values.dtype, device=device).index_put(where, values)

    head = model.get_output_embeddings()
    if head_rows > 0 and type(head) is torch.nn.Linear:
        logprobs, entropy = chunked_head_logprobs(hidden, head.weight, head.bias, tokens[0], scale, rows=head_rows,
                                                  with_entropy=with_entropy, mm=head_mm)
        return scatter(logprobs), (scatter(entropy) if with_entropy else None)
    logits = head_logits(model, hidden, mm=head_mm)[None]  # [1, M, V]; head_mm: models/head.py
    logprobs = scatter(logprobs_from_logits(logits, tokens, scale)[0])
    entropy = scatter(entropy_from_logits(logits, scale)[0]) if with_entropy else None
    return logprobs, entropy
