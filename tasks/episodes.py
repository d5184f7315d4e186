"""The contract of a multi-turn task: an environment that answers the policy's turns, and the transcript text.

A task whose :class:`~drox.tasks.common.Task` has an ``env`` is played in episodes (rollout/multiturn.py): the
policy speaks, ``env.reply(state, text)`` answers, until the reply says ``done`` or the turn limit is reached.
The rollout's ``texts`` are :func:`transcript_text` of the (policy turn, reply) pairs, so the task's verifier can
replay the episode from the text alone (:func:`transcript_turns`) and ``+reward=outcome``, ``accuracy`` and pass@k
work as for single-turn tasks. Every turn and reply sits on one line of its own (whitespace collapsed), so what
the policy writes can never pass for a reply of the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Protocol, Sequence, Tuple


@dataclass(frozen=True)
class Reply:
    """The environment's answer to one policy turn."""

    text: str  # what the environment says (appended to the conversation as a user message)
    done: bool = False  # the episode ends here
    solved: bool = False  # ... with the task solved


class Environment(Protocol):
    """``reset(row) -> state`` once per episode (``row``: the task's dataset row), then
    ``reply(state, turn text) -> Reply`` for each policy turn (the text decoded without special tokens)."""

    def reset(self, row: Dict[str, Any]) -> Any: ...

    def reply(self, state: Any, text: str) -> Reply: ...


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space, stripped."""
    return " ".join(str(text).split())


def transcript_text(turns: Sequence[Tuple[str, str]]) -> str:
    """(policy turn, reply) pairs -> ``"Q1: ...\\nA1: ...\\nQ2: ..."``, one line each."""
    lines: List[str] = []
    for k, (turn, reply) in enumerate(turns, 1):
        lines += [f"Q{k}: {one_line(turn)}", f"A{k}: {one_line(reply)}"]
    return "\n".join(lines)


def transcript_turns(text: str) -> List[str]:
    """The policy turns of a :func:`transcript_text` (one-lined), in order; [] for an empty or foreign text."""
    turns = []
    for k, line in enumerate(text.split("\n")[::2], 1):
        head = f"Q{k}:"
        if not line.startswith(head):
            break
        turns.append(line[len(head):].strip())
    return turns


__all__ = ["Environment", "Reply", "one_line", "transcript_text", "transcript_turns"]
