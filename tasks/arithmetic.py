"""Synthetic arithmetic with worked steps: "What is (3 + 5) * 2?" -> 16."""

from __future__ import annotations

import random
from typing import Any

import datasets

from drox.components import register_task

from .common import Task, TaskError, draw_split, with_suffix
from .verify import MathVerifier

OPS = ("+", "-", "*")


def apply_op(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def make_problem(rng: random.Random, digits: int, n_ops: int, ops: list[str]) -> dict:
    """One problem evaluated left to right; the printed expression agrees with that order.

    Parentheses are added only where standard precedence would otherwise differ from
    left-to-right evaluation (a ``*`` following a ``+``/``-``), so the text can be read either
    way and the listed steps are the only sensible ones.
    """
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    hi = 10**digits - 1
    nums = [rng.randint(lo, hi) for _ in range(n_ops + 1)]
    chosen = [rng.choice(ops) for _ in range(n_ops)]

    expr, value = str(nums[0]), nums[0]
    top_level_sum = False  # does `expr` have a + or - outside parentheses?
    steps = []
    for op, b in zip(chosen, nums[1:]):
        if op == "*" and top_level_sum:
            expr = f"({expr})"
        expr = f"{expr} {op} {b}"
        top_level_sum = op != "*"
        new = apply_op(value, op, b)
        steps.append(f"{value} {op} {b} = {new}")
        value = new
    solution = "\n".join(steps) + f"\nThe answer is \\boxed{{{value}}}"
    return {"expression": expr, "answer": str(value), "steps": steps, "solution": solution}


def _check(cfg: Any) -> tuple[int, int, list[str]]:
    digits, n_ops, ops = int(cfg.digits), int(cfg.n_ops), [str(o) for o in cfg.ops]
    if digits < 1:
        raise TaskError(f"task.digits must be >= 1 (got {digits})")
    if n_ops < 1:
        raise TaskError(f"task.n_ops must be >= 1 (got {n_ops})")
    bad = [o for o in ops if o not in OPS]
    if not ops or bad:
        raise TaskError(f"task.ops must be a non-empty subset of + - * (got {ops})")
    return digits, n_ops, ops


@register_task("arithmetic", verl="drox.integrations.verl.mapping:task")
def build(cfg: Any, split: str) -> Task:
    """``task=arithmetic``: columns problem_id, prompt, answer, steps, solution."""
    digits, n_ops, ops = _check(cfg)

    def sample(rng: random.Random) -> dict:
        p = make_problem(rng, digits, n_ops, ops)
        return {
            "prompt": with_suffix(f"What is {p['expression']}?", cfg),
            "answer": p["answer"],
            "steps": p["steps"],
            "solution": p["solution"],
        }

    rows = draw_split("arithmetic", sample, int(cfg.seed), split, int(cfg.n_train), int(cfg.n_test))
    return Task("arithmetic", datasets.Dataset.from_list(rows), MathVerifier(float(cfg.verify_timeout)))
