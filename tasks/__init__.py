"""drox.tasks: prompts + reference answers (a ``datasets.Dataset``) and a verifier.

``build_task(cfg.task, split)`` looks ``cfg.name`` up in ``TASKS``; a new task is one
builder ``(cfg, split) -> Task`` and one entry there.
"""

from __future__ import annotations

from typing import Any, Callable

from . import arithmetic, countdown, files, hub, revise
from .common import SPLITS, Task, TaskError, check_split
from .countdown import CountdownVerifier
from .verify import MathVerifier, Verifier, VerifyResult, answers_match, extract_answer, match_many

Builder = Callable[[Any, str], Task]

TASKS: dict[str, Builder] = {
    "arithmetic": arithmetic.build,
    "countdown": countdown.build,
    "revise": revise.build,
    "jsonl": files.build_jsonl,
    "parquet": files.build_parquet,
    "hub": hub.build,
}

VERIFIER_CHOICES = ("auto", "math", "none")


def build_task(cfg: Any, split: str = "train") -> Task:
    """The ``split`` ("train" | "test") of the task ``cfg`` (a TaskConfig) describes."""
    check_split(split)
    builder = TASKS.get(str(cfg.name))
    if builder is None:
        raise TaskError(f"unknown task '{cfg.name}'; choose one of: {', '.join(TASKS)}")
    choice = str(getattr(cfg, "verifier", "auto"))
    if choice not in VERIFIER_CHOICES:
        raise TaskError(f"unknown task.verifier '{choice}'; choose one of: {', '.join(VERIFIER_CHOICES)}")
    task = builder(cfg, split)
    if choice == "math":
        task.verifier = MathVerifier(float(cfg.verify_timeout))
    elif choice == "none":
        task.verifier = None
    return task


__all__ = [
    "SPLITS",
    "TASKS",
    "Builder",
    "CountdownVerifier",
    "MathVerifier",
    "Task",
    "TaskError",
    "Verifier",
    "VerifyResult",
    "answers_match",
    "build_task",
    "extract_answer",
    "match_many",
]
