"""drox's advantage estimators in verl's estimator signature (no verl import here; ``register.py`` registers them).

verl 0.9.1 calls a registered estimator as ``fn(token_level_rewards=[B, T], response_mask=[B, T], config=
config.algorithm, index=uid [B])`` and takes back ``(advantages [B, T], returns [B, T])``
(docs/verl.md "Advantage estimators"). These functions translate that call into drox's own layout (groups ``[Q, G]``
with a ``valid`` mask, rows group-major) and call drox's functions from :mod:`drox.trainers.algos`; the math is not
written again here.

=====================  ===================================================================================
name                   what (paper)
=====================  ===================================================================================
``drox_psr``           PSR: ``A = +1`` correct, ``0`` incorrect, no baseline (Zhu et al., arXiv 2506.01347, Eq. 3)
``drox_nsr``           NSR: ``A = 0`` correct, ``-1`` incorrect, no baseline (Eq. 4)
``drox_w_reinforce``   W-REINFORCE: ``A = λ`` correct, ``-1`` incorrect (§5 Eq. 9; λ = ``algorithm.drox.lam``)
``drox_grpo_dense``    GRPO process supervision over dense token rewards: step rewards normalised over the whole
                       group, reward-to-go per token (DeepSeekMath, arXiv 2402.03300, §4.1.3)
=====================  ===================================================================================

The sign-selective estimators are drox's ``psr`` / ``nsr`` / ``w_reinforce`` with the same options
(:class:`drox.signals.sign.SignOptions`, :class:`~drox.signals.sign.WReinforceOptions`, parsed from
``algorithm.drox.{scale,correct_above,lam}``): a rollout is *correct* when its sequence reward
``token_level_rewards.sum(-1)`` exceeds ``correct_above`` (default 0.5; drox's reward manager gives 1/0 by default),
and the advantages are multiplied by ``scale``.

Options live under ``algorithm.drox`` because verl hands an estimator ``config.algorithm`` and nothing else.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

from drox.integrations.verl import config_get
from drox.registry import parse_dataclass
from drox.signals.sign import SignOptions, WReinforceOptions, sign_advantages, sign_values
from drox.trainers.algos import broadcast_to_tokens, compute_advantages, dense_process_advantages

Tensor = torch.Tensor

__all__ = ["ESTIMATORS", "SIGN_ESTIMATORS", "group_rows", "grpo_dense", "last_token_mask", "nsr", "option", "psr",
           "sign_options", "w_reinforce"]

SIGN_ESTIMATORS = {"drox_psr": ("psr", SignOptions), "drox_nsr": ("nsr", SignOptions),
                   "drox_w_reinforce": ("w_reinforce", WReinforceOptions)}
"""verl name -> (drox's estimator, its options dataclass)."""

DEFAULTS = {"eps": 1e-6}
"""``algorithm.drox.*`` of :func:`grpo_dense` when not set."""


def option(config: Any, key: str) -> Any:
    """``config.drox.<key>`` (``config`` = verl's ``config.algorithm``: a DictConfig, a dict or None), else the
    default of :data:`DEFAULTS`."""
    return config_get(config_get(config, "drox"), key, DEFAULTS[key])


def group_rows(index: Optional[Sequence[Any]], num_rows: int) -> Tuple[Tensor, Tensor]:
    """verl's group ids (one uid per row, groups in any order) -> drox's ``[Q, G]`` layout.

    Returns ``rows [Q, G]`` long, the batch row of each member (``-1`` where a group has fewer than ``G`` members,
    ``G`` = the largest group), and ``valid [Q, G]`` bool. Groups are ordered by first appearance, members by row.
    Example: ``index = ["b", "a", "b"]`` -> ``rows = [[0, 2], [1, -1]]``, ``valid = [[T, T], [T, F]]``.
    """
    if index is None:
        raise ValueError("this estimator needs verl's group ids (non_tensor_batch['uid']), which were not passed")
    if len(index) != num_rows:
        raise ValueError(f"index has {len(index)} entries for {num_rows} rows")
    members: Dict[Any, list] = {}
    for row, uid in enumerate(index):
        members.setdefault(uid, []).append(row)
    width = max((len(m) for m in members.values()), default=0)
    rows = torch.full((len(members), width), -1, dtype=torch.long)
    for q, m in enumerate(members.values()):
        rows[q, : len(m)] = torch.tensor(m, dtype=torch.long)
    return rows, rows >= 0


def last_token_mask(response_mask: Tensor) -> Tensor:
    """``[B, T]`` bool: the last valid token of each response (where verl puts a sequence reward)."""
    m = response_mask.to(torch.long)
    count = m.cumsum(-1)
    return (m > 0) & (count == m.sum(-1, keepdim=True))


def sign_options(name: str, config: Any) -> SignOptions:
    """The options of verl estimator ``name`` (``drox_psr``...) from ``config.drox`` (``config`` = verl's
    ``config.algorithm``), parsed as drox parses ``trainer.advantage.<estimator>``; unset keys take the defaults."""
    cls = SIGN_ESTIMATORS[name][1]
    node = config_get(config, "drox")
    raw = {f.name: config_get(node, f.name) for f in dataclasses.fields(cls) if config_get(node, f.name) is not None}
    return parse_dataclass(cls, raw, "algorithm.drox")


def _sign_selective(name: str, token_level_rewards: Tensor, response_mask: Tensor, config: Any) -> Tuple[Tensor, Tensor]:
    opts = sign_options(name, config)
    correct = token_level_rewards.sum(-1) > float(opts.correct_above)  # [B]
    scores = sign_advantages(correct, *sign_values(SIGN_ESTIMATORS[name][0], opts)) * float(opts.scale)  # [B]
    adv = compute_advantages(scores.view(1, -1), "none").view(-1)  # drox's no-baseline estimator: A = score
    tokens = broadcast_to_tokens(adv, response_mask).to(token_level_rewards.dtype)  # [B, T], 0 on padding
    return tokens, tokens


def psr(token_level_rewards: Tensor, response_mask: Tensor, index=None, config=None, **_: Any) -> Tuple[Tensor, Tensor]:
    """PSR (arXiv 2506.01347 Eq. 3): ``A = scale`` on correct rollouts, 0 on incorrect. ``[B, T]`` -> ``[B, T]`` x2."""
    return _sign_selective("drox_psr", token_level_rewards, response_mask, config)


def nsr(token_level_rewards: Tensor, response_mask: Tensor, index=None, config=None, **_: Any) -> Tuple[Tensor, Tensor]:
    """NSR (arXiv 2506.01347 Eq. 4): ``A = -scale`` on incorrect rollouts, 0 on correct. ``[B, T]`` -> ``[B, T]`` x2."""
    return _sign_selective("drox_nsr", token_level_rewards, response_mask, config)


def w_reinforce(token_level_rewards: Tensor, response_mask: Tensor, index=None, config=None,
                **_: Any) -> Tuple[Tensor, Tensor]:
    """W-REINFORCE (arXiv 2506.01347 §5 Eq. 9): ``A = λ·scale`` correct, ``-scale`` incorrect. ``[B, T]`` x2."""
    return _sign_selective("drox_w_reinforce", token_level_rewards, response_mask, config)


def grpo_dense(token_level_rewards: Tensor, response_mask: Tensor, index=None, config=None,
               **_: Any) -> Tuple[Tensor, Tensor]:
    """GRPO process supervision (DeepSeekMath §4.1.3) on verl's dense ``token_level_rewards [B, T]``.

    The step rewards of a group are its nonzero entries plus each response's last valid token (the outcome
    position, counted even when its reward is 0); they are normalised over all of the group's step rewards
    (``(r - mean) / (std + eps)``, unbiased std, ``eps = algorithm.drox.eps``) and each token gets the sum of the
    normalised rewards at and after it (:func:`drox.trainers.algos.dense_process_advantages`).
    A step reward of exactly 0 before the last token is indistinguishable from "no step" here and is skipped.
    Returns ``(advantages [B, T], returns [B, T])``, equal, 0 on padding.
    """
    B = token_level_rewards.shape[0]
    rows, valid = group_rows(index, B)  # [Q, G]
    Q, G = rows.shape
    flat_valid = valid.reshape(-1)  # [Q*G]
    take = rows.reshape(-1).clamp_min(0)
    keep = flat_valid[:, None].to(token_level_rewards.dtype)
    rewards = token_level_rewards[take] * keep  # [Q*G, T], padding members all 0
    mask = response_mask[take].to(token_level_rewards.dtype) * keep
    steps = (rewards != 0) | last_token_mask(mask)
    adv = dense_process_advantages(rewards, mask, G, eps=float(option(config, "eps")), reward_mask=steps,
                                   valid=flat_valid)  # [Q*G, T]
    out = torch.zeros_like(token_level_rewards)
    out[rows.reshape(-1)[flat_valid]] = adv[flat_valid].to(out.dtype)
    return out, out


ESTIMATORS: Dict[str, Callable[..., Tuple[Tensor, Tensor]]] = {
    "drox_psr": psr,
    "drox_nsr": nsr,
    "drox_w_reinforce": w_reinforce,
    "drox_grpo_dense": grpo_dense,
}
"""verl name -> function; ``register.py`` puts each into verl's ``ADV_ESTIMATOR_REGISTRY``."""
