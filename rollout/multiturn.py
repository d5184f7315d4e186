"""Multi-turn episodes with an environment, as one RolloutBatch (tasks with an ``env``, e.g. ``task=twenty_questions``;
docs/algorithms.md "ΔBelief-RL and the 20-Questions task").

For each of the Q prompts, G episodes are played side by side. An episode's token sequence is the chat-templated
prompt followed by, for every turn:

1. the policy's turn, sampled with ``engine.generate_ids`` from the exact token prefix so far (prompt, earlier turns,
   environment tokens) up to and including EOS, or up to ``turn_tokens`` tokens;
2. the environment tokens: ``env.reply(state, turn text)`` formatted by the tokenizer's chat template as a user
   message, followed by the assistant header that opens the next turn (:class:`ReplyTokens`, derived once from the
   template; when the turn was cut at ``turn_tokens`` they also close the unfinished assistant message).

The episode stops when the reply says ``done`` (20 Questions: solved) or after ``max_turns`` turns; the last reply's
tokens are kept, so every turn is followed by its answer (ΔBelief's belief after the last turn reads it).

The batch: ``response_ids`` are the whole transcript after the prompt; ``action_mask`` [N, T] is 1 on the policy's
tokens and 0 on the environment's; ``turn_ends`` holds the response index of each turn's last policy token;
behaviour log-probs and entropies are the engine's on policy tokens (exactly what it assigned while sampling: the
on-policy ratio stays 1) and 0 on environment tokens; ``texts`` is the transcript (tasks/episodes.transcript_text),
which the task's verifier replays; ``finish_reason`` is ``length`` when some turn was cut at ``turn_tokens``.

Seeds: turn k of a step samples with :func:`~drox.rollout.tree.derived_seed` of the step's sampling seed and k. Cost:
each turn re-encodes its prefix (no KV cache is kept between turns) [ENG: simple; the prefixes here are short].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from drox.components import multiturn_tasks, register_shape
from drox.rollout.base import RolloutBatch, unpadded
from drox.rollout.tree import derived_seed
from drox.signals.spans import pad_ids, pad_rows
from drox.tasks.episodes import transcript_text

__all__ = ["Episodes", "ReplyTokens", "play_episodes"]

# placeholders for deriving the reply format from the chat template (any strings the template copies verbatim)
_USER, _ANSWER, _REPLY = "PROBE-USER-7f3a", "PROBE-ANSWER-7f3a", "PROBE-REPLY-7f3a"


class ReplyTokens:
    """The environment tokens after a policy turn, read off the tokenizer's chat template once.

    The template renders ``[user u]`` + generation prompt as ``start`` and ``[user u, assistant a, user r]`` +
    generation prompt as ``full``; ``full = start + a + rest``, and ``rest`` splits at ``r`` into ``before`` (the
    assistant message's end, e.g. ``<|im_end|>``, and the user header) and ``after`` (the user message's end and the
    assistant header). A turn that ended with the token that closes an assistant message (``close``, e.g. the EOS
    ``<|im_end|>``) gets ``before`` without it; a turn cut at the length cap gets all of ``before``.
    """

    def __init__(self, tokenizer, eos_ids: Sequence[int]):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("multi-turn episodes format the environment's replies with the tokenizer's chat "
                             "template, and this tokenizer has none; use a chat model (e.g. model=smollm2-135m)")
        self.tokenizer = tokenizer
        user = [{"role": "user", "content": _USER}]
        start = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": _ANSWER}, {"role": "user", "content": _REPLY}],
            tokenize=False, add_generation_prompt=True)
        head = start + _ANSWER
        if not full.startswith(head) or full.count(_REPLY) != 1:
            raise ValueError("this chat template does not render a conversation as the prompt followed by the turns "
                             "(it rewrites earlier messages), so episodes cannot continue token prefixes; use another "
                             "chat model")
        self.before, self.after = full[len(head):].split(_REPLY)
        closing = [(int(e), tokenizer.decode([int(e)], skip_special_tokens=False)) for e in eos_ids]
        self.close = next((text for _, text in closing if text and self.before.startswith(text)), "")
        self.closing_ids = {e for e, text in closing if self.close and text == self.close}

    def text(self, reply: str, closed: bool) -> str:
        """The environment's text after a turn: ``closed`` = the turn ended with the closing token."""
        before = self.before[len(self.close):] if closed else self.before
        return before + reply + self.after

    def tokens(self, reply: str, last_token: int, finished: bool) -> List[int]:
        """Token ids of :meth:`text`; ``finished``: the turn ended with an EOS token (``last_token``)."""
        closed = finished and int(last_token) in self.closing_ids
        return list(self.tokenizer(self.text(reply, closed), add_special_tokens=False)["input_ids"])


@dataclass
class _Episode:
    state: Any
    tokens: List[int] = field(default_factory=list)  # the response so far: policy and environment tokens
    logprobs: List[float] = field(default_factory=list)
    entropies: List[float] = field(default_factory=list)
    action: List[float] = field(default_factory=list)  # 1 policy, 0 environment
    turn_ends: List[int] = field(default_factory=list)
    turns: List[Tuple[str, str]] = field(default_factory=list)  # (policy turn text, reply text)
    done: bool = False
    solved: bool = False
    cut: bool = False  # some turn hit turn_tokens

    def add(self, tokens: Sequence[int], logprobs: Optional[Sequence[float]] = None,
            entropies: Optional[Sequence[float]] = None) -> None:
        policy = logprobs is not None
        self.tokens += list(tokens)
        self.logprobs += list(logprobs) if policy else [0.0] * len(tokens)
        self.entropies += list(entropies) if policy else [0.0] * len(tokens)
        self.action += [1.0 if policy else 0.0] * len(tokens)


@dataclass
class Episodes:
    batch: RolloutBatch  # Q groups of G episodes, with action_mask and turn_ends
    tokens_generated: int  # policy tokens the engine sampled
    solved: List[bool]  # [N] the environment said solved
    turns: List[List[Tuple[str, str]]]  # [N] (policy turn, reply) pairs


def play_episodes(engine, tokenizer, env, rows: List[Dict[str, Any]], group_size: int, *, max_turns: int,
                  turn_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                  seed: Optional[int] = None) -> Episodes:
    """G episodes per row (module docstring). ``engine``: the HF engine (``encode_prompts``, ``generate_ids``,
    ``eos_ids``, ``pad_id``); ``env``: tasks/episodes.Environment; ``rows``: the task's dataset rows."""
    prompts = [str(row["prompt"]) for row in rows]
    G = int(group_size)
    N = len(rows) * G
    prompt_ids, prompt_mask = engine.encode_prompts(prompts)  # [Q, P] left-padded
    heads = unpadded(prompt_ids, prompt_mask)
    fmt = ReplyTokens(tokenizer, engine.eos_ids.tolist())
    episodes = [_Episode(state=env.reset(rows[n // G])) for n in range(N)]
    tokens_generated = 0
    for turn in range(int(max_turns)):
        active = [n for n in range(N) if not episodes[n].done]
        if not active:
            break
        out = engine.generate_ids([heads[n // G] + episodes[n].tokens for n in active], 1,
                                  max_new_tokens=int(turn_tokens), temperature=temperature, top_p=top_p,
                                  seed=derived_seed(seed, turn))
        mask = out.response_mask
        sampled = zip(unpadded(out.response_ids, mask), unpadded(out.logprobs, mask), unpadded(out.entropies, mask))
        for n, (tokens, lps, ents), reason in zip(active, sampled, out.finish_reason):
            ep = episodes[n]
            tokens_generated += len(tokens)
            ep.add(tokens, lps, ents)
            ep.turn_ends.append(len(ep.tokens) - 1)
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            reply = env.reply(ep.state, text)
            ep.add(fmt.tokens(reply.text, tokens[-1], finished=reason == "eos"))
            ep.cut |= reason == "length"
            ep.turns.append((text, reply.text))
            ep.done, ep.solved = bool(reply.done), bool(reply.solved)

    response_ids, response_mask = pad_ids([ep.tokens for ep in episodes], engine.pad_id, side="right")  # [N, T]
    response_mask = response_mask.float()
    logprobs, entropies, action_mask = (pad_rows([getattr(ep, f) for ep in episodes], 0.0, dtype=torch.float32)
                                        for f in ("logprobs", "entropies", "action"))
    batch = RolloutBatch(
        prompt_ids=prompt_ids.repeat_interleave(G, 0), prompt_mask=prompt_mask.repeat_interleave(G, 0),
        response_ids=response_ids, response_mask=response_mask, logprobs=logprobs, entropies=entropies,
        finish_reason=["length" if ep.cut else "eos" for ep in episodes],
        texts=[transcript_text(ep.turns) for ep in episodes], group_size=G, prompts=prompts,
        temperature=temperature, action_mask=action_mask, turn_ends=[list(ep.turn_ends) for ep in episodes])
    return Episodes(batch=batch, tokens_generated=int(tokens_generated), solved=[ep.solved for ep in episodes],
                    turns=[list(ep.turns) for ep in episodes])


def _episode_sizes(cfg) -> Tuple[str, int]:
    m = cfg.rollout.multiturn
    return f" (episodes of <= {m.max_turns} turns of <= {m.turn_tokens} tokens)", int(m.max_turns * m.turn_tokens)


@register_shape("episodes", when=lambda cfg: cfg.task.name in multiturn_tasks(), describe=_episode_sizes,
                verl="its rollouts are multi-turn episodes with an environment; drox.integrations.verl does not have "
                     "it yet (docs/verl.md, 'Not done')")
def episode_shape(engine, tokenizer, task, rows: List[Dict[str, Any]], group_size: int, rollout_cfg,
                  seed: int) -> Tuple[RolloutBatch, int]:
    """A task with an environment (``task.env``): G whole episodes per row (:func:`play_episodes`), whose policy
    tokens are counted (``batch.action_mask`` marks the environment's)."""
    m = rollout_cfg.multiturn
    episodes = play_episodes(engine, tokenizer, task.env, rows, group_size, max_turns=m.max_turns,
                             turn_tokens=m.turn_tokens, temperature=rollout_cfg.temperature, top_p=rollout_cfg.top_p,
                             seed=seed)
    return episodes.batch, episodes.tokens_generated
