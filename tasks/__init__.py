"""drox.tasks: prompts + reference answers (a ``datasets.Dataset``) and a verifier.

``build_task(cfg.task, split)`` looks ``cfg.name`` up in the registry ``TASKS`` (drox.components); a new task is
one builder ``(cfg, split) -> Task`` decorated with ``@register_task(name)``, in any file (``plugins=[my_task.py]``).
The built-in tasks' modules are imported when first used.
"""

from __future__ import annotations

from typing import Any, Callable

from drox.components import TASKS, register_task

from . import srl
from .common import SPLITS, Task, TaskError, check_split
from .countdown import CountdownVerifier
from .verify import MathVerifier, Verifier, VerifyResult, answers_match, extract_answer, match_many

Builder = Callable[[Any, str], Task]

VERIFIER_CHOICES = ("auto", "math", "none")


def build_task(cfg: Any, split: str = "train") -> Task:
    """The ``split`` ("train" | "test") of the task ``cfg`` (a TaskConfig) describes."""
    check_split(split)
    if str(cfg.name) not in TASKS:
        raise TaskError(f"unknown task '{cfg.name}'; choose one of: {', '.join(TASKS)}")
    builder = TASKS.get(str(cfg.name)).fn
    choice = str(getattr(cfg, "verifier", "auto"))
    if choice not in VERIFIER_CHOICES:
        raise TaskError(f"unknown task.verifier '{choice}'; choose one of: {', '.join(VERIFIER_CHOICES)}")
    task = builder(cfg, split)
    ids = getattr(cfg, "train_ids", None)
    if split == "train" and ids:
        task.dataset = _select_ids(task, [str(i) for i in ids])
    dropped = getattr(cfg, "test_exclude_ids", None)
    if split == "test" and dropped:
        task.dataset = _drop_ids(task, [str(i) for i in dropped])
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


def _drop_ids(task: Task, ids: list[str]):
    """The held-out rows without those whose problem_id is in ``ids`` (task.test_exclude_ids); the others keep
    their ids and order."""
    present = set(task.dataset["problem_id"])
    missing = [pid for pid in ids if pid not in present]
    if missing:
        raise TaskError(f"task.test_exclude_ids: no held-out problem with id {missing[0]!r} (ids look like "
                        f"{task.dataset['problem_id'][0]!r}; the split has task.n_test problems)")
    drop = set(ids)
    keep = [i for i, pid in enumerate(task.dataset["problem_id"]) if pid not in drop]
    if not keep:
        raise TaskError("task.test_exclude_ids drops every held-out problem: list fewer ids or raise task.n_test")
    return task.dataset.select(keep)


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
    "register_task",
]
