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
