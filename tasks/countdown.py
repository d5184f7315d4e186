"""Countdown: reach a target from given numbers with + - *, each number at most once."""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from typing import Any, Optional, Sequence

import datasets

from drox.components import register_task

from .common import Task, TaskError, draw_split, with_suffix
from .verify import Verifier, VerifyResult, extract_answer

_MAX_EXPR_CHARS = 200  # longer "expressions" are not answers; keeps parsing cheap
_ALLOWED_CHARS = re.compile(r"[\d+\-*() ]+")
_TIMES = re.compile(r"\\times|\\cdot|×|·|⋅")


def make_problem(rng: random.Random, n_numbers: int, max_number: int) -> dict:
    """Draw numbers and combine all of them in a random expression tree; its value is the
    target, so at least one solution (the returned ``answer``) exists."""
    while True:
        numbers = [rng.randint(1, max_number) for _ in range(n_numbers)]
        # items: (text, value, top-level operator or None for a bare number)
        items: list[tuple[str, int, Optional[str]]] = [(str(n), n, None) for n in numbers]
        while len(items) > 1:
            i, j = rng.sample(range(len(items)), 2)
            a, b = items[i], items[j]
            op = rng.choice("+-*")
            if op == "-" and a[1] < b[1]:  # keep intermediate values non-negative
                a, b = b, a
            items = [it for k, it in enumerate(items) if k not in (i, j)]
            items.append((f"{_wrap(a, op, False)} {op} {_wrap(b, op, True)}", _apply(a[1], op, b[1]), op))
        text, target, _ = items[0]
        if target > 0 and target not in numbers:  # a given number as target is trivial
            return {"numbers": numbers, "target": target, "answer": text}


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _wrap(item, op: str, right: bool) -> str:
    """Parenthesise a sub-expression only where precedence requires it."""
    text, _, inner = item
    needs = inner in ("+", "-") and (op == "*" or (op == "-" and right))
    return f"({text})" if needs else text


def evaluate(expr: Optional[str], numbers: Sequence[int]) -> Optional[int]:
    """Value of a countdown answer, or None if it is not a valid one.

    Valid: integers, + - * and parentheses only (parsed with ``ast``, never ``eval``), each
    given number used at most once. A trailing ``= value`` and LaTeX ``\\times``/``\\cdot``
    are accepted because models write them.
    """
    if not expr:
        return None
    s = _TIMES.sub("*", expr.replace("$", "")).split("=")[0].strip()
    if not s or len(s) > _MAX_EXPR_CHARS or not _ALLOWED_CHARS.fullmatch(s):
        return None
    try:
        tree = ast.parse(s, mode="eval")
    except SyntaxError:
        return None
    used: list[int] = []
    value = _eval_node(tree.body, used)
    if value is None or Counter(used) - Counter(int(n) for n in numbers):
        return None
    return value


def _eval_node(node: ast.AST, used: list[int]) -> Optional[int]:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
        left, right = _eval_node(node.left, used), _eval_node(node.right, used)
        if left is None or right is None:
            return None
        op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}[type(node.op)]
        return _apply(left, op, right)
    return None  # unary minus, calls, names ...: not a countdown expression


class CountdownVerifier(Verifier):
    """Correct when the extracted expression is valid and equals row["target"]."""

    name = "countdown"

    def __call__(self, completions: Sequence[str], rows: Sequence[dict]) -> VerifyResult:
        self._check_lengths(completions, rows)
        extracted = [extract_answer(c) for c in completions]
        correct = [
            evaluate(e, r["numbers"]) == int(r["target"]) for e, r in zip(extracted, rows)
        ]
        return VerifyResult(correct=correct, extracted=extracted, timeouts=0)


@register_task("countdown", verl="drox.integrations.verl.mapping:task")
def build(cfg: Any, split: str) -> Task:
    """``task=countdown``: columns problem_id, prompt, answer, numbers, target."""
    n_numbers, max_number = int(cfg.n_numbers), int(cfg.max_number)
    if n_numbers < 2:
        raise TaskError(f"task.n_numbers must be >= 2 (got {n_numbers})")
    if max_number < 1:
        raise TaskError(f"task.max_number must be >= 1 (got {max_number})")

    def sample(rng: random.Random) -> dict:
        p = make_problem(rng, n_numbers, max_number)
        listed = ", ".join(str(n) for n in p["numbers"])
        prompt = (
            f"Using the numbers {listed}, write an expression that equals {p['target']}. "
            "You may use +, - and * and parentheses, and each number at most once. "
            "Give the expression itself, not its value, as the final answer."
        )
        return {"prompt": with_suffix(prompt, cfg), **p}

    rows = draw_split("countdown", sample, int(cfg.seed), split, int(cfg.n_train), int(cfg.n_test))
    return Task("countdown", datasets.Dataset.from_list(rows), CountdownVerifier())
