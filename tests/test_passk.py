"""pass@k / maj@k scoring and report files, checked against values worked out by hand.

The reference for pass@k is Chen et al. 2021 (arXiv 2107.03374) §2.1 Eq. 1: 1 - C(n-c, k) / C(n, k),
computed here exactly with integers so the float product form is checked against ground truth.
"""

from __future__ import annotations

import json
from fractions import Fraction
from math import comb

import pandas as pd
import pytest

from drox.evaluation.passk import majority_at_k, pass_at_k, summarize
from drox.evaluation.report import format_table, load_samples_jsonl, write_eval_outputs


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


# ---------------------------------------------------------------- pass@k


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (4, 1, 1, 0.25),  # c/n for k=1
        (4, 2, 2, 1 - 1 / 6),  # only {wrong, wrong} of the 6 pairs fails
        (5, 0, 3, 0.0),
        (5, 5, 3, 1.0),
        (5, 3, 3, 1.0),  # only 2 wrong samples: every 3-subset has a correct one
        (4, 1, 4, 1.0),  # k == n, c > 0
        (4, 0, 4, 0.0),  # k == n, c == 0
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_exact_binomial_form():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), abs=1e-12), (n, c, k)


def test_pass_at_k_is_not_the_biased_estimator():
    # 1 - (1 - c/n)^k would give 1 - 0.75^2 = 0.4375 here; the unbiased value is 1 - C(3,2)/C(4,2) = 0.5.
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)


@pytest.mark.parametrize("n,c,k", [(1000, 3, 500), (10000, 1, 9999), (200, 7, 100), (1024, 50, 1)])
def test_pass_at_k_large_n_is_finite_and_exact(n, c, k):
    got = pass_at_k(n, c, k)
    want = float(exact_pass_at_k(n, c, k))  # integer binomials, no overflow
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_pass_at_k_large_n_known_values():
    # 1 - C(9999, 9999)/C(10000, 9999) = 1 - 1/10000
    assert pass_at_k(10000, 1, 9999) == pytest.approx(0.9999, rel=1e-12)
    # 1 - (500*499*498)/(1000*999*998)
    assert pass_at_k(1000, 3, 500) == pytest.approx(1 - (500 * 499 * 498) / (1000 * 999 * 998), rel=1e-12)


def test_pass_at_k_k_greater_than_n_message():
    with pytest.raises(ValueError) as err:
        pass_at_k(8, 2, 64)
    assert str(err.value) == "pass@k with k=64 needs n >= 64 samples per problem, got n=8; raise --n"


@pytest.mark.parametrize("n,c,k", [(4, 1, 0), (4, 1, -1), (4, 5, 1), (4, -1, 1), (0, 0, 1)])
def test_pass_at_k_invalid_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_at_k_rejects_non_integer_k():
    with pytest.raises(ValueError, match="integer"):
        pass_at_k(4, 1, 2.5)


# ---------------------------------------------------------------- maj@k


def test_majority_exact_when_k_equals_n():
    # "3" has two votes, "5" one, None never votes: the majority is "3", which is correct.
    answers = ["3", "3", "5", None]
    correct = [True, True, False, False]
    assert majority_at_k(answers, correct, 4) == 1.0
    # Same group but "5" is the right answer: the vote picks "3" and is wrong.
    assert majority_at_k(answers, [False, False, True, False], 4) == 0.0


def test_majority_none_does_not_win_even_when_most_frequent():
    # Three Nones outnumber the single "7", but None never wins: the vote is "7", correct.
    assert majority_at_k([None, None, None, "7"], [False, False, False, True], 4) == 1.0


def test_majority_all_none_is_wrong():
    assert majority_at_k([None, None, None], [False, False, False], 3) == 0.0
    assert majority_at_k([None, None, None], [False, False, False], 2) == 0.0


def test_majority_tie_splits_credit():
    # "3" and "5" tie at one vote each; one of the two tied answers is correct -> 1/2.
    assert majority_at_k(["3", "5", None, None], [True, False, False, False], 4) == pytest.approx(0.5)
    # Three-way tie with one correct answer -> 1/3.
    assert majority_at_k(["1", "2", "3"], [False, True, False], 3) == pytest.approx(1 / 3)


def test_majority_k1_resampled_close_to_fraction_correct():
    # maj@1 is the probability that a single drawn sample has a correct answer: 2/4 here.
    answers, correct = ["3", "3", "5", None], [True, True, False, False]
    assert majority_at_k(answers, correct, 1, n_resamples=4000, seed=1) == pytest.approx(0.5, abs=0.04)


def test_majority_resampling_is_deterministic_given_seed():
    answers = ["3", "3", "5", "5", "5", None, "3", "8"]
    correct = [a == "3" for a in answers]
    a = majority_at_k(answers, correct, 3, n_resamples=200, seed=123)
    b = majority_at_k(answers, correct, 3, n_resamples=200, seed=123)
    assert a == b
    # The exact value is a finite sum over C(8,3) = 56 subsets; the estimate must be near it.
    from itertools import combinations

    def vote(idx):
        counts = {}
        for i in idx:
            if answers[i] is not None:
                counts[answers[i]] = counts.get(answers[i], 0) + 1
        if not counts:
            return 0.0
        top = max(counts.values())
        tied = [x for x, v in counts.items() if v == top]
        return sum(x == "3" for x in tied) / len(tied)

    exact = sum(vote(s) for s in combinations(range(8), 3)) / comb(8, 3)
    assert majority_at_k(answers, correct, 3, n_resamples=20000, seed=0) == pytest.approx(exact, abs=0.015)


def test_majority_errors():
    with pytest.raises(ValueError, match="same length"):
        majority_at_k(["1", "2"], [True], 1)
    with pytest.raises(ValueError, match="k=3 needs n >= 3"):
        majority_at_k(["1", "2"], [True, False], 3)


# ---------------------------------------------------------------- summarize


def _records():
    # p1: 1 of 4 correct; answers "3" x2 (wrong), "4" x1 (right), None.
    # p2: 3 of 4 correct; answers "10" x3 (right), "11".
    p1 = [("3", False), ("3", False), ("4", True), (None, False)]
    p2 = [("10", True), ("11", False), ("10", True), ("10", True)]
    recs = [{"problem_id": "p1", "answer": a, "correct": c} for a, c in p1]
    recs += [{"problem_id": "p2", "answer": a, "correct": c} for a, c in p2]
    # Interleave to check grouping is by id, not by position.
    return [recs[0], recs[4], recs[1], recs[5], recs[2], recs[6], recs[3], recs[7]]


def test_summarize_hand_values():
    summary, per = summarize(_records(), ks=[4, 1, 2])
    # pass@1: (1/4 + 3/4)/2 = 0.5
    # pass@2: p1 1 - C(3,2)/C(4,2) = 1/2; p2 1 - C(1,2)/C(4,2) = 1 -> 0.75
    # pass@4: p1 1, p2 1 -> 1
    # maj@4 (exact): p1 majority "3" wrong -> 0; p2 majority "10" right -> 1 -> 0.5
    assert summary["pass@1"] == pytest.approx(0.5)
    assert summary["pass@2"] == pytest.approx(0.75)
    assert summary["pass@4"] == pytest.approx(1.0)
    assert summary["maj@4"] == pytest.approx(0.5)
    assert summary["n"] == 4 and isinstance(summary["n"], int)
    assert summary["num_problems"] == 2
    assert list(summary) == ["pass@1", "pass@2", "pass@4", "maj@1", "maj@2", "maj@4", "n", "num_problems"]

    assert list(per["problem_id"]) == ["p1", "p2"]  # order of first appearance
    assert list(per.columns) == ["problem_id", "n", "c", "pass@1", "pass@2", "pass@4", "maj@1", "maj@2", "maj@4"]
    assert list(per["c"]) == [1, 3]
    assert list(per["n"]) == [4, 4]
    assert per["pass@2"].tolist() == pytest.approx([0.5, 1.0])


def test_summarize_is_deterministic_and_position_independent():
    recs = _records()
    s1, _ = summarize(recs, ks=[1, 2])
    assert summarize(recs, ks=[1, 2])[0] == s1
    # maj@k resampling is seeded per problem id, so moving a whole problem elsewhere in the file (keeping
    # its samples' order) changes nothing.
    p1 = [r for r in recs if r["problem_id"] == "p1"]
    p2 = [r for r in recs if r["problem_id"] == "p2"]
    s2, per2 = summarize(p2 + p1, ks=[1, 2])
    assert s2 == s1
    assert list(per2["problem_id"]) == ["p2", "p1"]


def test_summarize_without_answers_has_no_maj():
    recs = [{"problem_id": r["problem_id"], "correct": r["correct"]} for r in _records()]
    summary, per = summarize(recs, ks=[1, 4])
    assert not any(key.startswith("maj@") for key in summary)
    assert list(per.columns) == ["problem_id", "n", "c", "pass@1", "pass@4"]
    summary2, _ = summarize(_records(), ks=[1, 4], with_maj=False)
    assert not any(key.startswith("maj@") for key in summary2)


def test_summarize_unequal_n():
    recs = [{"problem_id": "a", "correct": True}] * 4 + [{"problem_id": "b", "correct": False}] * 2
    # Different n is allowed while every problem has n >= max(ks); n reported is the smallest.
    summary, per = summarize(recs, ks=[1, 2])
    assert summary["n"] == 2
    assert list(per["n"]) == [4, 2]
    assert summary["pass@1"] == pytest.approx(0.5)
    # k=4 is more than problem b's 2 samples: the error names the problem.
    with pytest.raises(ValueError, match=r"problem 'b' has n=2 samples.*k=4"):
        summarize(recs, ks=[1, 4])


def test_summarize_uniform_n_too_small():
    recs = [{"problem_id": "a", "correct": True}] * 8
    with pytest.raises(ValueError, match=r"k=64 needs n >= 64 samples per problem, got n=8; raise --n"):
        summarize(recs, ks=[1, 64])


def test_summarize_empty():
    with pytest.raises(ValueError, match="no samples to score"):
        summarize([], ks=[1])
    with pytest.raises(ValueError, match="no samples to score"):
        summarize(iter(()), ks=[1])


def test_summarize_bad_correct_type():
    with pytest.raises(ValueError, match="'correct' must be true/false"):
        summarize([{"problem_id": "a", "correct": "yes"}], ks=[1])


# ---------------------------------------------------------------- report files


def test_write_eval_outputs_round_trip(tmp_path):
    summary, per = summarize(_records(), ks=[1, 2, 4])
    out = tmp_path / "eval" / "step_10"  # created, parents included
    paths = write_eval_outputs(out, summary, per, ks=[1, 2, 4], title="tiny")
    assert set(paths) == {"summary", "per_problem", "plot"}
    assert {p.name for p in paths.values()} == {"summary.json", "per_problem.csv", "passk.png"}
    # Nothing else is left behind (no temp files).
    assert sorted(p.name for p in out.iterdir()) == ["passk.png", "per_problem.csv", "summary.json"]

    loaded = json.loads(paths["summary"].read_text())
    assert loaded == summary
    assert list(loaded) == list(summary)  # key order preserved

    csv = pd.read_csv(paths["per_problem"])
    assert list(csv.columns) == list(per.columns)
    assert csv["pass@2"].tolist() == pytest.approx(per["pass@2"].tolist())

    png = paths["plot"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000

    # Rewriting over existing files works (os.replace onto an existing name).
    write_eval_outputs(out, summary, per, ks=[1, 2, 4])
    assert json.loads(paths["summary"].read_text()) == summary


def test_write_eval_outputs_pass_only(tmp_path):
    summary, per = summarize(_records(), ks=[4], with_maj=False)
    paths = write_eval_outputs(tmp_path, summary, per, ks=[4])
    assert paths["plot"].stat().st_size > 0


def _write(tmp_path, text, name="samples.jsonl"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_samples_jsonl_ok(tmp_path):
    p = _write(
        tmp_path,
        '{"problem_id": 7, "correct": true, "answer": "3"}\n'
        "\n"
        '{"problem_id": "7", "correct": false, "answer": null, "text": "..."}\n'
        '{"problem_id": "q2", "correct": false, "answer": 42}\n',
    )
    samples = load_samples_jsonl(p)
    assert [s["problem_id"] for s in samples] == ["7", "7", "q2"]
    assert [s["correct"] for s in samples] == [True, False, False]
    assert [s["answer"] for s in samples] == ["3", None, "42"]
    assert samples[1]["text"] == "..."
    # Loaded samples feed straight into summarize (int and str ids 7 and "7" are one problem).
    summary, _ = summarize(samples[:2], ks=[1])
    assert summary["num_problems"] == 1


def test_load_samples_jsonl_bad_json(tmp_path):
    p = _write(tmp_path, '{"problem_id": 1, "correct": true}\n{"problem_id": 1, "correct": tru\n')
    with pytest.raises(ValueError) as err:
        load_samples_jsonl(p)
    assert str(err.value) == f"{p} line 2: not valid JSON"


def test_load_samples_jsonl_missing_field(tmp_path):
    p = _write(tmp_path, '{"problem_id": 1, "correct": true}\n\n{"problem_id": 1}\n')
    with pytest.raises(ValueError) as err:
        load_samples_jsonl(p)
    assert str(err.value) == f"{p} line 3: missing field 'correct'"


def test_load_samples_jsonl_bad_bool(tmp_path):
    p = _write(tmp_path, '{"problem_id": 1, "correct": "yes"}\n')
    with pytest.raises(ValueError) as err:
        load_samples_jsonl(p)
    assert str(err.value) == f"{p} line 1: field 'correct' must be true/false, got 'yes'"
    p2 = _write(tmp_path, '{"problem_id": 1, "correct": 1}\n', name="ints.jsonl")
    with pytest.raises(ValueError, match="line 1: field 'correct' must be true/false, got 1"):
        load_samples_jsonl(p2)


def test_load_samples_jsonl_empty_and_missing(tmp_path):
    p = _write(tmp_path, "\n  \n")
    with pytest.raises(ValueError) as err:
        load_samples_jsonl(p)
    assert str(err.value) == f"{p}: no samples"
    with pytest.raises(ValueError, match="no such file"):
        load_samples_jsonl(tmp_path / "absent.jsonl")


def test_format_table_renders(tmp_path):
    from rich.console import Console

    summary, _ = summarize(_records(), ks=[1, 4])
    console = Console(record=True, width=80)
    console.print(format_table(summary, [1, 4]))
    text = console.export_text()
    assert "pass@k" in text and "maj@k" in text
    assert "0.5000" in text and "1.0000" in text
    assert "n=4" in text

    summary2, _ = summarize(_records(), ks=[1], with_maj=False)
    console = Console(record=True, width=80)
    console.print(format_table(summary2, [1]))
    assert "maj@k" not in console.export_text()


def test_majority_is_exact_when_all_subsets_fit_in_the_budget():
    # maj@1 of a problem is the fraction of samples whose answer is correct, exactly (= pass@1)
    answers = ["3", "5", "3", None, "7", "3", "5", "3"]
    correct = [a == "3" for a in answers]
    assert majority_at_k(answers, correct, 1) == 4 / 8 == pytest.approx(pass_at_k(8, 4, 1), abs=1e-12)
    # maj@2 by hand over the C(4,2)=6 pairs of ["3","3","5",None]: {3,3}=1, {3,5} tie=0.5 (x2),
    # {3,None}=1 (x2), {5,None}=0 -> (1 + 0.5 + 0.5 + 1 + 1 + 0) / 6
    assert majority_at_k(["3", "3", "5", None], [True, True, False, False], 2) == pytest.approx(4 / 6, abs=1e-12)
