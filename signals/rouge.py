"""ROUGE-N and ROUGE-L F1 (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries"), pure Python.

Used by the open-ended evaluation (ROUGE-L F1 against the reference) and by the ``rouge`` reward source (DRO
v1 §5's ROUGE-1 F1 baseline reward).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import List, Sequence

__all__ = ["rouge_tokens", "lcs_length", "rouge_l_f1", "rouge_n_f1"]


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> List[str]:
    """Word tokens as the ``rouge-score`` package's default tokenizer makes them, without stemming.

    Lowercase, replace every run of characters outside ``[a-z0-9]`` by a space, split on whitespace.
    So punctuation separates words ("mat." -> "mat", "e-mail" -> "e", "mail") and non-ASCII letters are
    dropped ("café" -> "caf"), exactly as ``rouge_score.tokenize.tokenize(text, stemmer=None)`` does.
    No Porter stemming (rouge-score's ``use_stemmer=True``): "cats" and "cat" are different tokens.
    """
    return _NON_ALNUM.sub(" ", text.lower()).split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (dynamic programming, O(|a|·|b|)
    time, O(|b|) memory)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f1(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of ``candidate`` against ``reference`` (Lin 2004, §3.1, sentence level, β = 1).

    With ``c = rouge_tokens(candidate)``, ``r = rouge_tokens(reference)`` and ``L = LCS(c, r)``:
    ``P = L/|c|``, ``R = L/|r|``, ``F1 = 2PR/(P+R)`` (= ``2L/(|c|+|r|)``); 0.0 when either side has no
    token or ``L = 0``. Matches ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)``'s
    ``fmeasure`` (the whole text is one sequence: ``rougeL``, not the summary-level ``rougeLsum``).
    Example: "the cat sat on the mat" vs "the cat is on the mat": L = 5 ("the cat on the mat"),
    P = R = 5/6, F1 = 5/6.
    """
    c, r = rouge_tokens(candidate), rouge_tokens(reference)
    if not c or not r:
        return 0.0
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


def rouge_n_f1(candidate: str, reference: str, n: int = 1) -> float:
    """ROUGE-N F1: clipped n-gram overlap ``m`` of ``rouge_tokens`` (Lin 2004 §2), ``P = m/#cand n-grams``,
    ``R = m/#ref n-grams``, ``F1 = 2PR/(P+R)``; 0.0 when either side has no n-gram or nothing overlaps.
    Example (n = 1): "the cat sat" vs "the cat the mat": m = 2 ("the", "cat"), P = 2/3, R = 2/4, F1 = 4/7."""
    if n < 1:
        raise ValueError(f"ROUGE-N needs n >= 1, got {n}")
    c, r = rouge_tokens(candidate), rouge_tokens(reference)
    grams_c = Counter(tuple(c[i:i + n]) for i in range(len(c) - n + 1))
    grams_r = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
    overlap = sum((grams_c & grams_r).values())
    if overlap == 0:
        return 0.0
    p, rec = overlap / sum(grams_c.values()), overlap / sum(grams_r.values())
    return 2 * p * rec / (p + rec)
