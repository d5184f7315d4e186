"""Shared pieces of every task: the Task record, the error type, prompts and split drawing."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import datasets

if TYPE_CHECKING:  # only for the annotation; verify.py imports nothing from here at runtime
    from .verify import Verifier

SPLITS = ("train", "test")

# Consecutive rejected draws after which a problem space counts as exhausted. Generators
# are cheap (microseconds), so this costs milliseconds and only on tiny problem spaces.
_MAX_MISSES = 2000


class TaskError(ValueError):
    """A task could not be built; the message is one line naming the file/field/option."""


@dataclass
class Task:
    """Prompts + references (``dataset``) and the verifier that scores completions."""

    name: str
    dataset: datasets.Dataset
    verifier: Optional["Verifier"]
    env: Optional[Any] = None  # a multi-turn task's environment (tasks/episodes.Environment): rollouts are
    #   episodes of policy turns and its replies (rollout/multiturn.py); None = one completion per rollout


def with_suffix(prompt: str, cfg: Any) -> str:
    """Append ``cfg.prompt_suffix`` after a blank line (nothing when it is empty)."""
    suffix = getattr(cfg, "prompt_suffix", "") or ""
    return f"{prompt}\n\n{suffix}" if suffix else prompt


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise TaskError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")


def draw_split(
    name: str,
    sample: Callable[[random.Random], dict],
    seed: int,
    split: str,
    n_train: int,
    n_test: int,
) -> list[dict]:
    """Draw the rows of one split from ``sample(rng) -> row`` (a dict with a ``prompt``).

    The test split is ``n_test`` distinct prompts from its own seeded stream, so it does not
    change with ``n_train``. The train split comes from a second stream and never contains
    a test prompt; it holds distinct prompts while the problem space allows and repeats
    problems once the space is exhausted (the default 1-digit sum has only 100 problems).
    ``problem_id`` is ``<name>-<split>-<index>``.
    """
    check_split(split)
    if n_test < 1 or n_train < 1:
        raise TaskError(f"task '{name}': n_train and n_test must be >= 1 (got {n_train}, {n_test})")
    # String seeds hash with sha512, so streams are identical across processes and platforms.
    test = _draw(name, sample, random.Random(f"drox/{name}/{seed}/test"), n_test, set(), repeats_ok=False)
    rows = test
    if split == "train":
        taken = {r["prompt"] for r in test}
        rows = _draw(name, sample, random.Random(f"drox/{name}/{seed}/train"), n_train, taken, repeats_ok=True)
    return [{"problem_id": f"{name}-{split}-{i}", **row} for i, row in enumerate(rows)]


def _draw(name, sample, rng, n, exclude, repeats_ok):
    rows: list[dict] = []
    seen: set[str] = set()
    misses = 0
    allow_repeats = False
    while len(rows) < n:
        row = sample(rng)
        prompt = row["prompt"]
        if prompt in exclude or (prompt in seen and not allow_repeats):
            misses += 1
            if misses > _MAX_MISSES:
                if not repeats_ok:
                    raise TaskError(
                        f"task '{name}': only {len(rows)} distinct test problems exist for these "
                        f"settings; lower task.n_test or widen the task"
                    )
                if allow_repeats:  # every candidate is a test prompt
                    raise TaskError(
                        f"task '{name}': no training problems are left after the test split; "
                        f"lower task.n_test or widen the task"
                    )
                allow_repeats, misses = True, 0
            continue
        misses = 0
        seen.add(prompt)
        rows.append(row)
    return rows
