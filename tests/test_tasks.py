"""drox.tasks: synthetic generators, file loading, answer extraction and verifiers."""

from __future__ import annotations

import ast
import json
import operator
import re
import time
from collections import Counter
from dataclasses import replace

import pytest

from drox.config import TaskConfig
from drox.tasks import (
    TASKS,
    MathVerifier,
    Task,
    TaskError,
    VerifyResult,
    answers_match,
    build_task,
    extract_answer,
)
from drox.tasks import arithmetic, hub, symbolic
from drox.tasks.verify import fast_match

SUFFIX = "\n\nPut the final answer in \\boxed{}."


def cfg(**kw) -> TaskConfig:
    base = dict(n_train=200, n_test=20)
    base.update(kw)
    return TaskConfig(**base)


def _eval(expr: str) -> int:
    """Independent evaluator for the tests: Python precedence over an ast of + - * ints."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}

    def walk(node):
        if isinstance(node, ast.Constant):
            return node.value
        assert isinstance(node, ast.BinOp), ast.dump(node)
        return ops[type(node.op)](walk(node.left), walk(node.right))

    return walk(ast.parse(expr, mode="eval").body)


# ------------------------------------------------------------------ synthetic tasks

SYNTHETIC = [
    dict(name="arithmetic"),
    dict(name="arithmetic", digits=2, n_ops=3, ops=["+", "-", "*"]),
    dict(name="countdown"),
    dict(name="revise"),
]


@pytest.mark.parametrize("kw", SYNTHETIC, ids=lambda kw: f"{kw['name']}-{kw.get('n_ops', 1)}")
def test_synthetic_deterministic_and_seeded(kw):
    a = build_task(cfg(**kw), "train").dataset.to_list()
    b = build_task(cfg(**kw), "train").dataset.to_list()
    assert a == b
    c = build_task(cfg(seed=1, **kw), "train").dataset.to_list()
    assert [r["prompt"] for r in a] != [r["prompt"] for r in c]
    assert a[0]["problem_id"] == f"{kw['name']}-train-0"


@pytest.mark.parametrize("kw", SYNTHETIC, ids=lambda kw: f"{kw['name']}-{kw.get('n_ops', 1)}")
def test_synthetic_splits_disjoint_and_sized(kw):
    train = build_task(cfg(**kw), "train").dataset
    test = build_task(cfg(**kw), "test").dataset
    assert (len(train), len(test)) == (200, 20)
    assert set(train["prompt"]).isdisjoint(test["prompt"])
    assert len(set(test["prompt"])) == 20
    # The eval split does not move when only the training size changes.
    assert build_task(cfg(n_train=50, **kw), "test").dataset["prompt"] == test["prompt"]
    assert set(train.column_names) >= {"problem_id", "prompt", "answer"}


def test_tiny_problem_space_repeats_train_but_never_leaks_test():
    # 1-digit sums: 100 problems. 32 go to test, the 68 others fill 2000 training rows.
    c = TaskConfig(name="arithmetic")
    train, test = build_task(c, "train").dataset, build_task(c, "test").dataset
    assert len(train) == 2000 and len(set(train["prompt"])) == 68
    assert set(train["prompt"]).isdisjoint(test["prompt"])
    with pytest.raises(TaskError, match="only 100 distinct test problems"):
        build_task(TaskConfig(name="arithmetic", n_test=101), "test")


def test_test_exclude_ids_drops_only_those_held_out_rows():
    c = TaskConfig(name="arithmetic", n_test=6)
    full = build_task(c, "test").dataset
    kept = build_task(replace(c, test_exclude_ids=["arithmetic-test-1", "arithmetic-test-4"]), "test").dataset
    assert kept["problem_id"] == ["arithmetic-test-0", "arithmetic-test-2", "arithmetic-test-3", "arithmetic-test-5"]
    assert kept["prompt"] == [full["prompt"][i] for i in (0, 2, 3, 5)]
    # the training split still excludes all six held-out prompts, and is the same as without the option
    train = build_task(replace(c, test_exclude_ids=["arithmetic-test-1"]), "train").dataset
    assert train["prompt"] == build_task(c, "train").dataset["prompt"]
    with pytest.raises(TaskError, match="no held-out problem with id 'arithmetic-test-6'"):
        build_task(replace(c, test_exclude_ids=["arithmetic-test-6"]), "test")
    with pytest.raises(TaskError, match="drops every held-out problem"):
        build_task(replace(c, test_exclude_ids=[f"arithmetic-test-{i}" for i in range(6)]), "test")


def test_arithmetic_one_op_prompt_format():
    rows = build_task(cfg(name="arithmetic", n_train=30), "train").dataset.to_list()
    for r in rows:
        m = re.fullmatch(r"What is (\d) \+ (\d)\?" + re.escape(SUFFIX), r["prompt"])
        assert m, r["prompt"]
        assert r["answer"] == str(int(m.group(1)) + int(m.group(2)))
        assert r["steps"] == [f"{m.group(1)} + {m.group(2)} = {r['answer']}"]
    no_suffix = build_task(cfg(name="arithmetic", prompt_suffix=""), "test").dataset[0]["prompt"]
    assert re.fullmatch(r"What is \d \+ \d\?", no_suffix)


def test_arithmetic_answers_and_steps_recomputed():
    c = cfg(name="arithmetic", digits=2, n_ops=3, ops=["+", "-", "*"])
    rows = build_task(c, "train").dataset.to_list()[:40]
    for r in rows:
        expr = re.fullmatch(r"What is (.*)\?" + re.escape(SUFFIX), r["prompt"]).group(1)
        operands = [int(x) for x in re.findall(r"\d+", expr)]
        assert len(operands) == 4 and all(10 <= x <= 99 for x in operands)
        # Standard precedence on the printed text gives the reference ...
        assert _eval(expr) == int(r["answer"])
        # ... and so does chaining the listed steps left to right.
        assert len(r["steps"]) == 3
        value = operands[0]
        for step, b in zip(r["steps"], operands[1:]):
            a, op, b2, result = re.fullmatch(r"(-?\d+) ([+*-]) (\d+) = (-?\d+)", step).groups()
            assert int(a) == value and int(b2) == b
            assert int(result) == {"+": operator.add, "-": operator.sub, "*": operator.mul}[op](int(a), b)
            value = int(result)
        assert value == int(r["answer"])
        assert r["solution"].endswith(f"\\boxed{{{r['answer']}}}")


class _ScriptedRng:
    """Stands in for random.Random to pin one problem: operands then operators."""

    def __init__(self, ints, ops):
        self.ints, self.ops = list(ints), list(ops)

    def randint(self, lo, hi):
        return self.ints.pop(0)

    def choice(self, seq):
        return self.ops.pop(0)


def test_arithmetic_parenthesises_only_where_precedence_differs():
    p = arithmetic.make_problem(_ScriptedRng([3, 5, 2], ["+", "*"]), 1, 2, ["+", "*"])
    assert p["expression"] == "(3 + 5) * 2"
    assert p["steps"] == ["3 + 5 = 8", "8 * 2 = 16"]
    assert p["answer"] == "16" and p["solution"].endswith("\\boxed{16}")
    p = arithmetic.make_problem(_ScriptedRng([3, 5, 2, 4], ["*", "-", "*"]), 1, 3, ["*", "-"])
    assert p["expression"] == "(3 * 5 - 2) * 4"
    assert p["steps"] == ["3 * 5 = 15", "15 - 2 = 13", "13 * 4 = 52"]


def test_arithmetic_bad_knobs():
    with pytest.raises(TaskError, match="task.ops"):
        build_task(cfg(name="arithmetic", ops=["/"]))
    with pytest.raises(TaskError, match="task.n_ops"):
        build_task(cfg(name="arithmetic", n_ops=0))


def test_countdown_answer_reaches_target():
    c = cfg(name="countdown", n_numbers=4, max_number=20)
    rows = build_task(c, "train").dataset.to_list()[:50]
    for r in rows:
        assert len(r["numbers"]) == 4 and all(1 <= n <= 20 for n in r["numbers"])
        assert _eval(r["answer"]) == r["target"] > 0
        used = Counter(int(x) for x in re.findall(r"\d+", r["answer"]))
        assert used == Counter(r["numbers"])
        assert f"equals {r['target']}" in r["prompt"]


def test_countdown_verifier():
    task = build_task(cfg(name="countdown"), "test")
    rows = [{"numbers": [3, 5, 2], "target": 16}] * 8
    completions = [
        "so \\boxed{(3 + 5) * 2}",
        "\\boxed{2 \\times (5 + 3) = 16}",  # LaTeX times and a trailing "= 16" are fine
        "\\boxed{(3 + 5) * 2 * 1}",  # 1 is not given
        "\\boxed{(5 + 5) + 3 * 2}",  # 5 used twice
        "\\boxed{3 + 5 + 2}",  # valid expression, wrong value
        "\\boxed{__import__('os').getcwd()}",
        "\\boxed{-(3 - 5) * 8}",  # unary minus and an 8
        "I don't know",
    ]
    res = task.verifier(completions, rows)
    assert res.correct == [True, True, False, False, False, False, False, False]
    assert res.extracted[0] == "(3 + 5) * 2" and res.extracted[-1] is None
    assert res.timeouts == 0
    # the generated reference answers are accepted by the verifier
    ds = task.dataset.to_list()
    assert all(task.verifier([f"\\boxed{{{r['answer']}}}" for r in ds], ds).correct)


def test_revise_has_reference_and_no_verifier():
    task = build_task(cfg(name="revise"), "train")
    assert task.verifier is None and task.name == "revise"
    r = task.dataset[0]
    assert r["prompt"].startswith("Rewrite the following sentence more concisely:\n\n" + r["source"])
    assert r["answer"] and len(r["answer"]) < len(r["source"])


def test_registry_and_verifier_choice():
    assert set(TASKS) >= {"arithmetic", "countdown", "revise", "jsonl", "parquet", "hub"}
    with pytest.raises(TaskError, match=r"unknown task 'nope'; choose one of: arithmetic, countdown, hub, jsonl, parquet, revise, "):
        build_task(cfg(name="nope"))
    with pytest.raises(TaskError, match="unknown split"):
        build_task(cfg(name="arithmetic"), "dev")
    assert build_task(cfg(name="arithmetic", verifier="none")).verifier is None
    assert isinstance(build_task(cfg(name="countdown", verifier="math")).verifier, MathVerifier)
    assert isinstance(build_task(cfg(name="arithmetic")), Task)
    with pytest.raises(TaskError, match="task.verifier"):
        build_task(cfg(name="arithmetic", verifier="exact"))


# ------------------------------------------------------------------ extraction and matching

@pytest.mark.parametrize(
    "text, expected",
    [
        ("The sum is \\boxed{42}.", "42"),
        ("so x = \\boxed{\\frac{1}{2}} here", "\\frac{1}{2}"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("the result is -7", "-7"),
        ("about 3/4 of them", "3/4"),
        ("I think 12.5 or 13", "13"),
        ("Answer: 12\nthat is all", "12"),
        ("Steps 1 and 2.\nAnswer: x + 1", "x + 1"),
        ("no digits here", None),
        ("", None),
        ("it is 5, so \\boxed{4", "4"),  # unclosed box: falls back to the last number
        ("\\boxed{7} but then \\boxed{8", "7"),  # the last *balanced* box wins
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "pred, ref, expected",
    [
        ("0.5", "\\frac{1}{2}", True),
        ("1,000", "1000", True),
        ("-3", "3", False),
        ("$16$.", "16", True),
        ("\\dfrac{3}{4}", "0.75", True),
        ("-\\frac{1}{2}", "-0.5", True),
        ("3/4", "0.7", False),
        (None, "1", False),
    ],
)
def test_answers_match_fast_path(pred, ref, expected):
    assert fast_match(pred, ref) is expected  # decided without math-verify
    assert answers_match(pred, ref) is expected


def test_answers_match_symbolic_goes_through_worker():
    assert fast_match("\\sqrt{4}", "2") is None and fast_match("x+1", "1+x") is None
    assert answers_match("\\sqrt{4}", "2") is True
    assert answers_match("x+1", "1+x") is True
    assert answers_match("\\sqrt{5}", "2") is False
    assert symbolic._pool is not None  # the worker pool was created and is reused


def _sleep_forever(pred, ref):  # replaces the worker function in the timeout test
    time.sleep(30)
    return True


def test_math_verifier_timeout_counted_and_scored_false(monkeypatch):
    monkeypatch.setattr(symbolic, "_check", _sleep_forever)
    verifier = MathVerifier(timeout=0.3)
    rows = [{"answer": "2"}, {"answer": "16"}]
    start = time.monotonic()
    res = verifier(["\\boxed{\\sqrt{4}}", "so \\boxed{16}"], rows)
    assert time.monotonic() - start < 5
    assert res == VerifyResult(correct=[False, True], extracted=["\\sqrt{4}", "16"], timeouts=1)
    assert verifier.total_timeouts == 1
    monkeypatch.undo()
    # the killed worker was replaced: the next symbolic check works again (a generous limit: a fresh worker
    # imports math-verify first, which takes longer than 0.3 s on a loaded machine)
    assert MathVerifier(timeout=60)(["\\boxed{\\sqrt{4}}"], rows[:1]).correct == [True]


def test_a_stuck_worker_is_killed_even_when_its_pool_was_forked_during_a_run(monkeypatch):
    """A pool forked while drox's preemption handler is installed (inside a training run) must still kill an
    overrunning worker: the worker restores SIGTERM's default action, else Pool.terminate's SIGTERM would only
    print "received SIGTERM" in the worker and the parent would wait for it forever."""
    from drox.trainers.preemption import preemption_signals

    symbolic.shutdown()
    monkeypatch.setattr(symbolic, "_check", _sleep_forever)
    start = time.monotonic()
    with preemption_signals() as flag:
        assert symbolic.check_many([("\\sqrt{4}", "2")], timeout=0.3) == ([False], 1)
    assert time.monotonic() - start < 10 and flag.received is None  # the parent itself got no signal
    assert symbolic._pool is None  # the stuck worker's pool was torn down, to be recreated on the next call


def test_math_verifier_on_arithmetic_rows():
    task = build_task(cfg(name="arithmetic"), "test")
    rows = task.dataset.to_list()[:3]
    completions = [f"... \\boxed{{{rows[0]['answer']}}}", f"Answer: {int(rows[1]['answer']) + 1}", "blah"]
    res = task.verifier(completions, rows)
    assert res.correct == [True, False, False]
    assert res.extracted == [rows[0]["answer"], str(int(rows[1]["answer"]) + 1), None]


# ------------------------------------------------------------------ files

def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_jsonl_loads_and_maps_fields(tmp_path):
    train = _write(tmp_path / "train.jsonl", [
        json.dumps({"question": "1+1?", "solution": 2, "uid": "a", "level": 1}),
        "",
        json.dumps({"question": "2+2?", "solution": "4", "uid": "b", "level": 3}),
    ])
    test = _write(tmp_path / "test.jsonl", [json.dumps({"question": "3+3?", "solution": 6, "uid": "c", "level": 2})])
    c = cfg(name="jsonl", path=train, test_path=test, prompt_field="question", answer_field="solution", id_field="uid")
    task = build_task(c, "train")
    assert task.dataset.to_list() == [
        {"problem_id": "a", "prompt": "1+1?" + SUFFIX, "answer": "2", "level": 1},
        {"problem_id": "b", "prompt": "2+2?" + SUFFIX, "answer": "4", "level": 3},
    ]
    assert isinstance(task.verifier, MathVerifier)
    assert build_task(c, "test").dataset["problem_id"] == ["c"]
    # problem_id defaults to the row index
    c2 = replace(c, test_path=None, id_field=None)
    assert build_task(c2, "train").dataset["problem_id"] == ["0", "1"]
    # without test_path there is no held-out split: evaluating "test" on the training rows is refused
    with pytest.raises(TaskError, match=r"^task=jsonl has no held-out split: give task.test_path=<file>"):
        build_task(c2, "test")


def test_jsonl_errors_name_file_line_and_field(tmp_path):
    good = json.dumps({"prompt": "p", "answer": "a"})
    bad = _write(tmp_path / "bad.jsonl", [good, "", good, good, good, good, "{not json"])
    with pytest.raises(TaskError) as e:
        build_task(cfg(name="jsonl", path=bad))
    assert str(e.value).startswith(f"{bad} line 7: not valid JSON (")
    assert "\n" not in str(e.value)

    missing = _write(tmp_path / "missing.jsonl", [good, good, json.dumps({"prompt": "p"})])
    with pytest.raises(TaskError, match=re.escape(f"{missing} line 3: missing field 'answer' (set task.answer_field=")):
        build_task(cfg(name="jsonl", path=missing))
    with pytest.raises(TaskError, match=re.escape(f"{missing} line 1: missing field 'question' (set task.prompt_field=")):
        build_task(cfg(name="jsonl", path=missing, prompt_field="question"))

    empty = _write(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(TaskError, match=re.escape(f"{empty}: no rows")):
        build_task(cfg(name="jsonl", path=empty))

    nowhere = str(tmp_path / "nowhere.jsonl")
    with pytest.raises(TaskError, match=re.escape(f"task.path: no such file: {nowhere}")):
        build_task(cfg(name="jsonl", path=nowhere))
    with pytest.raises(TaskError, match=re.escape(f"task.test_path: no such file: {nowhere}")):
        build_task(cfg(name="jsonl", path=missing, test_path=nowhere), "test")
    with pytest.raises(TaskError, match="needs task.path"):
        build_task(cfg(name="jsonl"))


def test_parquet_round_trip(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "data.parquet"
    pd.DataFrame({"problem": ["What is 2+3?", "What is 7*6?"], "answer": ["5", "42"], "level": [1, 2]}).to_parquet(path)
    task = build_task(cfg(name="parquet", path=str(path), prompt_field="problem", prompt_suffix=""), "train")
    assert task.dataset.to_list() == [
        {"problem_id": "0", "prompt": "What is 2+3?", "answer": "5", "level": 1},
        {"problem_id": "1", "prompt": "What is 7*6?", "answer": "42", "level": 2},
    ]
    res = task.verifier(["\\boxed{5}", "it is 41"], task.dataset.to_list())
    assert res.correct == [True, False]
    with pytest.raises(TaskError, match=re.escape(f"{path} row 1: missing field 'question'")):
        build_task(cfg(name="parquet", path=str(path), prompt_field="question"))


def test_hub_offline_parts():
    # No download here: the known-dataset table, GSM8K's answer format and the split check.
    assert hub._gsm8k_answer("48/2 = 24 clips\n#### 1,072") == "1072"
    assert hub.KNOWN["math500"].repo == "HuggingFaceH4/MATH-500"
    with pytest.raises(TaskError, match="only the test split"):
        build_task(cfg(name="hub", hub_name="math500"), "train")
    with pytest.raises(TaskError, match="needs task.hub_name"):
        build_task(cfg(name="hub"))
