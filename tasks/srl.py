"""Supervised RL's step-wise rows (Deng et al., "Supervised Reinforcement Learning: From Expert Trajectories to
Step-wise Reasoning", arXiv 2510.25992, §3; docs/algorithms.md "SRL").

An expert solution with steps s_1..s_K becomes K training rows: row k shows the problem and the expert's steps
s_1..s_{k-1} and asks for the next one; the expert's s_k is kept as ``expert_step`` for ``+reward=srl``, which scores
the policy's step by its similarity to it. The model is thereby rewarded on every step of a problem it cannot yet
solve end to end. Choices [ENG]: the wording that introduces the earlier steps and asks for the next one
(``STEPS_INTRO``, ``ASK_FIRST``, ``ASK_NEXT``); the arithmetic task's ``steps`` column (each ``a op b = c``) as the
expert's actions, without its final "The answer is" line.
"""

from __future__ import annotations

import datasets

from .common import Task, TaskError

STEPS_INTRO = "The solution so far:"
ASK_FIRST = "Write only the first step of the solution."
ASK_NEXT = "Write only the next step."


def step_prompt(prompt: str, steps: list, k: int) -> str:
    """The prompt of row k (0-based): the problem, the expert's steps before k, and the request."""
    if k == 0:
        return f"{prompt}\n\n{ASK_FIRST}"
    shown = "\n".join(steps[:k])
    return f"{prompt}\n\n{STEPS_INTRO}\n{shown}\n\n{ASK_NEXT}"


def expand_steps(task: Task) -> Task:
    """``task`` with its dataset expanded to one row per expert step (columns problem_id ``<id>/step-<k>``, prompt,
    answer, expert_step, step_index, steps); TaskError when the task has no ``steps`` column."""
    columns = list(task.dataset.column_names)
    if "steps" not in columns:
        raise TaskError(f"task.srl=true needs expert steps (a 'steps' column); task '{task.name}' has: "
                        f"{', '.join(columns)} (use task=arithmetic, or turn task.srl off)")
    rows = []
    for row in task.dataset:
        steps = [str(s) for s in row["steps"]]
        for k, step in enumerate(steps):
            rows.append({"problem_id": f"{row['problem_id']}/step-{k}", "prompt": step_prompt(row["prompt"], steps, k),
                         "answer": row["answer"], "expert_step": step, "step_index": k, "steps": steps})
    if not rows:
        raise TaskError(f"task.srl=true: task '{task.name}' has no expert steps to train on")
    return Task(task.name, datasets.Dataset.from_list(rows), task.verifier)


__all__ = ["ASK_FIRST", "ASK_NEXT", "STEPS_INTRO", "expand_steps", "step_prompt"]
