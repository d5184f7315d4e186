"""Linear maps as ``(W h^T)^T``: the vocabulary head in drox's own forward paths (the static decode step, the
shared-prompt update) and the static decode step's layer projections.

``logits = h W^T`` with W the [V, H] head weight. Computed as ``(W h^T)^T`` (``model.lm_head_mm``, default on; exact
resume needs the weights 64-byte aligned, docs/performance.md), MKL takes a much faster kernel on CPU when the number of rows is small next to
V: SmolLM2-135M's head (49152 x 576, fp32, 2 cores) at 8 rows, one decode step, 51 ms with ``F.linear``
against 17-22 ms; at 64 rows 83 -> 50 ms; at 256 rows 223 -> 174 ms (benchmarks/NOTES.md, by hand). The
memory bus is not what limited the ``F.linear`` head: a plain sum reads 17 GB/s on the same machine, the head
at 8 rows 2.3 GB/s. Same values up to the order of the sums (max |diff| ~5e-5 on logits of size ~10).

The same orientation pays for the decoder layers' projections at the few rows a decode step has
(``rollout.decode_mm``): SmolLM2-135M's 30 x 7 projections at 8 rows (fp32, 2 cores, weights out of cache),
87-132 ms through ``F.linear`` against 57-78 ms; at 2 rows 59 -> 37 ms; at 64 rows and more the two are equal
(benchmarks/NOTES.md). The input must be a row-major [M, H] matrix: fed a column-major one (the transposed
output of the previous projection), MKL falls back to a kernel slower than ``F.linear``'s, which is why
:func:`linear` returns a contiguous result.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from drox.models.logprobs import _check_temperature, scaled_logits


def linear(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           mm: bool = True) -> torch.Tensor:
    """``hidden W^T (+ b)``: [..., O] from hidden states [..., H] and a weight [O, H] (+ bias [O]); for the head,
    logits [..., V] from the head weight [V, H].

    ``mm``: compute ``weight @ hidden^T`` and transpose (contiguous result); False: ``F.linear``. Differentiable
    either way."""
    if not mm:
        return F.linear(hidden, weight, bias)
    flat = hidden.reshape(-1, hidden.shape[-1])  # [M, H]
    logits = torch.mm(weight, flat.t()).t().contiguous()  # [M, V]
    if bias is not None:
        logits = logits + bias
    return logits.view(*hidden.shape[:-1], weight.shape[0])


def head_logits(model, hidden: torch.Tensor, mm: bool = True) -> torch.Tensor:
    """``model``'s output embedding applied to ``hidden`` [..., H]: through :func:`linear` when it is a plain
    ``nn.Linear`` (a wrapped head, e.g. LoRA on lm_head, is called as a module)."""
    head = model.get_output_embeddings()
    if type(head) is torch.nn.Linear:
        return linear(hidden, head.weight, head.bias, mm=mm)
    return head(hidden)


class _ChunkedHeadLogprobs(torch.autograd.Function):
    """Forward and backward of :func:`chunked_head_logprobs`, ``rows`` rows of the head at a time.

    Saved for backward: the hidden states, the log-normaliser and (with entropies) the entropy per row, never
    logits. The backward recomputes each chunk's logits (one more head matmul) and forms the gradient of the
    logits in place: for ``z = logits / T``, ``p = softmax(z)``, ``log p_y = z_y - lse(z)`` and
    ``H = -sum_v p_v log p_v``,

        d log p_y / dz = onehot(y) - p,      dH / dz = -p * (log p + H),

    so ``grad_logits = (g_lp * (onehot(y) - p) - g_H * p * (log p + H)) / T``, then
    ``grad_hidden = grad_logits W`` and ``grad_W += grad_logits^T hidden``.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, temperature, rows, with_entropy, mm):
        n = hidden.shape[0]
        logprobs = hidden.new_empty(n, dtype=torch.float32)
        lse = hidden.new_empty(n, dtype=torch.float32)
        entropy = hidden.new_empty(n, dtype=torch.float32) if with_entropy else None
        for start in range(0, n, rows):
            sl = slice(start, min(start + rows, n))
            z = scaled_logits(linear(hidden[sl], weight, bias, mm=mm), temperature)  # [r, V] float32
            lse[sl] = torch.logsumexp(z, dim=-1)
            logprobs[sl] = z.gather(-1, tokens[sl, None]).squeeze(-1) - lse[sl]
            if with_entropy:
                logp = z - lse[sl, None]
                entropy[sl] = -(logp.exp() * logp).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, tokens, lse, entropy)
        ctx.temperature, ctx.rows, ctx.mm, ctx.with_entropy = temperature, rows, mm, with_entropy
        if with_entropy:
            return logprobs, entropy
        ctx.mark_non_differentiable(lse)
        return logprobs, lse  # the second output is a placeholder without a gradient

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden, weight, bias, tokens, lse, entropy = ctx.saved_tensors
        temperature, rows, with_entropy = ctx.temperature, ctx.rows, ctx.with_entropy
        n = hidden.shape[0]
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if (need_b and bias is not None) else None
        if grad_logprobs is None:
            grad_logprobs = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        use_entropy = with_entropy and grad_entropy is not None
        for start in range(0, n, rows):
            sl = slice(start, min(start + rows, n))
            with torch.no_grad():
                z = scaled_logits(linear(hidden[sl], weight, bias, mm=ctx.mm), temperature)  # [r, V], recomputed
                logp = z - lse[sl, None]
                p = logp.exp()
                g = grad_logprobs[sl].float()
                if use_entropy:
                    # -g_H * p * (log p + H), then the log-prob term -g_lp * p
                    grad = p * (logp + entropy[sl, None]) * (-grad_entropy[sl].float()[:, None]) - g[:, None] * p
                else:
                    grad = p.mul_(-g[:, None])
                grad.scatter_add_(-1, tokens[sl, None], g[:, None])
                if temperature != 1.0:
                    grad = grad / temperature
                grad = grad.to(hidden.dtype)
                if need_h:
                    grad_hidden[sl] = grad @ weight
                if need_w:
                    grad_weight.addmm_(grad.t().float(), hidden[sl].float())
                if grad_bias is not None:
                    grad_bias += grad.float().sum(0)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def chunked_head_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          tokens: torch.Tensor, temperature: float = 1.0, rows: int = 256,
                          with_entropy: bool = False, mm: bool = True):
    """(log-probs [M], entropies [M] or None) of ``tokens`` under ``softmax(hidden W^T (+ b)) / temperature)``,
    ``rows`` rows of the head at a time, in float32, differentiable in ``hidden``, ``weight`` and ``bias``.

    The same numbers as :func:`drox.models.logprobs.logprobs_from_logits` (and ``entropy_from_logits``) of
    :func:`linear`'s logits, up to float rounding, without ever holding the [M, V] logits, their softmax or
    their gradient for more than ``rows`` rows: the activation memory of the head no longer grows with the
    number of tokens in the batch (Liger Kernel's fused linear cross-entropy does the same on GPU; here the
    backward recomputes each chunk's logits instead of computing the gradient inside the forward, because a
    policy-gradient loss's gradient per token is only known after the forward). Costs one more head matmul per
    backward. ``mm``: the head as (W h^T)^T (:func:`linear`).

    Shapes: ``hidden [M, H]``, ``weight [V, H]``, ``bias [V]`` or None, ``tokens [M]`` long.
    """
    _check_temperature(temperature)
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    logprobs, second = _ChunkedHeadLogprobs.apply(hidden, weight, bias, tokens.long(), float(temperature),
                                                  int(rows), bool(with_entropy), bool(mm))
    return logprobs, (second if with_entropy else None)
