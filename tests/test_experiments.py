"""Every paper comparison runs end to end at smoke size: 1 step of every arm on model=tiny, the base evaluated,
results.md written with a row per arm and a verdict per claim (experiments/driver.py; the full tables are
`make table-<name>`, not CI). Both scales of every experiment compose and validate (`drox config`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drox.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import driver  # noqa: E402

NAMES = ["nsr", "spurious", "passk_limits", "one_shot", "dro", "dro_revise", "entropy_8020", "prm_vs_variance", "dvao", "rubric_gate",
         "confidence", "rlcr", "seed_methods"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_both_scales_compose(name, scale):
    result = CliRunner().invoke(app, ["config", f"experiment={name}", f"scale={scale}"])
    assert result.exit_code == 0, result.output
    assert f"scale: {scale}" in result.output


def test_cpu_and_paper_differ_where_the_paper_says():
    from drox.cli.main import compose

    cpu, paper = compose(["experiment=nsr"]), compose(["experiment=nsr", "scale=paper"])
    assert cpu.model.path == "experiments/base_policy/model" and paper.model.path == "Qwen/Qwen2.5-Math-7B"
    assert (paper.trainer.lr, paper.trainer.samples_per_prompt, paper.eval.n) == (1e-6, 8, 256)
    assert cpu.eval.before_training is False and cpu.trainer.eval_every == cpu.trainer.steps
    # spurious: the paper's off-policy steps come from mini-batches (8 per rollout batch), greedy MATH-500 eval
    cpu, paper = compose(["experiment=spurious"]), compose(["experiment=spurious", "scale=paper"])
    assert (cpu.trainer.mu, cpu.trainer.mini_batches, paper.trainer.mini_batches) == (1, 4, 8)
    assert (paper.trainer.lr, paper.trainer.samples_per_prompt, paper.eval.temperature) == (5e-7, 16, 0.0)
    revise = compose(["experiment=dro_revise"])
    assert (revise.task.name, revise.model.name, revise.eval.judge.model) == ("revise", "smollm2-135m", "embedded")


@pytest.mark.parametrize("name", NAMES)
def test_smoke(name, tmp_path):
    exp = driver.load_spec(name)
    out = driver.run(name, tmp_path, smoke=True, log=lambda line: None)
    text = (out / "results.md").read_text()
    for arm in exp.arms:
        assert (tmp_path / "runs" / arm.name / "seed-0" / "eval").is_dir()
        assert f"| {arm.name} |" in text
    assert "| base |" in text
    for claim in exp.claims:
        assert claim.text in text
    assert text.count("| reproduced |") + text.count("| inconclusive") + text.count("| not reproduced") \
        == len(exp.claims)
    table = (out / "table.csv").read_text()
    assert table.startswith("arm,metric,mean,std,ci95_low,ci95_high,n")
    from drox.tasks import build_task

    if build_task(driver._compose([f"experiment={name}"]).task, split="test").verifier is None:  # open-ended
        assert "base,eval/rouge_l_f1," in table and "r3,eval/ref_logprob_per_token," in table
    else:
        assert (out / "passk.png").is_file()


def test_welch_difference_by_hand():
    # a = 1, 2, 3 (mean 2, var 1); b = 4, 6 (mean 5, var 2): se^2 = 1/3 + 2/2 = 4/3,
    # df = (4/3)^2 / ((1/3)^2/2 + 1^2/1) = (16/9) / (1/18 + 1) = 32/19
    d, low, high = driver.welch_difference([1, 2, 3], [4, 6])
    from drox.evaluation.aggregate import student_t_quantile

    half = student_t_quantile(0.975, 32 / 19) * (4 / 3) ** 0.5
    assert d == -3 and low == pytest.approx(-3 - half) and high == pytest.approx(-3 + half)
    assert driver.verdict(-1, low, high) == ("reproduced" if high < 0 else "inconclusive")
    # one side a single value (the base): the other side's t-interval, shifted
    d, low, high = driver.welch_difference([1, 2, 3], [0.5])
    assert d == 1.5 and high - low == pytest.approx(2 * 4.30265273 / 3 ** 0.5)
    assert driver.verdict(+1, 0.1, 0.3) == "reproduced"
    assert driver.verdict(+1, -0.3, -0.1).startswith("not reproduced")
    assert driver.verdict(+1, -0.1, 0.3) == "inconclusive"
    assert driver.verdict(+1, 0.2, 0.2).startswith("inconclusive (zero spread")


def test_the_claims_index_is_current():
    """experiments/README.md's index is what the committed results.md files say (driver.py index rewrites it)."""
    readme = (ROOT / "experiments" / "README.md").read_text()
    assert driver.index_markdown() in readme


def test_claim_rows_read_the_drivers_claims_table(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "spec.py").write_text("")
    (tmp_path / "x" / "results.md").write_text(
        "# x\n\n## Ours\n\n| arm | m |\n|---|---|\n| a | 1 |\n\n" + driver.CLAIMS_HEADING + "\n\n"
        "| claim | paper | ours: difference (95% Welch interval) | verdict |\n|---|---|---|---|\n"
        "| A beats B | 67.1 vs 63.0 | m: a − b = +0.1 [-0.2, +0.4] | inconclusive |\n\nVerdict rule: ...\n")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "spec.py").write_text("")
    assert driver.claim_rows(tmp_path / "x" / "results.md") == [
        ["A beats B", "67.1 vs 63.0", "m: a − b = +0.1 [-0.2, +0.4]", "inconclusive"]]
    index = driver.index_markdown(tmp_path).splitlines()
    assert index[3] == "| [x](x/results.md) | A beats B | 67.1 vs 63.0 | m: a − b = +0.1 [-0.2, +0.4] | inconclusive |"
    assert index[4] == "| [y](y/README.md) | – | – | not run yet | – |"


def test_a_transfer_evaluation_reads_every_run_and_the_base_on_a_second_task(tmp_path, monkeypatch):
    """Experiment.transfer (Intuitor's 'out of domain'): the final checkpoint of each run and the base are
    evaluated again with the given overrides; transfer/<label>/<key> is a metric like any other."""
    spec = driver.Experiment(
        name="nsr", arms=[driver.Arm("grpo")], seeds=[0],
        metrics=["eval/pass@1", "transfer/ood/pass@1"],
        claims=[driver.Claim("transfers", "transfer/ood/pass@1", "grpo", "base", +1, "-")],
        transfer={"ood": ["task.n_ops=2"]})
    monkeypatch.setattr(driver, "load_spec", lambda name: spec)
    out = driver.run("nsr", tmp_path, smoke=True, log=lambda line: None)
    import json

    for run in (tmp_path / "runs" / "grpo" / "seed-0", tmp_path / "runs" / "base"):
        summary = json.loads((run / "transfer" / "ood" / "summary.json").read_text())
        assert summary["eval_config"]["task"]["n_ops"] == 2  # the overrides reached the evaluation
        assert driver._metric(run, "transfer/ood/pass@1") == summary["pass@1"]
    trained = json.loads((tmp_path / "runs/grpo/seed-0/transfer/ood/summary.json").read_text())
    assert "checkpoints/step-000001" in trained["eval_config"]["model"]  # the run's final weights, not the base
    text = (out / "results.md").read_text()
    assert "transfer/ood/pass@1: grpo − base" in text
