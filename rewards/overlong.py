"""``overlong``: DAPO's soft overlong punishment as a reward source (Yu et al., DAPO, arXiv 2503.14476,
§3.4 Eq. 13; docs/algorithms.md "Soft overlong punishment").

A completion longer than ``max_len - buffer`` tokens loses reward linearly up to ``factor`` at
``max_len``, and ``factor`` beyond it. ``max_len`` is the rollout's ``max_new_tokens`` (the batch knows
it), so with ``buffer = 0`` a capped generation is never punished. Add it beside the task reward:
``'+reward=[outcome,overlong]' reward.overlong.buffer=16``. Being a source, it is one more objective for
the multi-objective combiners and is logged as ``reward/overlong/*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drox.rewards.base import RewardOutput, ScoringContext, register_reward

Tensor = torch.Tensor


@dataclass
class OverlongConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    buffer: int = 0
    """L_cache: the punishment ramps over the last ``buffer`` tokens before max_new_tokens (0 disables it)."""
    factor: float = 1.0
    """The largest punishment (reached at max_new_tokens)."""

    def __post_init__(self):
        if self.buffer < 0:
            raise ValueError(f"reward.overlong.buffer must be >= 0, got {self.buffer}")
        if self.factor < 0:
            raise ValueError(f"reward.overlong.factor must be >= 0, got {self.factor}")


def soft_overlong_penalty(lengths: Tensor, max_len: int, buffer: int, factor: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment, Eq. 13 (arXiv 2503.14476 §3.4; docs/algorithms.md), added to the reward.

    With ``L_max = max_len``, ``L_cache = buffer``::

        0                                     if len <= L_max - L_cache
        ((L_max - L_cache) - len) / L_cache * factor   if L_max - L_cache < len <= L_max
        -factor                               if len > L_max

    ``buffer = 0`` is the limit of the formula: 0 up to ``max_len``, ``-factor`` beyond (so with lengths capped
    at ``max_len`` by generation it disables the penalty). Shapes: ``lengths [N]`` integer -> ``[N]`` float32.
    """
    if buffer < 0 or buffer > max_len:
        raise ValueError(f"need 0 <= buffer <= max_len, got buffer={buffer}, max_len={max_len}")
    length = lengths.to(torch.float64)
    start = float(max_len - buffer)
    zero = torch.zeros_like(length)
    over = torch.full_like(length, -float(factor))
    if buffer == 0:
        out = torch.where(length <= max_len, zero, over)
    else:
        ramp = (start - length) / float(buffer) * float(factor)
        out = torch.where(length <= start, zero, torch.where(length <= max_len, ramp, over))
    return out.to(torch.float32)


def check_buffer(opts: OverlongConfig, cfg) -> None:
    """Config-time check: the ramp must fit in the generation budget."""
    if opts.buffer > cfg.rollout.max_new_tokens:
        raise ValueError(f"reward.overlong.buffer={opts.buffer} exceeds rollout.max_new_tokens="
                         f"{cfg.rollout.max_new_tokens}; choose buffer <= max_new_tokens")


@register_reward("overlong", OverlongConfig, check=check_buffer,
                 verl="DAPO's overlong punishment is not ported to DroxRewardManager, and drox.integrations.verl "
                      "does not have it yet (docs/verl.md, 'Not done')")
def overlong(ctx: ScoringContext, opts: OverlongConfig) -> RewardOutput:
    """Shapes: the batch's N = Q·G completion lengths -> ``seq [Q, G]`` (0 or negative)."""
    batch = ctx.batch
    if ctx.max_new_tokens is None:
        raise ValueError("reward.overlong needs the rollout's max_new_tokens in the scoring context")
    max_len = int(ctx.max_new_tokens)
    penalty = soft_overlong_penalty(batch.lengths, max_len, opts.buffer, opts.factor)
    return RewardOutput(seq=penalty.view(batch.num_groups, batch.group_size))
