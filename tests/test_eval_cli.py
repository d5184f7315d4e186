"""`drox eval` end to end through typer's CliRunner: scoring a samples file and sampling a model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drox.cli.main import app

runner = CliRunner()

# 2 problems x 4 samples. p1: c=1 -> pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2
#                         p2: c=2 -> pass@1 = 2/4, pass@2 = 1 - C(2,2)/C(4,2) = 1 - 1/6 = 5/6
# mean: pass@1 = 3/8, pass@2 = (1/2 + 5/6) / 2 = 2/3; pass@4 = (1 + 1) / 2 = 1
GRADES = {"p1": [True, False, False, False], "p2": [False, True, True, False]}
# majority answers (k = n = 4, so maj@4 is exact): p1 votes "5" (wrong), p2 votes "4" (right) -> 1/2
ANSWERS = {"p1": ["3", "5", "5", "7"], "p2": ["9", "4", "4", None]}

TINY = ["model=tiny", "logger.wandb_mode=disabled", "eval.max_new_tokens=8", "device=cpu"]


def _samples_file(tmp_path: Path, with_answers: bool = False) -> Path:
    lines = []
    for pid, grades in GRADES.items():
        for j, ok in enumerate(grades):
            rec = {"problem_id": pid, "correct": ok}
            if with_answers:
                rec["answer"] = ANSWERS[pid][j]
            lines.append(json.dumps(rec))
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _invoke(args):
    return runner.invoke(app, [str(a) for a in args])


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert out.startswith("error:"), out
    assert "Traceback" not in out
    return out


# ------------------------------------------------------------------ --samples FILE


def test_samples_file_pass_at_k(tmp_path):
    out = tmp_path / "out"
    result = _invoke(["eval", "--samples", _samples_file(tmp_path), "--pass-at-k", "1,2", "--out", out])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pass@1"] == pytest.approx(3 / 8)
    assert summary["pass@2"] == pytest.approx(2 / 3)
    assert summary["n"] == 4 and summary["num_problems"] == 2
    assert not any(key.startswith("maj@") for key in summary), "no answers in the file -> no maj@k"
    with open(out / "per_problem.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["problem_id"] for r in rows] == ["p1", "p2"]
    assert [int(r["c"]) for r in rows] == [1, 2] and [int(r["n"]) for r in rows] == [4, 4]
    assert float(rows[0]["pass@2"]) == pytest.approx(1 / 2)
    assert float(rows[1]["pass@2"]) == pytest.approx(5 / 6)
    png = (out / "passk.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    # the table printed on stdout
    assert "0.3750" in result.output and "0.6667" in result.output


def test_samples_file_maj_at_k(tmp_path):
    out = tmp_path / "out"
    result = _invoke(["eval", "--samples", _samples_file(tmp_path, with_answers=True), "--pass-at-k", "4,1",
                      "--out", out])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pass@4"] == pytest.approx(1.0)
    assert summary["pass@1"] == pytest.approx(3 / 8)
    assert summary["maj@4"] == pytest.approx(0.5)


def test_samples_k_larger_than_n(tmp_path):
    out = tmp_path / "out"
    result = _invoke(["eval", "--samples", _samples_file(tmp_path), "--pass-at-k", "1,8", "--out", out])
    err = _one_error_line(result)
    assert "k=8" in err and "n=4" in err
    assert not out.exists(), "nothing is written when the inputs are invalid"


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--pass-at-k", "1,x"], ["--pass-at-k", "1,x"]),
        (["--pass-at-k", "0,2"], ["k must be >= 1"]),
        (["--pass-at-k", "1,4", "--n", "2"], ["--n 2", "k=4"]),
        (["model=tiny"], ["--samples", "model=tiny"]),
    ],
)
def test_samples_argument_errors(tmp_path, args, needles):
    result = _invoke(["eval", "--samples", _samples_file(tmp_path), *args, "--out", tmp_path / "out"])
    err = _one_error_line(result)
    for needle in needles:
        assert needle in err


def test_samples_bad_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem_id": "a", "correct": 1}\n')
    err = _one_error_line(_invoke(["eval", "--samples", bad, "--pass-at-k", "1", "--out", tmp_path / "o"]))
    assert "line 1" in err and "correct" in err
    err = _one_error_line(_invoke(["eval", "--samples", tmp_path / "missing.jsonl", "--pass-at-k", "1"]))
    assert "no such file" in err


# ------------------------------------------------------------------ sampling a model


def _records(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory):
    """`drox eval` on the tiny model: 2 problems x n=2 samples (run once for the module)."""
    out = tmp_path_factory.mktemp("eval-tiny")
    result = _invoke(["eval", "--pass-at-k", "1,2", "--num-problems", "2", *TINY, "--out", out])
    return result, out


def test_eval_tiny_model(tiny_eval):
    result, out = tiny_eval
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and summary["num_problems"] == 2
    records = _records(out / "samples.jsonl")
    assert len(records) == 4
    assert [r["problem_id"] for r in records] == ["arithmetic-test-0"] * 2 + ["arithmetic-test-1"] * 2
    for r in records:
        assert set(r) >= {"problem_id", "correct", "answer", "reference", "completion", "finish_reason", "length"}
        assert isinstance(r["correct"], bool)
        assert 1 <= r["length"] <= 8
        assert r["finish_reason"] in ("eos", "length")
    # the summary is the pass@k of exactly these records
    from drox.evaluation.passk import summarize

    expected, _ = summarize(records, [1, 2])
    assert summary["pass@1"] == pytest.approx(expected["pass@1"])
    assert summary["pass@2"] == pytest.approx(expected["pass@2"])
    assert summary["mean_length"] == pytest.approx(sum(r["length"] for r in records) / 4)
    assert summary["truncated_frac"] == pytest.approx(sum(r["finish_reason"] == "length" for r in records) / 4)
    assert (out / "per_problem.csv").is_file() and (out / "passk.png").is_file()
    assert "n=2 samples x 2 problems" in result.output


def test_eval_checkpoint_folder_matches_model(tiny_eval, tmp_path, tiny_policy):
    """--checkpoint loads a saved folder as model=hf; same weights + eval seed -> same samples."""
    _, first_out = tiny_eval
    model, tok = tiny_policy
    ckpt = tmp_path / "checkpoint-1"
    model.save_pretrained(str(ckpt))
    tok.save_pretrained(str(ckpt))
    out = tmp_path / "out"
    result = _invoke(["eval", "--checkpoint", ckpt, "--pass-at-k", "1,2", "--num-problems", "2",
                      "logger.wandb_mode=disabled", "eval.max_new_tokens=8", "device=cpu", "--out", out])
    assert result.exit_code == 0, result.output
    a, b = _records(first_out / "samples.jsonl"), _records(out / "samples.jsonl")
    assert [r["completion"] for r in a] == [r["completion"] for r in b]
    assert [r["length"] for r in a] == [r["length"] for r in b]


def test_eval_checkpoint_without_config(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    err = _one_error_line(_invoke(["eval", "--checkpoint", folder, "--pass-at-k", "1", *TINY]))
    assert str(folder) in err and "config.json" in err


def test_eval_task_without_verifier(tmp_path):
    """DRO's regime: no verifier, so the open-ended metrics instead of pass@k."""
    out = tmp_path / "out"
    result = _invoke(["eval", "--pass-at-k", "2", "--num-problems", "2", *TINY, "task=revise", "--out", out])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert not any(key.startswith("pass@") for key in summary)
    assert 0.0 <= summary["rouge_l_f1"] <= 1.0 and summary["ref_logprob_per_token"] < 0
    assert summary["n"] == 2 and summary["num_problems"] == 2 and "win_rate" not in summary


def test_eval_bad_override(tmp_path):
    err = _one_error_line(_invoke(["eval", "--pass-at-k", "1", "model=tiny", "trainer.foo=1"]))
    assert "trainer.foo" in err


# ------------------------------------------------------------------ --run, sweeps, the recorded protocol


def test_eval_records_protocol_and_training_length_cap(tiny_eval):
    """summary.json says what produced it; eval.max_new_tokens unset = the training cap rollout.max_new_tokens."""
    _, out = tiny_eval
    record = json.loads((out / "summary.json").read_text())["eval_config"]
    assert record["model"] == "tiny" and record["task"]["name"] == "arithmetic" and record["split"] == "test"
    assert (record["n"], record["temperature"], record["seed"], record["max_new_tokens"]) == (2, 1.0, 1234, 8)
    from drox.cli.main import compose
    from drox.evaluation.runner import eval_settings

    assert eval_settings(compose(["model=tiny", "rollout.max_new_tokens=24"])).max_new_tokens == 24
    assert eval_settings(compose(["model=tiny", "rollout.max_new_tokens=24", "eval.max_new_tokens=5"])).max_new_tokens == 5


def test_eval_summary_has_bootstrap_interval(tiny_eval):
    _, out = tiny_eval
    summary = json.loads((out / "summary.json").read_text())
    for k in (1, 2):
        assert summary[f"pass@{k}_ci95_low"] <= summary[f"pass@{k}"] <= summary[f"pass@{k}_ci95_high"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-step tiny training run with checkpoints at steps 1 and 2."""
    run_dir = tmp_path_factory.mktemp("run")
    no_eval_cap = [o for o in TINY if not o.startswith("eval.max_new_tokens")]
    result = _invoke(["train", *no_eval_cap, "trainer.steps=2", "trainer.save_every=1", "trainer.prompts_per_step=2",
                      "trainer.samples_per_prompt=2", "rollout.max_new_tokens=6", f"run_dir={run_dir}",
                      "task.prompt_suffix=Answer:"])
    assert result.exit_code == 0, result.output
    return run_dir


def test_eval_run_uses_the_runs_task_and_writes_into_it(tiny_run):
    result = _invoke(["eval", "--run", tiny_run, "--steps", "0,2", "--pass-at-k", "1,2", "--num-problems", "2",
                      "--label", "probe"])
    assert result.exit_code == 0, result.output
    root = tiny_run / "evals" / "probe"
    for step in (0, 2):
        summary = json.loads((root / f"step-{step:06d}" / "summary.json").read_text())
        record = summary["eval_config"]
        assert record["step"] == step
        assert record["task"]["prompt_suffix"] == "Answer:"  # the run's task, not the default one
        assert record["max_new_tokens"] == 6  # the run's training cap
        samples = _records(root / f"step-{step:06d}" / "samples.jsonl")
        assert len(samples) == 4
    assert json.loads((root / "step-000000" / "summary.json").read_text())["eval_config"]["checkpoint"] is None
    assert json.loads((root / "step-000002" / "summary.json").read_text())["eval_config"]["checkpoint"].endswith(
        "step-000002")
    text = (root / "comparison.md").read_text()
    assert "| 0 |" in text and "| 2 |" in text and "Crossover, step 0 vs step 2" in text
    assert (root / "passk.png").read_bytes()[:4] == b"\x89PNG"
    # drox report reads these evaluations with --eval LABEL (the last step's, by default)
    from drox.evaluation.aggregate import build_report

    report = build_report([tiny_run], metrics=["eval/pass@1"], eval_label="probe", group_by=[])
    last = json.loads((root / "step-000002" / "summary.json").read_text())["pass@1"]
    assert report.rows[0].stats.mean == pytest.approx(last) and report.rows[0].stats.n == 1
    step0 = build_report([tiny_run], metrics=["eval/pass@1"], eval_label="probe", group_by=[], at_step=0)
    assert step0.rows[0].stats.mean == pytest.approx(
        json.loads((root / "step-000000" / "summary.json").read_text())["pass@1"])


def test_eval_run_errors(tiny_run, tmp_path):
    err = _one_error_line(_invoke(["eval", "--run", tiny_run, "--steps", "7"]))
    assert "no checkpoint for step(s) [7]" in err and "saved: [1, 2]" in err
    err = _one_error_line(_invoke(["eval", "--run", tmp_path]))
    assert "no config.yaml" in err
    err = _one_error_line(_invoke(["eval", "--steps", "1", *TINY]))
    assert "--run" in err


def test_eval_checkpoint_of_a_run_keeps_the_runs_task(tiny_run, tmp_path):
    """--checkpoint inside a run folder evaluates with that run's task (no silent fall-back to the default)."""
    out = tmp_path / "o"
    result = _invoke(["eval", "--checkpoint", tiny_run / "checkpoints" / "step-000001", "--pass-at-k", "1",
                      "--num-problems", "1", "--out", out])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "summary.json").read_text())["eval_config"]
    assert record["task"]["prompt_suffix"] == "Answer:" and record["max_new_tokens"] == 6


def test_eval_sweep_one_folder_per_point(tmp_path):
    """`drox eval -m` behaves like `drox train -m`: one folder per point, each readable by drox report."""
    sweep = tmp_path / "sweep"
    result = _invoke(["eval", "-m", *TINY, "eval.temperature=0.5,1.0", "--pass-at-k", "1", "--num-problems", "1",
                      "--out", sweep])
    assert result.exit_code == 0, result.output
    temps = sorted(json.loads((sweep / str(i) / "summary.json").read_text())["eval_config"]["temperature"]
                   for i in (0, 1))
    assert temps == [0.5, 1.0]
    from drox.evaluation.aggregate import build_report

    report = build_report([sweep], metrics=["eval/pass@1"])
    assert report.group_keys == ["eval.temperature"] and len(report.groups) == 2


def test_eval_jsonl_without_test_split_is_an_error(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "1+1?", "answer": "2"}) + "\n")
    err = _one_error_line(_invoke(["eval", "--pass-at-k", "1", *TINY, "task=jsonl", f"task.path={data}",
                                   "--out", tmp_path / "o"]))
    assert "no held-out split" in err and "task.test_path" in err
