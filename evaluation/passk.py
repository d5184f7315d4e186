"""pass@k and maj@k scoring of sampled completions.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code",
arXiv 2107.03374, §2.1 Eq. 1): draw n >= k samples per problem, count the c correct ones, and average
``1 - C(n-c, k) / C(n, k)`` over problems. ``1 - (1 - c/n)^k`` is *not* used: it is biased (Codex §2.1).

maj@k (majority voting / self-consistency) is the expected correctness of the most frequent extracted
answer among k of the n samples.

Everything here is a pure function: no I/O, no global random state.
"""

from __future__ import annotations

import operator
import zlib
from collections.abc import Iterable, Mapping, Sequence

import itertools
import math

import numpy as np
import pandas as pd

__all__ = ["pass_at_k", "majority_at_k", "summarize", "crossover_k"]


def _as_int(value, name: str) -> int:
    # operator.index accepts int and numpy integers but rejects floats (3.0) and strings, so a k of 2.5
    # cannot silently truncate. bool is an int subclass; it is never a meaningful count, so reject it too.
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _check_k_vs_n(n: int, k: int) -> None:
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if k > n:
        raise ValueError(f"pass@k with k={k} needs n >= {k} samples per problem, got n={n}; raise --n")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``c`` correct out of ``n`` samples (Chen et al. 2021, Eq. 1).

    Computes ``1 - C(n-c, k) / C(n, k)`` in the numerically stable product form of Codex Fig. 3,
    ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``: the binomials overflow floats for n in the hundreds, the
    product of c factors in (0, 1) does not.
    """
    n, c, k = _as_int(n, "n"), _as_int(c, "c"), _as_int(k, "k")
    if n < 1:
        raise ValueError(f"pass@k needs n >= 1 samples, got n={n}")
    _check_k_vs_n(n, k)
    if c < 0 or c > n:
        raise ValueError(f"number of correct samples must satisfy 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        # Fewer than k wrong samples: every k-subset contains a correct one (and C(n-c, k) = 0).
        return 1.0
    # The factor for i = n-c+1 .. n; c == 0 gives an empty product (1.0), hence pass@k = 0.
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def majority_at_k(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    k: int,
    n_resamples: int = 200,
    seed: int = 0,
) -> float:
    """Expected correctness of a majority vote over k of the n samples of one problem (maj@k).

    ``answers[j]`` is the extracted answer of sample j (None when extraction failed) and ``correct[j]``
    its grade. Votes are by exact string equality, so normalise answers before calling. Rules:

    * None never wins a vote; if all k drawn samples are None the vote is wrong (0).
    * An answer's correctness is the fraction of this problem's samples carrying it that were graded
      correct (0 or 1 whenever the grader is a function of the answer, as it should be).
    * Ties between top answers split the credit: the vote scores the mean correctness of the tied answers.

    Estimation choice: the exact expectation is the mean over all C(n, k) subsets; it is computed
    exactly whenever C(n, k) <= ``n_resamples`` (k == n, k == 1, small n: then maj@1 == pass@1), and
    otherwise (e.g. n=64, k=16) estimated as the mean over ``n_resamples`` subsets drawn without
    replacement by ``numpy.random.default_rng(seed)``; the same inputs and seed give the same value.
    """
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"answers and correct must have the same length, got {n} and {len(correct)}")
    if n == 0:
        raise ValueError("maj@k needs at least one sample")
    k = _as_int(k, "k")
    _check_k_vs_n(n, k)
    n_resamples = _as_int(n_resamples, "n_resamples")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")

    # Encode answers as small integers (None -> -1) so that voting is array arithmetic.
    ids: dict[str, int] = {}
    codes = np.empty(n, dtype=np.int64)
    for j, a in enumerate(answers):
        codes[j] = -1 if a is None else ids.setdefault(a, len(ids))
    m = len(ids)
    if m == 0:
        return 0.0  # no sample produced an answer: every vote is wrong
    graded = np.asarray([bool(x) for x in correct], dtype=np.float64)
    has_answer = codes >= 0
    per_answer_correct = np.bincount(codes[has_answer], weights=graded[has_answer], minlength=m) / np.bincount(
        codes[has_answer], minlength=m
    )

    if math.comb(n, k) <= n_resamples:  # every subset, once: exact
        subsets = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    else:
        rng = np.random.default_rng(seed)
        # Each row is an independent uniformly random permutation; its first k entries are a uniform
        # k-subset drawn without replacement.
        subsets = rng.permuted(np.tile(np.arange(n), (n_resamples, 1)), axis=1)[:, :k]

    sub_codes = codes[subsets]  # (R, k)
    rows = np.repeat(np.arange(sub_codes.shape[0]), k)
    flat = sub_codes.ravel()
    keep = flat >= 0
    counts = np.zeros((sub_codes.shape[0], m), dtype=np.int64)
    np.add.at(counts, (rows[keep], flat[keep]), 1)

    top = counts.max(axis=1, keepdims=True)
    tied = (counts == top) & (top > 0)  # rows that drew only None have no winner
    n_tied = tied.sum(axis=1)
    credit = np.where(n_tied > 0, (tied * per_answer_correct).sum(axis=1) / np.maximum(n_tied, 1), 0.0)
    return float(credit.mean())


def _problem_seed(problem_id) -> int:
    # A stable per-problem seed: maj@k of a problem must not depend on where it sits in the file, and
    # Python's hash() of str is salted per process.
    return zlib.crc32(str(problem_id).encode("utf-8"))


def summarize(
    records: Iterable[Mapping], ks: Iterable[int], with_maj: bool = True
) -> tuple[dict, pd.DataFrame]:
    """Score samples: mean pass@k (Chen et al. 2021, Eq. 1) and maj@k over problems.

    ``records`` are dicts with ``problem_id``, ``correct`` (bool) and optionally ``answer`` (str or
    None). maj@k is computed when ``with_maj`` and at least one record carries an ``answer`` key
    (records without it count as None). Problems may have different n, but every problem needs
    n >= max(ks).

    Returns ``(summary, per_problem)``: summary is ``{"pass@k": ..., "maj@k": ..., "n": n,
    "num_problems": P}`` with n the common sample count (the smallest when they differ); per_problem
    has one row per problem (in order of first appearance) with columns problem_id, n, c, pass@k...,
    maj@k....
    """
    ks = sorted({_as_int(k, "k") for k in ks})
    if not ks:
        raise ValueError("no k values given")
    if ks[0] < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={ks[0]}")

    # dicts keep insertion order, which is the order of first appearance.
    groups: dict[object, tuple[list[bool], list[str | None]]] = {}
    any_answer = False
    for idx, rec in enumerate(records):
        for field in ("problem_id", "correct"):
            if field not in rec:
                raise ValueError(f"sample {idx}: missing field {field!r}")
        ok = rec["correct"]
        if not isinstance(ok, (bool, np.bool_)):
            raise ValueError(f"sample {idx}: field 'correct' must be true/false, got {ok!r}")
        if "answer" in rec:
            any_answer = True
        flags, answers = groups.setdefault(rec["problem_id"], ([], []))
        flags.append(bool(ok))
        answers.append(rec.get("answer"))
    if not groups:
        raise ValueError("no samples to score")

    do_maj = with_maj and any_answer
    kmax = ks[-1]
    ns = {pid: len(flags) for pid, (flags, _) in groups.items()}
    n_min = min(ns.values())
    if n_min < kmax:
        if len(set(ns.values())) == 1:
            _check_k_vs_n(n_min, kmax)  # the uniform case gets the "raise --n" message
        short = next(pid for pid, n in ns.items() if n < kmax)
        raise ValueError(
            f"problem {short!r} has n={ns[short]} samples but pass@k with k={kmax} needs n >= {kmax} "
            "for every problem; raise --n or drop the larger k"
        )

    rows = []
    for pid, (flags, answers) in groups.items():
        n, c = len(flags), sum(flags)
        row = {"problem_id": pid, "n": n, "c": c}
        for k in ks:
            row[f"pass@{k}"] = pass_at_k(n, c, k)
        if do_maj:
            seed = _problem_seed(pid)
            for k in ks:
                row[f"maj@{k}"] = majority_at_k(answers, flags, k, seed=seed)
        rows.append(row)
    per_problem = pd.DataFrame(rows)

    summary: dict = {f"pass@{k}": float(per_problem[f"pass@{k}"].mean()) for k in ks}
    if do_maj:
        summary.update({f"maj@{k}": float(per_problem[f"maj@{k}"].mean()) for k in ks})
    summary["n"] = int(n_min)
    summary["num_problems"] = len(groups)
    return summary, per_problem



def crossover_k(base: Mapping[int, float], trained: Mapping[int, float]) -> int | None:
    """The k from which the base policy's pass@k stays at or above the trained policy's (Yue et al. 2025,
    arXiv 2504.13837 §3: RL wins at small k, the base catches up and overtakes as k grows).

    ``base`` and ``trained`` map k -> pass@k on the same problems. Returns the smallest evaluated k such that
    ``base[j] >= trained[j]`` for every evaluated j >= k, or None when the trained curve is above the base at
    the largest k (no crossover up to k = n). When the base is never below the trained policy, this is the
    smallest k (the trained policy never led).
    """
    ks = sorted(set(base) & set(trained))
    if not ks:
        raise ValueError("crossover_k needs pass@k of both policies at some common k")
    crossing = None
    for k in reversed(ks):
        if base[k] >= trained[k]:
            crossing = k
        else:
            break
    return crossing
