"""The rollout batch every later stage reads, and the engine interface that produces it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Tuple

import torch

from drox.components import ROLLOUT_ENGINES, register_shape


@dataclass
class RolloutBatch:
    """Q prompts x G samples, flattened group-major: rows q*G .. q*G+G-1 belong to prompt q.

    Prompts are left-padded and responses right-padded, so ``cat([prompt_ids, response_ids], 1)``
    is a valid model input whose response tokens sit at columns P .. P+T-1.
    """

    prompt_ids: torch.Tensor  # [N, P] long, left-padded with pad_token_id
    prompt_mask: torch.Tensor  # [N, P] long, 1 on real prompt tokens
    response_ids: torch.Tensor  # [N, T] long, right-padded with pad_token_id
    response_mask: torch.Tensor  # [N, T] float, 1 on generated tokens (the EOS token included)
    logprobs: torch.Tensor  # [N, T] behaviour log-probs of the sampled tokens, 0 on padding
    entropies: torch.Tensor  # [N, T] entropy of the sampling distribution, 0 on padding
    finish_reason: List[str]  # N x "eos" | "length"
    texts: List[str]  # N decoded completions (special tokens removed)
    group_size: int  # G
    prompts: List[str] = field(default_factory=list)  # Q raw user prompts
    temperature: float = 1.0  # the temperature the log-probs and entropies refer to
    sampler_logprobs: Optional[torch.Tensor] = None  # [N, T] the sampling engine's own log-probs, kept only when
    #   they are not the trainer's (vLLM, or a decode step in another precision): ``logprobs`` and ``entropies``
    #   are then the trainer's recomputation, and the update weights tokens by pi_trainer / pi_sampler (TIS)
    margins: Optional[torch.Tensor] = None  # [N, T] p_(1) - p_(2) of softmax(z) (temperature 1, whatever the
    #   sampling temperature) at each sampled position, 0 on padding; only when asked for (``generate(margins=True)``)
    #   and the decode step ran in the trainer's precision: RLSF's answer-span confidence read off the sampler
    tree_ids: Optional[torch.Tensor] = None  # [N] long, Tree-GRPO rollouts only (rollout.tree, rollout/tree.py): the
    #   tree within its group (0..M-1) that row's leaf belongs to, for the ``tree`` advantage estimator; None = flat
    action_mask: Optional[torch.Tensor] = None  # [N, T] float, 1 on policy-sampled tokens, 0 on environment tokens
    #   (multi-turn episodes, rollout/multiturn.py: the environment's replies sit inside the response); None = every
    #   response token is the policy's. The loss, the KL and the entropy terms see only ``policy_mask``
    turn_ends: Optional[List[List[int]]] = None  # N lists: the response index of each policy turn's last token
    #   (multi-turn episodes only; where turn-level rewards such as ΔBelief are placed); None = single-turn

    @property
    def num_rows(self) -> int:
        return self.response_ids.shape[0]

    @property
    def num_groups(self) -> int:
        return self.num_rows // self.group_size

    @property
    def lengths(self) -> torch.Tensor:  # [N] long, completion length in tokens
        return self.response_mask.sum(-1).long()

    @property
    def policy_mask(self) -> torch.Tensor:  # [N, T] float, 1 on the tokens the policy sampled
        return self.response_mask if self.action_mask is None else self.response_mask * self.action_mask

    @property
    def truncated(self) -> torch.Tensor:  # [N] bool, hit max_new_tokens without EOS
        return torch.tensor([r == "length" for r in self.finish_reason], dtype=torch.bool)

    def select_groups(self, keep: torch.Tensor) -> "RolloutBatch":
        """The sub-batch of the groups where ``keep`` ([Q] bool) is True."""
        rows = torch.nonzero(keep.repeat_interleave(self.group_size)).flatten()
        idx = rows.tolist()
        q_idx = torch.nonzero(keep).flatten().tolist()
        return RolloutBatch(
            prompt_ids=self.prompt_ids[rows],
            prompt_mask=self.prompt_mask[rows],
            response_ids=self.response_ids[rows],
            response_mask=self.response_mask[rows],
            logprobs=self.logprobs[rows],
            entropies=self.entropies[rows],
            finish_reason=[self.finish_reason[i] for i in idx],
            texts=[self.texts[i] for i in idx],
            group_size=self.group_size,
            prompts=[self.prompts[q] for q in q_idx] if self.prompts else [],
            temperature=self.temperature,
            sampler_logprobs=None if self.sampler_logprobs is None else self.sampler_logprobs[rows],
            margins=None if self.margins is None else self.margins[rows],
            tree_ids=None if self.tree_ids is None else self.tree_ids[rows],
            action_mask=None if self.action_mask is None else self.action_mask[rows],
            turn_ends=None if self.turn_ends is None else [list(self.turn_ends[i]) for i in idx],
        )


def unpadded(ids: torch.Tensor, mask: torch.Tensor) -> List[List[int]]:
    """Padded token rows ids [n, L] with mask [n, L] (1 on real tokens) -> n token lists without the padding."""
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


def _pad_to(x: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    extra = width - x.shape[1]
    if extra <= 0:
        return x
    fill = x.new_full((x.shape[0], extra), value)
    return torch.cat([fill, x] if left else [x, fill], dim=1)


def concat_batches(batches: List[RolloutBatch], pad_id: int) -> RolloutBatch:
    """Join batches with the same G, re-padding prompts on the left and responses on the right."""
    P = max(b.prompt_ids.shape[1] for b in batches)
    T = max(b.response_ids.shape[1] for b in batches)

    def cat(key, width, value, left):
        return torch.cat([_pad_to(getattr(b, key), width, value, left) for b in batches])

    return RolloutBatch(
        prompt_ids=cat("prompt_ids", P, pad_id, True),
        prompt_mask=cat("prompt_mask", P, 0, True),
        response_ids=cat("response_ids", T, pad_id, False),
        response_mask=cat("response_mask", T, 0.0, False),
        logprobs=cat("logprobs", T, 0.0, False),
        entropies=cat("entropies", T, 0.0, False),
        finish_reason=[r for b in batches for r in b.finish_reason],
        texts=[s for b in batches for s in b.texts],
        group_size=batches[0].group_size,
        prompts=[p for b in batches for p in b.prompts],
        temperature=batches[0].temperature,
        sampler_logprobs=(cat("sampler_logprobs", T, 0.0, False)
                          if all(b.sampler_logprobs is not None for b in batches) else None),
        margins=cat("margins", T, 0.0, False) if all(b.margins is not None for b in batches) else None,
        tree_ids=(torch.cat([b.tree_ids for b in batches]) if all(b.tree_ids is not None for b in batches) else None),
        # a batch without an action mask is all policy tokens (its response mask)
        action_mask=(torch.cat([_pad_to(b.response_mask if b.action_mask is None else b.action_mask, T, 0.0, False)
                                for b in batches]) if any(b.action_mask is not None for b in batches) else None),
        turn_ends=([list(e) for b in batches for e in b.turn_ends]
                   if all(b.turn_ends is not None for b in batches) else None),
    )


class RolloutEngine(Protocol):
    """Samples G completions for each prompt. Backends: ``hf`` (reference), ``vllm`` (GPU).

    ``exact_logprobs``: the behaviour log-probs and entropies it returns are the trainer's own (same weights, same
    precision, same code up to float rounding). When False the trainer recomputes both right after sampling and
    keeps the engine's as ``RolloutBatch.sampler_logprobs`` for the truncated importance weights.
    ``margins=True`` asks for ``RolloutBatch.margins``; an engine that cannot give them in the trainer's precision
    leaves the field None (readers then recompute with a teacher-forced pass).
    ``policy_changed()``: the trainer updated the weights; an engine holding its own copy refreshes it before it
    samples again (the HF engine samples from the trainer's model itself: nothing to do).
    """

    exact_logprobs: bool
    pad_id: int

    def policy_changed(self) -> None: ...

    def generate(
        self,
        prompts: List[str],
        group_size: int,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: Optional[int] = None,
        progress: bool = False,
        margins: bool = False,
    ) -> RolloutBatch: ...


def build_engine(rollout_cfg, model, tokenizer, model_cfg, opts: Any = None) -> RolloutEngine:
    """The registered engine ``rollout.backend`` names (drox.components.ROLLOUT_ENGINES), sampling from ``model``."""
    return ROLLOUT_ENGINES.get(str(rollout_cfg.backend)).fn(rollout_cfg, model, tokenizer, model_cfg, opts)


def _flat_sizes(cfg) -> Tuple[str, int]:
    return "", int(cfg.rollout.max_new_tokens)


@register_shape("flat", describe=_flat_sizes, verl="drox.integrations.verl.mapping:nothing")
def flat_rollouts(engine, tokenizer, task, rows: List[Dict[str, Any]], group_size: int, rollout_cfg,
                  seed: int) -> Tuple[RolloutBatch, int]:
    """G independent completions per prompt (plain GRPO); every sampled token is counted."""
    batch = engine.generate([row["prompt"] for row in rows], group_size, max_new_tokens=rollout_cfg.max_new_tokens,
                            temperature=rollout_cfg.temperature, top_p=rollout_cfg.top_p, seed=seed)
    return batch, int(batch.response_mask.sum().item())
