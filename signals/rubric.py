"""Rubric checks: boolean checks on each rollout's final answer / response, shared by the rubric gate
(:mod:`drox.gates.rubric`, ``+gate=rubric``) and the rubric reward (:mod:`drox.rewards.rubric`, ``+reward=rubric``),
so the two uses score exactly the same checks (docs/gates.md).

Checks (``checks:`` entries): built-ins ``answer_present``, ``format_valid``, ``length``, ``no_repeat_ngram``,
``regex``, or ``"module:function"`` / ``"file.py:function"`` naming a callable ``fn(text: str, row: dict) -> bool``
(``row``: the dataset row of the rollout's prompt). :class:`RubricChecks` holds their options; the gate adds
``on_fail``, the reward ``weight`` and ``score``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Literal, Optional, Sequence

import torch

from drox.plugins import load_callable

# The verifier's own box scanner (balanced braces, unclosed boxes ignored, empty boxes skipped) and answer
# extraction, so "has a final answer" means exactly what the outcome verifier would extract.
from drox.tasks.verify import _last_boxed, extract_answer

BUILTIN_CHECKS = ("answer_present", "format_valid", "length", "no_repeat_ngram", "regex")


@dataclass
class RubricChecks:
    checks: List[str] = field(default_factory=lambda: ["answer_present", "format_valid"])
    """Built-in names and/or ``module:function`` paths; a rollout passes when every check passes."""
    format_pattern: Optional[str] = None
    """format_valid: null = a non-empty balanced ``\\boxed{...}``; else a regex whose first group must match
    non-blank text (same rule as ``+reward=format``)."""
    min_tokens: Optional[int] = None
    """length: fail when the completion has fewer tokens (EOS counted, as in ``RolloutBatch.lengths``)."""
    max_tokens: Optional[int] = None
    """length: fail when the completion has more tokens."""
    ngram_n: int = 4
    """no_repeat_ngram: n."""
    ngram_unit: Literal["tokens", "words"] = "tokens"
    """no_repeat_ngram: tokens (the response's token ids) | words (whitespace-split text)."""
    max_repeats: int = 8
    """no_repeat_ngram: fail when some n-gram occurs more than this many times (1 = no n-gram may repeat)."""
    regex: Optional[str] = None
    """regex: pattern searched (``re.search``, DOTALL) in the target; anchor with ^...$ for a full match."""
    regex_on: Literal["answer", "response"] = "answer"
    """regex: answer (the extracted final answer; no answer = fail) | response (the whole completion)."""

    _option: ClassVar[str] = "rubric"  # where these options live, for error messages (gate.rubric, reward.rubric)

    def __post_init__(self):
        # validate eagerly so a bad option fails at config time, not at the first checked step
        if isinstance(self.checks, str):
            self.checks = [self.checks]
        self.checks = [str(c) for c in self.checks]
        if not self.checks:
            raise ValueError(f"{self._option}.checks is empty; list at least one check")
        for c in self.checks:
            if ":" in c:
                resolve_callable(c, self._option)
            elif c not in BUILTIN_CHECKS:
                raise ValueError(f"{self._option}: unknown check {c!r}; built in: {', '.join(BUILTIN_CHECKS)}, "
                                 "or a 'module:function' path")
        if self.format_pattern is not None:
            _compile(f"{self._option}.format_pattern", self.format_pattern, need_group=True)
        if "length" in self.checks and self.min_tokens is None and self.max_tokens is None:
            raise ValueError(f"{self._option}: check 'length' needs min_tokens and/or max_tokens")
        if self.ngram_n < 1 or self.max_repeats < 1:
            raise ValueError(f"{self._option}: need ngram_n >= 1 and max_repeats >= 1, got {self.ngram_n}, "
                             f"{self.max_repeats}")
        if self.ngram_unit not in ("tokens", "words"):
            raise ValueError(f"{self._option}.ngram_unit must be tokens or words, got {self.ngram_unit!r}")
        if self.regex_on not in ("answer", "response"):
            raise ValueError(f"{self._option}.regex_on must be answer or response, got {self.regex_on!r}")
        if "regex" in self.checks and not self.regex:
            raise ValueError(f"{self._option}: check 'regex' needs {self._option}.regex")
        if self.regex:
            _compile(f"{self._option}.regex", self.regex)


def _compile(option: str, pattern: str, need_group: bool = False) -> re.Pattern:
    try:
        rx = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise ValueError(f"{option}: bad regex {pattern!r}: {e}") from None
    if need_group and rx.groups < 1:
        raise ValueError(f"{option} needs a capture group: {pattern!r}")
    return rx


def resolve_callable(path: str, option: str = "gate.rubric") -> Callable[[str, Dict[str, Any]], Any]:
    """``"pkg.module:func"`` or ``"file.py:func"`` -> the callable (drox.plugins' loader); one-line error otherwise."""
    return load_callable(path, f"{option}.checks")


# ------------------------------------------------------------------------------------------------ built-ins


def has_container(text: str, pattern: Optional[str] = None) -> bool:
    """Does ``text`` hold a non-empty final-answer container (``\\boxed{}`` by default)? (``format_valid``; the
    ``+reward=format`` test.)"""
    if pattern is None:
        return _last_boxed(text or "") is not None
    return any(m.group(1).strip() for m in re.finditer(pattern, text or "", re.DOTALL))


def max_ngram_count(units: Sequence[Any], n: int) -> int:
    """Occurrences of the most frequent n-gram of ``units`` (0 when there are fewer than n units)."""
    if len(units) < n:
        return 0
    counts = Counter(tuple(units[i:i + n]) for i in range(len(units) - n + 1))
    return max(counts.values())


def run_checks(
    texts: Sequence[str],
    rows: Sequence[Dict[str, Any]],
    lengths: Sequence[int],
    token_ids: Sequence[Sequence[int]],
    opts: RubricChecks,
) -> Dict[str, List[bool]]:
    """Every configured check over N rollouts -> ``{check name: N bools}`` (True = passes), in config order.

    ``texts``: decoded completions; ``rows``: the prompt's dataset row per rollout; ``lengths``: completion
    tokens (EOS counted); ``token_ids``: each completion's token ids without padding.
    """
    answers = [extract_answer(t) for t in texts]  # the verifiers' own extraction (tasks/verify.py)
    rx = re.compile(opts.regex, re.DOTALL) if opts.regex else None
    out: Dict[str, List[bool]] = {}
    for check in opts.checks:
        if check == "answer_present":
            res = [a is not None for a in answers]
        elif check == "format_valid":
            res = [has_container(t, opts.format_pattern) for t in texts]
        elif check == "length":
            lo = opts.min_tokens if opts.min_tokens is not None else 0
            hi = opts.max_tokens if opts.max_tokens is not None else float("inf")
            res = [lo <= int(n) <= hi for n in lengths]
        elif check == "no_repeat_ngram":
            units = token_ids if opts.ngram_unit == "tokens" else [(t or "").split() for t in texts]
            res = [max_ngram_count(list(u), opts.ngram_n) <= opts.max_repeats for u in units]
        elif check == "regex":
            targets = answers if opts.regex_on == "answer" else texts
            res = [t is not None and rx.search(t) is not None for t in targets]
        else:
            fn = resolve_callable(check, opts._option)
            res = []
            for i, (t, r) in enumerate(zip(texts, rows)):
                try:
                    res.append(bool(fn(t, r)))
                except Exception as e:
                    raise RuntimeError(f"{opts._option}: check {check!r} raised on rollout {i}: "
                                       f"{type(e).__name__}: {e}") from e
        out[check] = res
    return out


def check_batch(ctx, opts: RubricChecks) -> Dict[str, List[bool]]:
    """:func:`run_checks` over ``ctx.batch``'s N rollouts (token ids unpadded only when a check reads them)."""
    batch = ctx.batch
    mask = batch.response_mask.bool()
    token_ids = [batch.response_ids[i][mask[i]].tolist() for i in range(batch.num_rows)] \
        if "no_repeat_ngram" in opts.checks and opts.ngram_unit == "tokens" else [[]] * batch.num_rows
    return run_checks(batch.texts, ctx.expanded_rows, batch.lengths.tolist(), token_ids, opts)


def rubric_vs_correct(passed: torch.Tensor, ctx) -> Dict[str, float]:
    """``passed [N]`` bool -> ``pass_rate`` and, on a task with a verifier, ``pass_incorrect``: the share of the
    N rollouts that satisfy the rubric without solving the task (what a rubric reward can be hacked into)."""
    stats = {"pass_rate": passed.float().mean().item()}
    if getattr(ctx.task, "verifier", None) is not None:
        correct = torch.tensor([bool(c) for c in ctx.verify().correct], dtype=torch.bool)
        stats["pass_incorrect"] = (passed & ~correct).float().mean().item()
    return stats
