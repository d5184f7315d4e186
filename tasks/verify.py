"""Answer extraction and comparison, and the math verifier.

``answers_match`` first normalises both sides and compares them as exact fractions when
both are plain numbers (the common case, microseconds); only what that cannot decide goes
to math-verify in a worker process (``symbolic.py``) under a hard timeout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Sequence

from . import symbolic


@dataclass
class VerifyResult:
    """Per-completion outcome of a verifier; ``timeouts`` counts checks abandoned (scored False)."""

    correct: list[bool]
    extracted: list[Optional[str]]
    timeouts: int = 0


class Verifier:
    """Scores completions against their dataset rows: ``verifier(completions, rows)``."""

    name = "verifier"

    def __call__(self, completions: Sequence[str], rows: Sequence[dict]) -> VerifyResult:
        raise NotImplementedError

    @staticmethod
    def _check_lengths(completions: Sequence[str], rows: Sequence[dict]) -> None:
        if len(completions) != len(rows):
            raise ValueError(f"{len(completions)} completions but {len(rows)} rows")


# ---------------------------------------------------------------- extraction

_BOXED = re.compile(r"\\boxed\s*\{")
_ANSWER_LINE = re.compile(r"answer\s*:\s*(.+)", re.IGNORECASE)
# A minus sign counts only when it is not a binary minus/hyphen glued to a word or digit.
_NUMBER = re.compile(r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")


def _last_boxed(text: str) -> Optional[str]:
    found = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:  # an unclosed box (truncated completion) does not count
            content = text[m.end() : i - 1].strip()
            if content:
                found = content
    return found


def extract_answer(text: Optional[str]) -> Optional[str]:
    """The final answer in ``text``: the last balanced ``\\boxed{...}``, else the last
    ``Answer: ...`` line, else the last number (int, negative, decimal, a/b); else None."""
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    for line in reversed(text.splitlines()):
        m = _ANSWER_LINE.search(line)
        if m:
            value = m.group(1).strip().strip("*").strip().rstrip(".").strip()
            if value:
                return value
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


# ---------------------------------------------------------------- comparison

_LATEX_SPACES = re.compile(r"\\[!,;: ]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_SLASH_FRACTION = re.compile(r"([+-]?\d+)/(\d+)")
_LATEX_FRACTION = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}")


def clean(answer: str) -> str:
    """Light normalisation that keeps LaTeX meaning (used before math-verify as well)."""
    s = answer.strip().replace("$", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _LATEX_SPACES.sub("", s)
    s = s.strip().rstrip(".").strip()
    return _THOUSANDS.sub("", s)


def parse_number(answer: str) -> Optional[Fraction]:
    """Exact value of an int, decimal, a/b or \\frac{a}{b} (after ``clean``), else None."""
    s = re.sub(r"\s+", "", clean(answer))
    if _PLAIN_NUMBER.fullmatch(s):
        return Fraction(s)
    m = _SLASH_FRACTION.fullmatch(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = _LATEX_FRACTION.fullmatch(s)
    if m and int(m.group(3)) != 0:
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return -value if m.group(1) == "-" else value
    return None


def fast_match(pred: Optional[str], ref: str) -> Optional[bool]:
    """True/False when normalisation decides, None when math-verify is needed."""
    if pred is None or not clean(pred):
        return False
    a, b = clean(pred), clean(str(ref))
    if re.sub(r"\s+", "", a) == re.sub(r"\s+", "", b):
        return True
    x, y = parse_number(a), parse_number(b)
    if x is not None and y is not None:
        return x == y
    return None


def match_many(
    preds: Sequence[Optional[str]], refs: Sequence[str], timeout: float = 5.0
) -> tuple[list[bool], int]:
    """``answers_match`` over pairs; returns (results, number of math-verify timeouts)."""
    results: list[Optional[bool]] = [fast_match(p, r) for p, r in zip(preds, refs)]
    todo = [i for i, r in enumerate(results) if r is None]
    timeouts = 0
    if todo:
        pairs = [(clean(preds[i]), clean(str(refs[i]))) for i in todo]
        slow, timeouts = symbolic.check_many(pairs, timeout)
        for i, ok in zip(todo, slow):
            results[i] = ok
    return [bool(r) for r in results], timeouts


def answers_match(pred: Optional[str], ref: str, timeout: float = 5.0) -> bool:
    """Is ``pred`` the same answer as ``ref``? A math-verify timeout counts as False."""
    return match_many([pred], [ref], timeout)[0][0]


@dataclass
class MathVerifier(Verifier):
    """extract_answer(completion) compared with row["answer"] by ``answers_match``."""

    timeout: float = 5.0
    total_timeouts: int = field(default=0, init=False)
    name = "math"

    def __call__(self, completions: Sequence[str], rows: Sequence[dict]) -> VerifyResult:
        self._check_lengths(completions, rows)
        extracted = [extract_answer(c) for c in completions]
        correct, timeouts = match_many(extracted, [str(r["answer"]) for r in rows], self.timeout)
        self.total_timeouts += timeouts
        return VerifyResult(correct=correct, extracted=extracted, timeouts=timeouts)
