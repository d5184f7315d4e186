"""``entropy``: train only on the highest-entropy ("forking") response tokens.

Wang et al., "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective RL for LLM Reasoning"
(arXiv 2506.01939; docs/algorithms.md "80/20 high-entropy token mask").
Of the valid response tokens passed in, keep the top-ρ by entropy
``H_t = -Σ_v p_{t,v} log p_{t,v}`` (ρ = 0.2 in the paper); the policy loss then uses ``mask * keep`` (with
token-mean the normaliser becomes the number of kept tokens). ``invert: true`` keeps the complement (the bottom
1-ρ), the paper's ablation.

Ties: exactly ``k = ceil(ρ·N_valid)`` tokens are kept; equal entropies are ranked by position (row-major over
``[N, T]``, earlier first), so the choice is deterministic. The official code
(``core_algos.py::get_global_entropy_top_mask``) keeps ``H >= threshold`` and so may keep a few more tokens on ties.
Scope: the function is scope-agnostic; the trainer calls it on the whole batch (``scope: batch``, the paper's
wording) or on each micro-batch (``scope: micro_batch``, the official code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Literal, Tuple

import torch

from drox.filters.base import register_token_filter
from drox.masked_stats import ceil_fraction

SCOPES = ("batch", "micro_batch")


@dataclass
class EntropyConfig:
    rho: float = 0.2
    """Fraction of the valid tokens kept (the top-ρ by entropy); the paper's ``entropy_top_ratio`` = 0.2."""
    invert: bool = False
    """True: keep the other tokens (the bottom 1-ρ), the paper's ablation."""
    scope: Literal[SCOPES] = "batch"
    """batch (paper §: "the batch") | micro_batch (official code: per micro-batch forward pass). Read by the trainer."""

    def __post_init__(self):
        self.rho = float(self.rho)
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"filter.entropy.rho must be in (0, 1], got {self.rho}")
        if self.scope not in SCOPES:
            raise ValueError(f"filter.entropy.scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")


def top_k_count(rho: float, n_valid: int) -> int:
    """``k = ceil(ρ·n)``, exact (:func:`drox.masked_stats.ceil_fraction`: 0.2·15 is 3, although the float
    product is 3.0000000000000004 and a bare ceil would give 4)."""
    return min(n_valid, ceil_fraction(rho, n_valid))


@register_token_filter("entropy", EntropyConfig, verl="drox.integrations.verl.mapping:entropy")
def entropy_filter(entropies: torch.Tensor, mask: torch.Tensor, opts: EntropyConfig) -> Tuple[torch.Tensor, Dict]:
    """Top-ρ entropy token mask (80/20 paper §4; docs/algorithms.md), without the authors' tie widening.

    Shapes: ``entropies [N, T]`` float, ``mask [N, T]`` (1 on valid response tokens) -> ``(mask [N, T], stats)``,
    the new mask in ``mask``'s dtype, a subset of ``mask``. Stats: ``kept_frac`` (kept / valid), ``threshold``
    (the smallest entropy among the top-k, in both modes), ``entropy_kept`` / ``entropy_dropped`` (means),
    ``ties_dropped`` (dropped tokens whose entropy equals the threshold: what ``>= threshold`` would have added
    to the top set), ``n_valid``, ``n_kept``.
    """
    if entropies.shape != mask.shape or entropies.dim() != 2:
        raise ValueError(f"entropies {list(entropies.shape)} and mask {list(mask.shape)} must both be [N, T]")
    valid = mask.bool()
    h = entropies.detach()[valid].float()  # boolean indexing is row-major: the position order used for ties
    n = h.numel()
    if n == 0:
        return mask.clone(), {"kept_frac": 0.0, "threshold": 0.0, "entropy_kept": 0.0, "entropy_dropped": 0.0,
                              "ties_dropped": 0.0, "n_valid": 0.0, "n_kept": 0.0}
    if not torch.isfinite(h).all():
        raise ValueError("filter.entropy: non-finite entropies on valid response tokens")
    k = top_k_count(opts.rho, n)
    # stable descending sort: equal entropies keep their position order, so earlier tokens win ties
    order = torch.sort(h, descending=True, stable=True).indices
    top = torch.zeros(n, dtype=torch.bool, device=h.device)
    top[order[:k]] = True
    keep_flat = ~top if opts.invert else top
    keep = torch.zeros_like(valid)
    keep[valid] = keep_flat
    new_mask = mask * keep.to(mask.dtype)

    threshold = h[order[k - 1]]
    kept, dropped = h[keep_flat], h[~keep_flat]
    stats = {
        "kept_frac": float(keep_flat.sum().item()) / n,
        "threshold": threshold.item(),
        "entropy_kept": kept.mean().item() if kept.numel() else 0.0,
        "entropy_dropped": dropped.mean().item() if dropped.numel() else 0.0,
        "ties_dropped": float(((h == threshold) & ~top).sum().item()),
        "n_valid": float(n),
        "n_kept": float(keep_flat.sum().item()),
    }
    return new_mask, stats
