"""Every paper comparison runs end to end at smoke size: 1 step of every arm on model=tiny, the base evaluated,
results.md written with a row per arm and a verdict per claim (experiments/driver.py; the full tables are
`make table-<name>`, not CI). Both scales of every experiment compose and validate (`drox config`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drox.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import driver  # noqa: E402

NAMES = ["nsr", "spurious", "passk_limits", "one_shot", "dro", "dro_revise", "entropy_8020", "prm_vs_variance", "dvao", "rubric_gate",
         "confidence", "rlcr", "seed_methods", "losses", "passk_training",
         "distillation"]
CPU_ONLY = ("losses", "passk_training", "distillation")
"""Tables with no paper-scale config (their READMEs say why)."""
PAPER_NAMES = [name for name in NAMES if name not in CPU_ONLY]


def test_every_spec_loads_and_names_its_own_arms():
    """positive_control and positive_control_smollm2 (outcome GRPO only, no smoke run: nsr's covers the same code)
    and every table."""
    names = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/spec.py"))
    assert set(NAMES) | {"positive_control", "positive_control_smollm2"} == set(names)
    for name in names:
        exp = driver.load_spec(name)
        arms = {a.name for a in exp.arms} | {"base"}
        assert exp.control is None or exp.control in arms, name
        for claim in exp.claims:
            assert {claim.arm_a, claim.arm_b} <= arms, (name, claim.text)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_both_scales_compose(name, scale):
    result = CliRunner().invoke(app, ["config", f"experiment={name}", f"scale={scale}"])
    assert result.exit_code == 0, result.output
    assert f"scale: {scale}" in result.output


def test_a_table_without_a_paper_config_refuses_the_paper_scale_in_one_line(capsys):
    for name in CPU_ONLY:
        with pytest.raises(SystemExit) as exit_info:
            driver.main([name, "--scale", "paper", "--dry-run"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: {name} has no paper-scale config (conf/experiment_scale/{name}_paper.yaml; "
                       f"experiments/{name}/README.md says why): run it at --scale cpu")
    assert driver.missing_scale("nsr", "paper") is None and driver.missing_scale("losses", "cpu") is None


def test_cpu_and_paper_differ_where_the_paper_says():
    from drox.cli.main import compose

    cpu, paper = compose(["experiment=nsr"]), compose(["experiment=nsr", "scale=paper"])
    assert cpu.model.path == "experiments/toy_base/mix/model" and paper.model.path == "Qwen/Qwen2.5-Math-7B"
    assert (paper.trainer.lr, paper.trainer.samples_per_prompt, paper.eval.n) == (1e-6, 8, 256)
    assert cpu.eval.before_training is False and cpu.trainer.eval_every == cpu.trainer.steps
    assert compose(["experiment=nsr", "trainer.steps=5"]).trainer.eval_every == 5  # one eval, at the last step
    # spurious: the paper's off-policy steps come from mini-batches (8 per rollout batch), greedy MATH-500 eval
    cpu, paper = compose(["experiment=spurious"]), compose(["experiment=spurious", "scale=paper"])
    assert (cpu.trainer.mu, cpu.trainer.mini_batches, paper.trainer.mini_batches) == (1, 4, 8)
    assert (paper.trainer.lr, paper.trainer.samples_per_prompt, paper.eval.temperature) == (5e-7, 16, 0.0)
    revise = compose(["experiment=dro_revise"])
    assert (revise.task.name, revise.model.name, revise.eval.judge.model) == ("revise", "smollm2-135m", "embedded")


SMOKE_IN_MAKE_TEST = ("nsr", "one_shot", "passk_limits", "dro_revise")
"""The tables `make test` smoke-runs: between them every driver feature but one (sign estimators, a prepare step, an
SFT arm and the crossover k, an open-ended task with a judge); the transfer evaluation has its own test below, so
confidence's smoke run (25 s) went to `make test-tables` with the rest (about 30 s each on 2 cores: the suite had
reached 1,024 s, then 866 s, against its 15-minute budget)."""


@pytest.mark.parametrize("name", [n if n in SMOKE_IN_MAKE_TEST else pytest.param(n, marks=pytest.mark.tables)
                                  for n in NAMES])
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
    import csv

    with open(out / "claims.csv", newline="") as fh:
        claims = list(csv.DictReader(fh))
    assert list(claims[0]) == ["claim", "metric", "arm_a", "arm_b", "direction", "test", "estimate", "ci95_low",
                               "ci95_high", "mde", "n_seeds", "verdict", "reason"]
    assert [c["claim"] for c in claims] == [c.text for c in exp.claims]
    # one seed at smoke size: a paired interval is impossible, so nothing can be called
    assert all(c["verdict"] == "not testable" and c["reason"] for c in claims)
    table = (out / "table.csv").read_text()
    assert table.startswith("arm,metric,mean,std,ci95_low,ci95_high,n")
    from drox.tasks import build_task

    if build_task(driver._compose([f"experiment={name}"]).task, split="test").verifier is None:  # open-ended
        assert "base,eval/rouge_l_f1," in table and "r3,eval/ref_logprob_per_token," in table
    else:
        assert (out / "passk.png").is_file()


def _arm(values, problems=None):
    from verdicts import ArmData

    return ArmData(values=dict(values), problems={k: np.asarray(v, dtype=float) for k, v in (problems or {}).items()})


def test_a_paired_claim_by_hand():
    """Arm vs arm over 3 shared seeds, no per-problem data: the paired t-interval of the per-seed differences."""
    from drox.evaluation.aggregate import student_t_quantile
    from verdicts import evaluate_claim

    claim = driver.Claim("a beats b", "entropy", "a", "b", +1, "-")
    # differences 0.3, 0.5, 0.4 (seed 9 exists on one side only: left out) -> mean 0.4, sd 0.1, se 0.1/sqrt(3)
    a = _arm({0: 1.3, 1: 1.5, 2: 1.4, 9: 7.0})
    b = _arm({0: 1.0, 1: 1.0, 2: 1.0})
    result = evaluate_claim(claim, a, b, b_is_base=False)
    half = student_t_quantile(0.975, 2) * 0.1 / 3 ** 0.5
    assert result.n_seeds == 3 and result.estimate == pytest.approx(0.4)
    assert (result.low, result.high) == (pytest.approx(0.4 - half), pytest.approx(0.4 + half))
    assert result.verdict == "reproduced"
    assert result.mde == pytest.approx((student_t_quantile(0.975, 2) + student_t_quantile(0.8, 2)) * 0.1 / 3 ** 0.5)
    flipped = driver.Claim("b beats a", "entropy", "a", "b", -1, "-")
    assert evaluate_claim(flipped, a, b, b_is_base=False).verdict == "not reproduced"
    noisy = _arm({0: 1.3, 1: 0.5, 2: 1.4})
    assert evaluate_claim(claim, noisy, b, b_is_base=False).verdict == "inconclusive"


def test_against_the_base_the_base_evaluation_noise_widens_the_interval():
    """b = the base (one evaluation, key -1): the variance over problems of mean_seeds(a) - base is added."""
    from drox.evaluation.aggregate import student_t_quantile
    from verdicts import BASE_SEED, evaluate_claim

    claim = driver.Claim("a beats the base", "eval/pass@1", "a", "base", +1, "-")
    base_p = [0.0, 0.5, 0.5, 1.0]  # mean 0.5
    a = _arm({0: 0.6, 1: 0.8}, {0: [0.2, 0.6, 0.6, 1.0], 1: [0.4, 0.8, 0.8, 1.2]})
    base = _arm({BASE_SEED: 0.5}, {BASE_SEED: base_p})
    result = evaluate_claim(claim, a, base, b_is_base=True)
    # per seed: 0.1, 0.3 -> var 0.02, v1 = 0.01; per problem mean_seeds(a) - base = 0.3, 0.2, 0.2, 0.1 -> var 1/150
    v1, v2 = 0.01, (1 / 150) / 4
    df = (v1 + v2) ** 2 / (v1 ** 2 / 1 + v2 ** 2 / 3)
    half = student_t_quantile(0.975, df) * (v1 + v2) ** 0.5
    assert result.estimate == pytest.approx(0.2)
    assert result.high - result.low == pytest.approx(2 * half)
    assert not np.isnan(result.boot_low)  # per-problem values on both sides: the hierarchical bootstrap ran


def test_the_base_on_the_left_is_the_mirror_of_the_base_on_the_right():
    """'the base catches up at large k' is base - arm > 0: the same statistics as arm - base < 0, negated."""
    from verdicts import BASE_SEED, evaluate_claim

    base = _arm({BASE_SEED: 0.5}, {BASE_SEED: [0.0, 0.5, 0.5, 1.0]})
    arm = _arm({0: 0.6, 1: 0.8}, {0: [0.2, 0.6, 0.6, 1.0], 1: [0.4, 0.8, 0.8, 1.2]})
    right = evaluate_claim(driver.Claim("arm above base", "eval/pass@1", "a", "base", +1, "-"), arm, base, True)
    left = evaluate_claim(driver.Claim("base above arm", "eval/pass@1", "base", "a", +1, "-"), base, arm, False,
                          a_is_base=True)
    assert (left.estimate, left.low, left.high) == (-right.estimate, -right.high, -right.low)
    assert (left.boot_low, left.boot_high) == (-right.boot_high, -right.boot_low)
    assert left.n_seeds == 2 and left.per_seed == {0: pytest.approx(-0.1), 1: pytest.approx(-0.3)}
    assert right.verdict == "inconclusive" and left.verdict == "inconclusive"  # 2 seeds, wide: the mirror agrees


def test_equivalence_claims_are_tested_by_tost_and_zero_spread_is_not_testable():
    from verdicts import evaluate_claim

    b = _arm({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})
    close = _arm({0: 1.01, 1: 0.99, 2: 1.02, 3: 0.995})
    match = driver.Claim("a matches b", "m", "a", "b", 0, "-", test="equivalence", margin=0.1)
    assert evaluate_claim(match, close, b, b_is_base=False).verdict == "reproduced"
    tight = driver.Claim("a matches b", "m", "a", "b", 0, "-", test="equivalence", margin=0.001)
    assert evaluate_claim(tight, close, b, b_is_base=False).verdict == "inconclusive"
    far = _arm({0: 1.5, 1: 1.52, 2: 1.49, 3: 1.51})
    assert evaluate_claim(match, far, b, b_is_base=False).verdict == "not reproduced"
    at_least = driver.Claim("a at least b", "m", "a", "b", +1, "-", test="equivalence", margin=0.1)
    assert evaluate_claim(at_least, far, b, b_is_base=False).verdict == "reproduced"  # far above: not inferior
    same = evaluate_claim(match, b, b, b_is_base=False)
    assert same.verdict == "not testable" and "same m in every seed" in same.reason
    with pytest.raises(ValueError, match="margin"):
        driver.Claim("x", "m", "a", "b", 0, "-", test="equivalence")


def test_a_control_that_does_not_resolve_blocks_every_verdict():
    from verdicts import BASE_SEED, control_status, evaluate_claim

    control = driver.Claim("control", "eval/pass@1", "grpo", "base", +1, "-")
    base = _arm({BASE_SEED: 0.30})
    good = _arm({0: 0.40, 1: 0.42, 2: 0.41})
    assert control_status(good, base, evaluate_claim(control, good, base, b_is_base=True)) is None
    one_below = _arm({0: 0.60, 1: 0.62, 2: 0.29})
    reason = control_status(one_below, base, evaluate_claim(control, one_below, base, b_is_base=True))
    assert reason.startswith("the positive control did not resolve: seed(s) 2 ended at or below the base")
    blocked = evaluate_claim(driver.Claim("x", "m", "a", "b", +1, "-"), good, good, False, blocked=reason)
    assert blocked.verdict == "not testable" and blocked.reason == reason


def test_the_claims_index_is_current():
    """experiments/README.md's index is what the committed results.md files say (driver.py index rewrites it)."""
    readme = (ROOT / "experiments" / "README.md").read_text()
    assert driver.index_markdown() in readme


def test_the_index_counts_claims_csv_verdicts_and_marks_old_tables(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "spec.py").write_text("")
    (tmp_path / "x" / "results.md").write_text(
        "# x\n\n## Ours\n\n| arm | m |\n|---|---|\n| a | 1 |\n\n" + driver.CLAIMS_HEADING + "\n\n"
        "| claim | paper | ours: difference (95% Welch interval) | verdict |\n|---|---|---|---|\n"
        "| A beats B | 67.1 vs 63.0 | m: a − b = +0.1 [-0.2, +0.4] | inconclusive |\n\nVerdict rule: ...\n")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "spec.py").write_text("")
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "spec.py").write_text("")
    (tmp_path / "z" / "results.md").write_text("# z\n")
    (tmp_path / "z" / "claims.csv").write_text(
        "claim,metric,arm_a,arm_b,direction,test,estimate,ci95_low,ci95_high,mde,n_seeds,verdict,reason\n"
        "C beats D,eval/pass@1,c,d,1,superiority,0.1,0.05,0.15,0.04,8,reproduced,both exclude 0\n"
        "C is E,eval/pass@1,c,e,0,equivalence,0.1,,,,1,not testable,1 seed\n")
    assert driver.claim_rows(tmp_path / "x" / "results.md") == [
        ["A beats B", "67.1 vs 63.0", "m: a − b = +0.1 [-0.2, +0.4]", "inconclusive"]]
    index = driver.index_markdown(tmp_path).splitlines()
    assert index[1] == ("Under the paired protocol: 1 reproduced, 0 not reproduced, 0 inconclusive, 1 not testable; "
                        "1 claims still from the old protocol.")
    assert index[5].startswith("| [x](x/results.md) | A beats B | 67.1 vs 63.0 | superiority (Welch) |")
    assert driver.OLD_PROTOCOL in index[5]
    assert index[6] == "| [y](y/README.md) | – | – | – | not run yet | – | – |"
    assert index[7].startswith("| [z](z/results.md) | C beats D |") and "[+0.050, +0.150], n=8 | reproduced |" in index[7]
    assert "= +0.100 [–, –], n=1 | not testable | 1 seed |" in index[8]


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


RERUN = ["positive_control", "positive_control_smollm2", "spurious", "rlcr", "nsr", "passk_limits", "one_shot", "entropy_8020", "dro", "dvao", "rubric_gate", "losses", "passk_training", "distillation",
         "prm_vs_variance"]
"""The tables rerun under the paired protocol. `make test` recomputes one of them (about 30 s each on 2 cores);
`make test-tables` recomputes every one."""


@pytest.mark.parametrize("name", [name if name == "dro" else pytest.param(name, marks=pytest.mark.tables)
                                  for name in RERUN])
def test_recompute_rebuilds_the_committed_table_byte_for_byte(name, tmp_path):
    """`driver.py <name> --recompute` rewrites results.md, table.csv and claims.csv from the committed runs/ alone
    (config, metrics, eval summaries, per-problem scores, provenance): no training, the same bytes."""
    committed = ROOT / "experiments" / name
    if not (committed / "runs" / "provenance.json").is_file():
        pytest.skip(f"{name} has no committed runs yet")
    import shutil

    shutil.copytree(committed / "runs", tmp_path / "runs")
    driver.recompute(name, tmp_path, plots=False)
    for file in ("results.md", "table.csv", "claims.csv"):
        assert (tmp_path / file).read_bytes() == (committed / file).read_bytes(), file


BASES = {"experiments/toy_base/": "toy_base", "experiments/toy_base_2op/": "toy_base_2op", "experiments/base_policy/": "base_policy",
         "experiments/base_policy_2op/": "base_policy_2op", "experiments/base_policy_conf/": "base_policy_conf"}


@pytest.mark.parametrize("name", ["positive_control", "positive_control_smollm2"] + NAMES)
def test_no_held_out_problem_was_in_the_bases_fine_tuning_data(name):
    """The base a table starts from was fine-tuned on the train split of its own SFT config; none of the table's
    held-out problems may be in it. (The train split excludes the first n_test problems of the test stream, so a
    base built with a smaller n_test than a table's evaluates on would have seen the rest: the toy base once had 52
    of its 128.)"""
    from drox.cli.main import compose
    from drox.tasks import build_task

    table = compose([f"experiment={name}"])
    base = next((sft for prefix, sft in BASES.items() if str(table.model.path or "").startswith(prefix)), None)
    if base is None:
        pytest.skip(f"{name} starts from {table.model.path or table.model.name}, not a base fine-tuned here")
    base_cfg = compose([f"experiment={base}"])
    if base_cfg.task.name != table.task.name:
        pytest.skip(f"{name} evaluates task={table.task.name}, its base was tuned on task={base_cfg.task.name}")
    tuned = set(build_task(base_cfg.task, split="train").dataset["prompt"])
    held_out = build_task(table.task, split="test").dataset["prompt"]
    assert not [p for p in held_out if p in tuned]
    dropped = set(table.task.test_exclude_ids or [])  # problems a table leaves out must be ones the base saw
    if dropped:
        whole = table.task.copy()
        whole.test_exclude_ids = None
        full = build_task(whole, split="test")
        assert {pid for pid, p in zip(full.dataset["problem_id"], full.dataset["prompt"]) if p in tuned} == dropped


def test_a_metric_at_last_n_is_the_mean_of_the_last_n_logged_steps(tmp_path):
    """``<metric>@last<N>``: the mean over the last N logged training steps (a step logged twice: the later line);
    None with fewer than N steps or for an eval metric."""
    import json

    lines = [{"step": 1, "share": 0.5}, {"step": 2, "share": 0.25}, {"step": 3, "share": 1.0},
             {"step": 3, "share": 0.75}, {"step": 4, "other": 1.0}, {"step": 5, "share": 0.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert driver._metric(tmp_path, "share@last1") == 0.0
    assert driver._metric(tmp_path, "share@last3") == (0.25 + 0.75 + 0.0) / 3
    assert driver._metric(tmp_path, "share@last4") == (0.5 + 0.25 + 0.75 + 0.0) / 4
    assert driver._metric(tmp_path, "share@last5") is None  # only 4 steps logged it
    assert driver._metric(tmp_path, "share") == 0.0  # the plain name is still the last value
    assert driver._metric(tmp_path, "eval/pass@1@last2") is None


# the data sets `drox data` writes (data/<dataset>/{train,test}.jsonl); the last three are named by the paper configs
DATASETS = {"math", "math500", "gsm8k", "deepscaler", "dapo17k", "finqa", "pararev", "bigmath", "hotpotqa", "aime24",
            "aime25", "amc23", "pi1", "minerva", "olympiadbench", "dsr_sub", "guru_math", "bigmath_digits"}


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_paper_config_reads_local_jsonl_and_names_a_paper_model(name):
    """Every paper-scale config trains and evaluates on local JSONL from `drox data` (data/<dataset>/<split>.jsonl),
    and names a model other than its CPU base."""
    import re

    from drox.cli.main import compose

    cpu, paper = compose([f"experiment={name}"]), compose([f"experiment={name}", "scale=paper"])
    assert paper.task.name == "jsonl", name
    for path, split in ((paper.task.path, "train"), (paper.task.test_path, "test")):
        match = re.fullmatch(r"data/([a-z0-9_]+)/(train|test)\.jsonl", str(path))
        assert match and match.group(1) in DATASETS and match.group(2) == split, (name, path)
    assert paper.model.path and paper.model.path != cpu.model.path, name
    assert paper.model.name == "hf" and paper.model.dtype == "bfloat16", name
    text = (ROOT / "conf" / "experiment_scale" / f"{name}_paper.yaml").read_text()
    assert text.startswith("# @package _global_\n"), name
    assert "not run at paper scale" in text, name


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_paper_config_builds_its_tasks_from_stand_in_files(name, tmp_path):
    """Every paper config's tasks build from stand-in files of the schema `drox data` writes (problem_id, prompt,
    answer), through the same task.path / task.test_path it names, with each arm's own overrides at paper scale
    (e.g. one_shot's full-set arm on DSR-sub)."""
    import json

    from drox.cli.main import compose
    from drox.tasks import build_task

    rows = [{"problem_id": f"p{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]
    exp = driver.load_spec(name)
    for arm in exp.arms:
        cfg = compose([f"experiment={name}", "scale=paper", *arm.overrides, *arm.paper], validate=False)
        stand_ins = {}
        for split, path in (("train", cfg.task.path), ("test", cfg.task.test_path)):
            local = tmp_path / arm.name / str(path)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text("".join(json.dumps(r) + "\n" for r in rows))
            stand_ins[split] = local
        cfg.task.path, cfg.task.test_path = str(stand_ins["train"]), str(stand_ins["test"])
        for split in ("train", "test"):
            task = build_task(cfg.task, split=split)
            assert len(task.dataset) == 6 and task.dataset[0]["answer"] == "0", (name, arm.name, split)
