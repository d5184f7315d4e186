"""`drox eval`'s calibration of stated confidences (RLCR, arXiv 2507.16806; docs/evaluation.md "Calibration"):
hand-computed metrics, the reliability bins and their identity with ECE, the eval folder end to end through a fake
engine (no model), config validation of ``eval.confidence_tag`` and `drox report` reading the new keys."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from doubles import CharTok, make_batch
from typer.testing import CliRunner

from drox.cli.main import app
from drox.config import validate
from drox.errors import ConfigError
from drox.signals.calibration import DEFAULT_TAG, bin_index, calibration_summary, ece, reliability_bins
from drox.evaluation.report import format_calibration_line, format_reliability_csv, write_reliability
from drox.evaluation.runner import add_calibration, evaluate_policy, write_eval_folder

TAG_OVERRIDE = "eval.confidence_tag='<confidence>(.*?)</confidence>'"

# ------------------------------------------------------------------ pure functions, by hand

# 4 samples: q = 0.9 (correct), 0.8 (wrong), 0.3 (wrong), none stated (correct)
CORRECT = [True, False, False, True]
Q = [0.9, 0.8, 0.3, None]


def test_calibration_summary_hand_computed():
    s = calibration_summary(CORRECT, Q)
    assert s["brier"] == pytest.approx((0.1 ** 2 + 0.8 ** 2 + 0.3 ** 2) / 3)
    assert s["confidence_format_fail_frac"] == pytest.approx(0.25)
    assert s["calibration_n"] == 3
    # one sample per bin (0.9 -> [0.9, 1], 0.8 -> [0.8, 0.9), 0.3 -> [0.2, 0.3...4)): ECE = mean |q - c|
    assert s["ece"] == pytest.approx((0.1 + 0.8 + 0.3) / 3)
    assert s["auroc"] == pytest.approx(1.0)  # the one correct answer stated the highest q
    assert s["confidence_mean"] == pytest.approx((0.9 + 0.8 + 0.3) / 3)
    assert s["accuracy_stated"] == pytest.approx(1 / 3)  # the unstated correct sample does not count


def test_calibration_summary_depends_on_the_pairing():
    """Same q values, same correct flags, paired differently: other numbers (the pairing is the measurement)."""
    aligned = calibration_summary([True, True, False, False], [0.9, 0.8, 0.2, 0.1])
    swapped = calibration_summary([True, True, False, False], [0.1, 0.2, 0.8, 0.9])
    assert aligned["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert swapped["brier"] == pytest.approx((0.81 + 0.64 + 0.64 + 0.81) / 4)
    assert (aligned["auroc"], swapped["auroc"]) == (1.0, 0.0)
    assert aligned["confidence_mean"] == swapped["confidence_mean"]


def test_calibration_summary_without_any_stated_confidence():
    assert calibration_summary([True, False], [None, None]) == {"confidence_format_fail_frac": 1.0,
                                                                "calibration_n": 0}
    assert calibration_summary([], []) == {"confidence_format_fail_frac": 1.0, "calibration_n": 0}
    with pytest.raises(ValueError, match="2 values but q has 1"):
        calibration_summary([True, False], [0.5])


def test_reliability_bins_hand_computed():
    rows = reliability_bins([1, 0, 0], [0.9, 0.8, 0.3])
    assert len(rows) == 10
    assert [r["count"] for r in rows] == [0, 0, 1, 0, 0, 0, 0, 0, 1, 1]
    by_bin = {b: rows[b] for b in (2, 8, 9)}
    assert (by_bin[9]["mean_confidence"], by_bin[9]["accuracy"]) == (pytest.approx(0.9), 1.0)
    assert (by_bin[8]["mean_confidence"], by_bin[8]["accuracy"]) == (pytest.approx(0.8), 0.0)
    assert (by_bin[2]["mean_confidence"], by_bin[2]["accuracy"]) == (pytest.approx(0.3), 0.0)
    assert math.isnan(rows[0]["mean_confidence"]) and math.isnan(rows[0]["accuracy"])
    assert rows[0]["bin_low"] == 0.0 and rows[-1]["bin_high"] == 1.0


def test_reliability_bins_edges_zero_and_one():
    """q = 0.0 in the first bin, q = 1.0 in the last; every q lies in [bin_low, bin_high) of its bin (the last
    bin closed at 1.0), with the float edges written in the table; bins agree with bin_index (ece's binning)."""
    q = [0.0, 0.05, 0.1, 0.3, 0.5, 0.95, 1.0]
    assert bin_index(q).tolist() == [0, 0, 1, 2, 5, 9, 9]  # 0.3's edge is 0.30000000000000004: the bin below
    rows = reliability_bins([0] * len(q), q)
    assert [r["count"] for r in rows] == [2, 1, 1, 0, 0, 1, 0, 0, 0, 2]
    for value, b in zip(q, bin_index(q)):
        low, high = rows[b]["bin_low"], rows[b]["bin_high"]
        assert low <= value < high or (value == 1.0 and b == len(rows) - 1)
    assert rows[2]["bin_high"] == 0.30000000000000004


@pytest.mark.parametrize("n_bins", [1, 3, 10, 15])
def test_ece_equals_the_count_weighted_gap_of_the_reliability_bins(n_bins):
    rng = np.random.default_rng(n_bins)
    q = np.concatenate([rng.uniform(0, 1, 200), np.linspace(0, 1, 11), [0.0, 1.0, 1.0]])
    correct = (rng.uniform(0, 1, q.size) < q).astype(float)
    rows = reliability_bins(correct, q, n_bins)
    n = q.size
    assert sum(r["count"] for r in rows) == n
    identity = sum(r["count"] / n * abs(r["accuracy"] - r["mean_confidence"]) for r in rows if r["count"])
    assert ece(correct, q, n_bins) == pytest.approx(identity, abs=1e-12)


def test_reliability_csv_and_plot(tmp_path):
    rows = reliability_bins([1, 0, 0], [0.9, 0.8, 0.3])
    parsed = list(csv.DictReader(format_reliability_csv(rows).splitlines()))
    assert list(parsed[0]) == ["bin_low", "bin_high", "count", "mean_confidence", "accuracy"]
    assert parsed[0]["mean_confidence"] == "" and parsed[0]["accuracy"] == ""  # empty bin: empty cells
    assert [int(r["count"]) for r in parsed] == [r["count"] for r in rows]
    assert float(parsed[9]["mean_confidence"]) == 0.9 and float(parsed[9]["accuracy"]) == 1.0
    paths = write_reliability(tmp_path, [True, False, False], [0.9, 0.8, 0.3], title="probe")
    assert paths["reliability_csv"].read_text() == format_reliability_csv(rows)
    png = paths["reliability_plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_calibration_line_printed_by_drox_eval():
    assert format_calibration_line({"pass@1": 0.5}) is None  # option off: nothing printed
    line = format_calibration_line(calibration_summary(CORRECT, Q))
    assert line.startswith("calibration over 3 stated: brier 0.2467, ece 0.4000, auroc 1.0000") and "25%" in line
    none = format_calibration_line(calibration_summary([True], [None]))
    assert "100%" in none and "eval.confidence_tag" in none and "\n" not in none


# ------------------------------------------------------------------ the eval folder, end to end (fake engine)


def _completions(answer: str, problem: int):
    """4 completions of one problem: correct q=0.9, wrong q=0.2, correct without a tag, wrong with q=1.5 (outside
    [0, 1]: no usable q). Rotated by the problem's index, so that no fixed position holds the correct ones."""
    wrong = str(int(answer) + 1)
    kinds = [f"\\boxed{{{answer}}} <confidence>0.9</confidence>", f"\\boxed{{{wrong}}} <confidence>0.2</confidence>",
             f"\\boxed{{{answer}}}", f"\\boxed{{{wrong}}} <confidence>1.5</confidence>"]
    shift = problem % 4
    return kinds[shift:] + kinds[:shift]


class ScriptedEngine:
    """generate(): for each prompt, its scripted completions (same call signature as the real engines)."""

    def __init__(self, table):
        self.table = table

    def generate(self, prompts, n, *, max_new_tokens, temperature=1.0, top_p=1.0, seed=None, margins=False):
        texts = [t for p in prompts for t in self.table[p][:n]]
        return make_batch(CharTok(), ["p"] * len(prompts), texts, n)


@pytest.fixture
def scripted_eval(compose_cfg, tmp_path):
    """evaluate_policy + write_eval_folder on the 4 arithmetic test problems x 4 scripted completions."""
    from drox.tasks import build_task

    cfg = compose_cfg("eval.n=4", TAG_OVERRIDE)
    task = build_task(cfg.task, split="test")
    rows = task.dataset.to_list()
    engine = ScriptedEngine({r["prompt"]: _completions(r["answer"], j) for j, r in enumerate(rows)})
    summary, per_problem, records = evaluate_policy(cfg, engine, task, progress=False)
    out = tmp_path / "eval"
    write_eval_folder(out, cfg, summary, per_problem, records, title="scripted")
    return out, len(rows)


def test_eval_folder_has_the_calibration_keys(scripted_eval):
    out, problems = scripted_eval
    summary = json.loads((out / "summary.json").read_text())
    # stated and usable: 0.9 on each correct-with-tag sample, 0.2 on each wrong one; per problem 2 of 4
    assert summary["calibration_n"] == 2 * problems
    assert summary["confidence_format_fail_frac"] == pytest.approx(0.5)
    assert summary["brier"] == pytest.approx((0.1 ** 2 + 0.2 ** 2) / 2)
    assert summary["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.2)
    assert summary["auroc"] == pytest.approx(1.0)
    assert summary["confidence_mean"] == pytest.approx(0.55)
    assert summary["accuracy_stated"] == pytest.approx(0.5)
    assert summary["pass@1"] == pytest.approx(0.5)  # the verifier's flags: 2 of 4 correct per problem
    assert summary["eval_config"]["confidence_tag"] == "<confidence>(.*?)</confidence>"


def test_samples_carry_their_own_confidence(scripted_eval):
    """Each sample's confidence is the one its own completion states, next to its own correct flag: a shifted or
    shuffled pairing breaks both this and the Brier/AUROC above (the correct samples move with the problem)."""
    out, problems = scripted_eval
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 4 * problems
    assert [r["correct"] for r in records[:4]] != [r["correct"] for r in records[4:8]]  # the rotation is real
    for r in records:
        stated = "<confidence>0.9</confidence>" in r["completion"] or "<confidence>0.2</confidence>" in r["completion"]
        expected = (0.9 if r["correct"] else 0.2) if stated else None
        assert r["confidence"] == expected, r
    assert sum(r["confidence"] is None for r in records) == 2 * problems


def test_eval_folder_reliability_files(scripted_eval):
    out, problems = scripted_eval
    with open(out / "reliability.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["count"]) for r in rows] == [0, 0, problems, 0, 0, 0, 0, 0, 0, problems]
    assert (float(rows[2]["mean_confidence"]), float(rows[2]["accuracy"])) == (pytest.approx(0.2), 0.0)
    assert (float(rows[9]["mean_confidence"]), float(rows[9]["accuracy"])) == (pytest.approx(0.9), 1.0)
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    n = sum(int(r["count"]) for r in rows)
    identity = sum(int(r["count"]) / n * abs(float(r["accuracy"]) - float(r["mean_confidence"]))
                   for r in rows if int(r["count"]))
    assert summary["ece"] == pytest.approx(identity)


def test_report_reads_the_calibration_keys(scripted_eval):
    """drox report: the summary keys are eval/<key> metrics with no special case."""
    from drox.evaluation.aggregate import available_metrics, build_report, load_run

    out, _ = scripted_eval
    summary = json.loads((out / "summary.json").read_text())
    names = ["eval/brier", "eval/ece", "eval/auroc", "eval/confidence_format_fail_frac", "eval/calibration_n"]
    assert set(names) <= set(available_metrics([load_run(out)]))
    report = build_report([out], metrics=names, group_by=[])
    assert {row.metric: row.stats.mean for row in report.rows} == {
        name: pytest.approx(summary[name[len("eval/"):]]) for name in names}


def test_no_stated_confidence_no_metrics_no_crash(tmp_path, compose_cfg):
    records = [{"problem_id": "a", "correct": c, "completion": t, "answer": None, "length": 3,
                "finish_reason": "eos"} for c, t in ((True, "\\boxed{1}"), (False, "<confidence>x</confidence>"))]
    summary = {"pass@1": 0.5, "n": 2, "num_problems": 1}
    add_calibration(summary, records, DEFAULT_TAG)
    assert summary["confidence_format_fail_frac"] == 1.0 and summary["calibration_n"] == 0
    assert not {"brier", "ece", "auroc", "confidence_mean", "accuracy_stated"} & set(summary)
    assert [r["confidence"] for r in records] == [None, None]
    import pandas as pd

    cfg = compose_cfg(TAG_OVERRIDE)
    write_eval_folder(tmp_path, cfg, summary, pd.DataFrame({"problem_id": ["a"]}), records, title="none")
    assert (tmp_path / "summary.json").is_file()
    assert not (tmp_path / "reliability.png").exists() and not (tmp_path / "reliability.csv").exists()


def test_off_by_default_and_skipped_without_a_verifier(compose_cfg, monkeypatch):
    """No tag: no calibration keys. A task without a verifier: the option is ignored (no correctness)."""
    import pandas as pd

    import drox.evaluation.open_ended as open_ended

    assert compose_cfg().eval.confidence_tag is None
    records = [{"problem_id": "a", "completion": "x <confidence>0.5</confidence>"}]
    monkeypatch.setattr(open_ended, "evaluate_open_ended",
                        lambda *a, **k: ({"rouge_l_f1": 0.1, "n": 1}, pd.DataFrame(), records))

    class NoVerifier:
        verifier = None
        name = "revise"

    summary, _, out_records = evaluate_policy(compose_cfg(TAG_OVERRIDE), None, NoVerifier(), progress=False)
    assert summary == {"rouge_l_f1": 0.1, "n": 1}
    assert "confidence" not in out_records[0]


# ------------------------------------------------------------------ config and command line


@pytest.mark.parametrize("tag, needle", [("<c>.*</c>", "has no capture group"), ("(unclosed", "not a valid regex"),
                                         ("", "has no capture group")])
def test_bad_confidence_tag_is_a_config_error(tiny_cfg, tag, needle):
    tiny_cfg.eval.confidence_tag = tag
    with pytest.raises(ConfigError) as info:
        validate(tiny_cfg)
    message = str(info.value)
    assert "\n" not in message and message.startswith("eval.confidence_tag=") and needle in message
    assert "<confidence>(.*?)</confidence>" in message  # the fix: an example with a group


def test_bad_confidence_tag_on_the_command_line_is_one_line():
    result = CliRunner().invoke(app, ["eval", "--pass-at-k", "1", "model=tiny", "logger.wandb_mode=disabled",
                                      "device=cpu", "eval.confidence_tag='<c>.*</c>'"])
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert out.startswith("error:") and "Traceback" not in out and "eval.confidence_tag" in out
    assert "capture group" in out


def test_eval_help_mentions_the_option():
    result = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "eval.confidence_tag" in text and "RLCR" in text and "2507.16806" in text and "reliability.png" in text


# ------------------------------------------------------------------ eval.confidence_score=answer_span (RLSF)


def _margin_row(margin: float, V: int = 128) -> torch.Tensor:
    """Log-probabilities over V chars whose two largest probabilities differ by ``margin`` ('a' first, 'b'
    second); margin 0 = uniform."""
    if margin == 0:
        return torch.zeros(V)
    p = torch.full((V,), 0.05 / (V - 2))
    p[ord("a")], p[ord("b")] = 0.95 - (0.95 - margin) / 2, (0.95 - margin) / 2
    return p.log()


def test_answer_span_confidence_calibrated_end_to_end(compose_cfg, tmp_path):
    """Prompt "p" (1 token), completions "\\boxed{N}...": the answer's first char sits at index 7, predicted by
    row P + 7 - 1 = 7 of the position table. Rows 0-6 are uniform (margin 0), rows >= 7 have p_top1 - p_top2
    = 0.8, so an answered sample's q is 0.8 exactly (a mean over the whole response would dilute it with the
    prefix's zeros) and an unanswered one's 0. Per problem: 2 correct, 1 wrong, 1 without an answer:
    brier (0.2^2 + 0.2^2 + 0.8^2 + 0) / 4 = 0.18; ECE: the 0.8 bin holds 3 samples at accuracy 2/3 ->
    3/4 * |2/3 - 0.8| = 0.1, the 0 bin 1 sample at accuracy 0 -> 0; AUROC: positives (0.8, 0.8) vs negatives
    (0.8, 0): (0.5 + 1 + 0.5 + 1) / 4 = 0.75."""
    from doubles import PosLM

    from drox.tasks import build_task

    cfg = compose_cfg("eval.n=4", "eval.confidence_score=answer_span")
    task = build_task(cfg.task, split="test")
    rows = task.dataset.to_list()

    def completions(answer, j):
        wrong = str(int(answer) + 1)
        kinds = [f"\\boxed{{{answer}}}", f"\\boxed{{{wrong}}}", f"\\boxed{{{answer}}} ok", "no idea"]
        return kinds[j % 4:] + kinds[: j % 4]

    engine = ScriptedEngine({r["prompt"]: completions(r["answer"], j) for j, r in enumerate(rows)})
    table = torch.stack([_margin_row(0.0 if pos < 7 else 0.8) for pos in range(40)])
    summary, per_problem, records = evaluate_policy(cfg, engine, task, model=PosLM(table), tokenizer=CharTok(),
                                                    progress=False)
    assert [r["confidence"] for r in records[:4]] == pytest.approx(
        [0.0 if r["answer"] is None else 0.8 for r in records[:4]], abs=1e-5)
    assert summary["calibration_n"] == 4 * len(rows) and summary["confidence_format_fail_frac"] == 0.0
    assert summary["brier"] == pytest.approx(0.18, abs=1e-5)
    assert summary["ece"] == pytest.approx(0.1, abs=1e-5)
    assert summary["auroc"] == pytest.approx(0.75)
    assert summary["pass@1"] == pytest.approx(0.5)
    out = tmp_path / "eval"
    write_eval_folder(out, cfg, summary, per_problem, records, title="answer span")
    written = json.loads((out / "summary.json").read_text())
    assert written["eval_config"]["confidence_score"] == "answer_span" and written["ece"] == summary["ece"]
    assert (out / "reliability.png").is_file()
    with pytest.raises(ValueError, match="needs|reads the policy's logits"):
        evaluate_policy(cfg, engine, task, progress=False)  # no model: one clear error


def test_answer_span_confidence_reads_the_samplers_margins(compose_cfg):
    """With ``batch.margins`` (the HF sampler's p_(1) - p_(2) per position) the eval confidence is their mean over
    the answer span, without a second pass: the margins a teacher-forced pass gives produce the very scores of
    that pass (0.8 answered, 0 not), and margins of 0.5 everywhere give 0.5 to an answered sample."""
    from doubles import PosLM

    from drox.evaluation.runner import answer_span_confidence
    from drox.models.forward import response_logits
    from drox.models.logprobs import top2_margin
    from drox.tasks import build_task

    task = build_task(compose_cfg().task, split="test")
    table = torch.stack([_margin_row(0.0 if pos < 7 else 0.8) for pos in range(40)])
    model = PosLM(table)
    score = answer_span_confidence(model, CharTok(), task)
    assert score.reads_margins
    batch = make_batch(CharTok(), ["p"], ["\\boxed{12}", "no idea", "\\boxed{3} ok"], 3)
    rows = [task.dataset[0]] * 3
    teacher_forced = score(rows, batch)
    assert teacher_forced == pytest.approx([0.8, 0.0, 0.8], abs=1e-5)
    with torch.no_grad():
        logits = response_logits(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    batch.margins = top2_margin(logits) * batch.response_mask
    assert score(rows, batch) == pytest.approx(teacher_forced, abs=1e-6)
    batch.margins = 0.5 * batch.response_mask
    assert score(rows, batch) == pytest.approx([0.5, 0.0, 0.5])


def test_confidence_score_config_errors(tiny_cfg):
    tiny_cfg.eval.confidence_score = "margin"
    with pytest.raises(ConfigError, match="eval.confidence_score=margin is not allowed; choose one of: null, "
                                          "answer_span"):
        validate(tiny_cfg)
    tiny_cfg.eval.confidence_score = "answer_span"
    validate(tiny_cfg)
    tiny_cfg.eval.confidence_tag = DEFAULT_TAG
    with pytest.raises(ConfigError, match="both set"):
        validate(tiny_cfg)


# ------------------------------------------------------------------ drox report: reliability over seeds


def _run_with_samples(root, name, samples, step=8):
    folder = root / name / "eval" / f"step-{step:06d}"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"pass@1": 0.5}))
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return root / name


def test_reliability_plot_pools_the_samples_of_a_groups_runs(tmp_path):
    from drox.evaluation.aggregate import Group, Report, load_run
    from drox.evaluation.plots import plot_reliability, pooled_confidences, write_plots

    seed0 = _run_with_samples(tmp_path, "a0", [{"correct": True, "confidence": 0.9},
                                               {"correct": False, "confidence": None}])
    seed1 = _run_with_samples(tmp_path, "a1", [{"correct": False, "confidence": 0.8},
                                               {"correct": False, "confidence": 0.3}])
    runs = [load_run(seed0), load_run(seed1)]
    correct, q = pooled_confidences([(run, 8) for run in runs])
    assert (correct, q) == ([1.0, 0.0, 0.0], [0.9, 0.8, 0.3])  # the sample without a confidence is left out
    report = Report(runs=runs, group_keys=["arm"], groups=[Group(values=("a",), runs=runs)], metrics=["pass@1"],
                    at_step=None, rows=[], warnings=[])
    written = write_plots(report, tmp_path / "out")
    png = (tmp_path / "out" / "reliability.png").read_bytes()
    assert tmp_path / "out" / "reliability.png" in written and png[:8] == b"\x89PNG\r\n\x1a\n"
    plain = _run_with_samples(tmp_path, "b0", [{"correct": True}])  # no confidence anywhere: no figure
    bare = Report(runs=[load_run(plain)], group_keys=["arm"], groups=[Group(values=("b",), runs=[load_run(plain)])],
                  metrics=["pass@1"], at_step=None, rows=[], warnings=[])
    assert plot_reliability(bare, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
