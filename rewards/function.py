"""``function``: a plain Python reward function in TRL's convention, loaded by import path.

``+reward=function reward.function.path=my_rewards.py:f`` (a file, relative to the working directory)
or ``reward.function.path=my_pkg.rewards:f`` (an importable module). The function is called once per
generation batch as TRL's ``GRPOTrainer`` calls its ``reward_funcs``::

    f(prompts: list[str], completions: list[str], **dataset_columns) -> list[float | None]

with one entry per rollout (N = Q·G, group-major: prompt q's G completions are consecutive), ``prompts``
the raw user prompts, ``completions`` the decoded completions, and every other column of the dataset
row (``answer``, ``problem_id``, ``metadata``...) as a keyword argument holding a list of N values,
plus ``completion_ids`` (list of token-id lists). A function without ``**kwargs`` receives only the
keywords it names.

``None`` means "no score for this rollout" (TRL: the function does not apply to it). As in TRL, where
several functions are summed with ``nansum``, a None contributes nothing: it counts 0 in the weighted sum
of sources. The fraction of None entries is logged as ``reward/function/none_frac``. Anything else that is
not a finite number, or a list of the wrong length, is an error naming the function.
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

import numpy as np
import torch

from drox.plugins import load_callable
from drox.rewards.base import RewardOutput, ScoringContext, register_reward


@dataclass
class FunctionConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    path: str = ""
    """``file.py:function`` or ``module:function``: f(prompts, completions, **dataset_columns) -> list[float|None]."""

    fn: Any = field(init=False, repr=False, compare=False, default=None)
    """The function ``path`` names, resolved at config time (a bad path fails before anything loads)."""

    def __post_init__(self):
        if not self.path:
            raise ValueError("reward.function.path is required; set it, e.g. reward.function.path=my_rewards.py:f")
        self.fn = load_callable(self.path, "reward.function.path")


def call_reward_function(fn: Callable, prompts: List[str], completions: List[str], columns: Dict[str, List[Any]],
                         name: str) -> torch.Tensor:
    """Call ``fn`` TRL-style and return ``[N]`` float scores with NaN where it returned None."""
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in columns.items() if takes_all or k in params}
    out = fn(prompts=prompts, completions=completions, **kwargs)
    n = len(completions)
    if hasattr(out, "tolist") and getattr(out, "ndim", None) == 1:  # a 1-D torch tensor or numpy array
        out = out.tolist()
    if not isinstance(out, (list, tuple)):
        raise ValueError(f"reward function {name} returned {type(out).__name__}; expected a list of {n} floats")
    if len(out) != n:
        raise ValueError(f"reward function {name} returned {len(out)} scores for {n} completions")
    scores = []
    for i, v in enumerate(out):
        if v is None:
            scores.append(math.nan)
            continue
        # numbers.Real covers numpy scalars (np.float32, np.int64) as TRL accepts them; bools are not scores
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"reward function {name} returned {v!r} for completion {i}; expected a finite "
                             "number or None")
        scores.append(float(v))
    return torch.tensor(scores, dtype=torch.float32)


@register_reward("function", FunctionConfig)
def function_reward(ctx: ScoringContext, opts: FunctionConfig) -> RewardOutput:
    """Shapes: N = Q·G completions -> ``seq [Q, G]`` (None entries count 0)."""
    batch = ctx.batch
    rows = ctx.expanded_rows
    columns: Dict[str, List[Any]] = {}
    for key in rows[0] if rows else []:
        if key != "prompt":
            columns[key] = [row.get(key) for row in rows]
    mask = batch.response_mask.bool()
    columns["completion_ids"] = [batch.response_ids[i][mask[i]].tolist() for i in range(batch.num_rows)]
    raw = call_reward_function(opts.fn, [row["prompt"] for row in rows], list(batch.texts), columns, opts.path)
    none = torch.isnan(raw)
    seq = torch.where(none, torch.zeros_like(raw), raw).view(batch.num_groups, batch.group_size)
    return RewardOutput(seq=seq, diagnostics={"none_frac": none.float().mean().item()})
