"""Masked statistics: :func:`masked_mean`, and :func:`group_moments`, the one per-group statistics helper
behind the advantage estimators, the multi-objective combiners, the group filters and R3's cross-rollout σ.

Layout as everywhere in drox: ``x [Q, G, *D]`` holds one value (or a vector ``*D``) per rollout ``g`` of
prompt ``q``; ``valid [Q, G]`` bool marks the rollouts that count (a gate's rejects do not). Invalid
entries may hold anything, NaN included: they are replaced by 0 before any arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Union

import torch

Tensor = torch.Tensor

__all__ = ["GroupMoments", "ceil_fraction", "group_moments", "masked_mean"]


@dataclass
class GroupMoments:
    """Statistics over dim 1 (the group), kept as a size-1 dim so they broadcast against ``x``."""

    n: Tensor  # [Q, 1, *1] number of valid rollouts, in x's dtype
    x: Tensor  # [Q, G, *D] the input with invalid entries set to 0
    mean: Tensor  # [Q, 1, *D] mean of the valid entries (0 when there are none)
    centred: Tensor  # [Q, G, *D] x - mean on valid entries, 0 elsewhere
    sq_dev: Tensor  # [Q, 1, *D] sum of squared deviations over the valid entries
    all_equal: Tensor  # [Q, 1, *D] bool: the valid entries are all identical (False when there are none)

    def var(self, unbiased: bool = False) -> Tensor:
        """Population variance (``sq_dev / n``) or unbiased (``sq_dev / (n - 1)``); n clamped at 1."""
        return self.sq_dev / ((self.n - 1) if unbiased else self.n).clamp_min(1.0)

    def std(self, unbiased: bool = False) -> Tensor:
        return self.var(unbiased).clamp_min(0.0).sqrt()


def float_dtype(t: Tensor) -> torch.dtype:
    """The dtype results are returned in: the input's own floating dtype, else float32."""
    return t.dtype if t.is_floating_point() else torch.float32


def group_moments(x: Tensor, valid: Tensor) -> GroupMoments:
    """Moments of ``x [Q, G, *D]`` over the valid rollouts ``valid [Q, G]`` of each group (dim 1).

    Computed in ``x``'s dtype (callers choose float64 where they need it).
    """
    if valid.shape != x.shape[:2]:
        raise ValueError(f"valid {list(valid.shape)} must be [Q, G] = {list(x.shape[:2])}")
    v = valid.to(device=x.device, dtype=torch.bool).reshape(*valid.shape, *([1] * (x.dim() - 2)))
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    x = torch.where(v, x, zero)
    n = v.to(x.dtype).sum(1, keepdim=True)
    mean = x.sum(1, keepdim=True) / n.clamp_min(1.0)
    centred = torch.where(v, x - mean, zero)
    sq_dev = (centred**2).sum(1, keepdim=True)
    hi = torch.where(v, x, torch.full_like(x, -float("inf"))).amax(1, keepdim=True)
    lo = torch.where(v, x, torch.full_like(x, float("inf"))).amin(1, keepdim=True)
    return GroupMoments(n=n, x=x, mean=mean, centred=centred, sq_dev=sq_dev, all_equal=hi == lo)


def masked_mean(x: Tensor, mask: Tensor, dim: Optional[int] = None) -> Tensor:
    """Mean of ``x`` over entries where ``mask`` is 1; 0 (not NaN) where the mask is empty.

    Shapes: ``x`` and ``mask`` broadcastable to the same shape; ``dim=None`` -> scalar, else that dim reduced.
    """
    m = mask.to(x.dtype) if x.is_floating_point() else mask.float()
    x = x if x.is_floating_point() else x.float()
    num = (x * m).sum() if dim is None else (x * m).sum(dim)
    den = m.sum() if dim is None else m.sum(dim)
    return num / den.clamp_min(1.0)


def ceil_fraction(p: float, n: Union[int, Tensor]) -> Union[int, Tensor]:
    """``ceil(p·n)``, exact: ``p`` is read as the decimal it is written as (``0.6`` is 3/5), so when ``p·n`` is a
    whole number no float error can add one (``0.6·25`` keeps 15; ``float32(0.6)·25`` rounds up to 16).

    ``n``: an int, or an integer tensor (elementwise; returns a long tensor). Used for "keep the top p fraction"
    counts: R3's top_p weighting, the 80/20 entropy mask, the query filter's worst-ρ ranks.
    """
    frac = Fraction(repr(float(p)))
    if isinstance(n, Tensor):
        return -((-n.long() * frac.numerator) // frac.denominator)
    return -((-int(n) * frac.numerator) // frac.denominator)
