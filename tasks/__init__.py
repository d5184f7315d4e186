"""drox.tasks: prompts + reference answers (a ``datasets.Dataset``) and a verifier.

``build_task(cfg.task, split)`` looks ``cfg.name`` up in ``TASKS``; a new task is one
builder ``(cfg, split) -> Task`` and one entry there.
"""

from __future__ import annotations

from typing import Any, Callable

from . import arithmetic, countdown, files, hub, revise, srl, twenty_questions
from .common import SPLITS, Task, TaskError, check_split
from .countdown import CountdownVerifier
from .verify import MathVerifier, Verifier, VerifyResult, answers_match, extract_answer, match_many

Builder = Callable[[Any, str], Task]

TASKS: dict[str, Builder] = {
    "arithmetic": arithmetic.build,
    "countdown": countdown.build,
    "revise": revise.build,
    "twenty_questions": twenty_questions.build,
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
    ids = getattr(cfg, "train_ids", None)
    if split == "train" and ids:
        task.dataset = _select_ids(task, [str(i) for i in ids])
    if split == "train" and getattr(cfg, "srl", False):
        task = srl.expand_steps(task)
    if choice == "math":
        task.verifier = MathVerifier(float(cfg.verify_timeout))
    elif choice == "none":
        task.verifier = None
    return task


def _select_ids(task: Task, ids: list[str]):
    """The training rows whose problem_id is in ``ids``, in the order of ``ids`` (task.train_ids)."""
    position = {pid: i for i, pid in enumerate(task.dataset["problem_id"])}
    missing = [pid for pid in ids if pid not in position]
    if missing:
        raise TaskError(f"task.train_ids: no training problem with id {missing[0]!r} (ids look like "
                        f"{task.dataset['problem_id'][0]!r})")
    return task.dataset.select([position[pid] for pid in ids])


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
