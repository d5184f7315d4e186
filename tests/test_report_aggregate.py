"""`drox report`: run discovery, grouping, aggregation over seeds (Student t), tables, plots and the CLI.

The runs are hand-made folders (config.yaml, metrics.jsonl, eval/step-N/summary.json) whose values are chosen
so that every mean, std and interval below is worked out by hand.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from typer.testing import CliRunner

from drox.cli.main import app
from drox.evaluation.aggregate import (
    ReportError, build_report, default_group_keys, discover_runs, format_markdown, load_run,
    regularized_incomplete_beta, student_t_cdf, student_t_quantile, summarize_values, write_tables,
)

runner = CliRunner()

# t_{0.975, 2} in closed form (df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))), independent of the code under test
T975_DF2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Two learning rates x three seeds. reward/mean is logged at steps 1, 2, 3 (last = step 3); pass@1 at steps 0 and 3.
#   lr=1e-05: last reward 1, 2, 3 -> mean 2, std 1;   at step 2: 10, 20, 30 -> mean 20, std 10
#   lr=1e-06: last reward 4, 8, 6 -> mean 6, std 2;   at step 2: 40, 80, 60 -> mean 60, std 20
#   eval pass@1 at step 3: lr=1e-05: 0.25, 0.5, 0.75 -> mean 0.5, std 0.25;  lr=1e-06: 0.5 x3 -> std 0
LAST_REWARD = {1e-5: [1.0, 2.0, 3.0], 1e-6: [4.0, 8.0, 6.0]}
FINAL_PASS1 = {1e-5: [0.25, 0.5, 0.75], 1e-6: [0.5, 0.5, 0.5]}


def write_run(folder: Path, lr: float, seed: int, last_reward: float, final_pass1: float,
              extra_config: dict | None = None, steps=(1, 2, 3)) -> Path:
    """A drox train run folder with the layout the trainer writes."""
    folder.mkdir(parents=True)
    config = {"model": {"name": "tiny", "cache_dir": None}, "trainer": {"lr": lr, "steps": 3},
              "eval": {"pass_at_k": [1, 2]}, "logger": {"run_name": f"run-{seed}-{lr}", "tags": []},
              "reward": {}, "seed": seed, "run_dir": str(folder), "resume": False}
    config = OmegaConf.to_container(OmegaConf.merge(config, extra_config or {}))
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    lines = []
    for step in steps:
        reward = {1: 0.0, 2: 10 * last_reward, 3: last_reward}[step]
        lines.append({"step": step, "reward/mean": reward, "accuracy": reward / 100, "samples_seen": 8 * step,
                      "time/elapsed": 1.5 * step + seed})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_eval(folder / "eval" / "step-000000", pass1=0.125, pass2=0.25)
    write_eval(folder / "eval" / f"step-{steps[-1]:06d}", pass1=final_pass1, pass2=min(1.0, 2 * final_pass1))
    return folder


def write_eval(folder: Path, pass1: float, pass2: float, per_problem: bool = True) -> None:
    """summary.json (and a 4-problem per_problem.csv whose mean pass@1 is ``pass1``) as drox eval writes them."""
    folder.mkdir(parents=True)
    summary = {"pass@1": pass1, "pass@2": pass2, "maj@1": pass1, "maj@2": pass1, "n": 2, "num_problems": 4}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    if per_problem:
        rows = ["problem_id,n,c,pass@1,pass@2"]
        for i, shift in enumerate((-0.1, 0.1, -0.05, 0.05)):  # mean of the shifts is 0
            rows.append(f"p{i},2,1,{pass1 + shift},{pass2}")
        (folder / "per_problem.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A Hydra-multirun-shaped folder: multirun/<date>/<time>/0..5 (2 learning rates x 3 seeds)."""
    root = tmp_path / "multirun" / "2026-11-30" / "05-12-00"
    job = 0
    for lr in (1e-5, 1e-6):
        for seed in range(3):
            run = write_run(root / str(job), lr, seed, LAST_REWARD[lr][seed], FINAL_PASS1[lr][seed])
            hydra_dir = run / ".hydra"  # what Hydra writes beside each job: a config.yaml that is not a run
            hydra_dir.mkdir()
            (hydra_dir / "config.yaml").write_text("seed: 0\n")
            (hydra_dir / "overrides.yaml").write_text(f"- seed={seed}\n")
            job += 1
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return tmp_path / "multirun"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def find_row(rows: list[dict], **match) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def assert_stats(row: dict, mean: float, std: float, n: int, t: float) -> None:
    """mean, std and mean ± t·std/√n in a table.csv row, to 1e-9."""
    half = t * std / math.sqrt(n)
    assert float(row["mean"]) == pytest.approx(mean, abs=1e-9)
    assert float(row["std"]) == pytest.approx(std, abs=1e-9)
    assert float(row["ci95_low"]) == pytest.approx(mean - half, abs=1e-9)
    assert float(row["ci95_high"]) == pytest.approx(mean + half, abs=1e-9)
    assert int(row["n"]) == n


# ------------------------------------------------------------------------------------------------ Student t


@pytest.mark.parametrize("df, expected", [(1, 12.7062047), (2, 4.30265273), (4, 2.77644511), (30, 2.04227246)])
def test_t_quantile_known_values(df, expected):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.9999])
def test_t_quantile_closed_forms_for_one_and_two_df(p):
    # df = 1 is the Cauchy distribution: t = tan(pi (p - 1/2)); df = 2: t = (2p - 1) sqrt(2 / (1 - (2p - 1)^2))
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert student_t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (1 - (2 * p - 1) ** 2)), rel=1e-9)


def test_t_quantile_symmetry_and_cdf_inverse():
    assert student_t_quantile(0.5, 7) == 0.0
    assert student_t_quantile(0.025, 4) == pytest.approx(-2.77644511, abs=1e-6)
    assert student_t_cdf(student_t_quantile(0.8, 3.5), 3.5) == pytest.approx(0.8, abs=1e-12)
    assert student_t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)  # -> the normal quantile
    with pytest.raises(ValueError):
        student_t_quantile(1.0, 3)


def test_incomplete_beta_closed_forms():
    assert regularized_incomplete_beta(0.3, 1, 1) == pytest.approx(0.3, abs=1e-14)  # uniform
    assert regularized_incomplete_beta(0.3, 4, 1) == pytest.approx(0.3**4, abs=1e-14)  # x^a
    assert regularized_incomplete_beta(0.3, 1, 3) == pytest.approx(1 - 0.7**3, abs=1e-14)  # 1 - (1-x)^b
    assert regularized_incomplete_beta(0.5, 6.5, 6.5) == pytest.approx(0.5, abs=1e-14)  # symmetric
    assert regularized_incomplete_beta(0.0, 2, 3) == 0.0 and regularized_incomplete_beta(1.0, 2, 3) == 1.0


def test_summarize_values_by_hand():
    stats = summarize_values([1.0, 2.0, 3.0])
    assert (stats.mean, stats.std, stats.n) == (2.0, 1.0, 3)
    assert stats.ci95_low == pytest.approx(2 - T975_DF2 / math.sqrt(3), abs=1e-9)
    assert stats.ci95_high == pytest.approx(2 + T975_DF2 / math.sqrt(3), abs=1e-9)
    one = summarize_values([0.7])
    assert math.isnan(one.std) and one.ci95_low == one.ci95_high == one.mean == 0.7 and one.n == 1


# ------------------------------------------------------------------------------------------------ discovery


def test_multirun_folder_expands_to_its_jobs(sweep):
    runs = discover_runs([sweep])
    assert [p.name for p in runs] == [str(i) for i in range(6)]  # .hydra/ and the sweep folder are not runs
    assert all(p.parent.name == "05-12-00" for p in runs)
    # a run folder given directly is itself, and giving it twice lists it once
    one = sweep / "2026-11-30" / "05-12-00" / "3"
    assert discover_runs([one, one]) == [one]


def test_path_without_runs_is_an_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ReportError, match="no run folders found"):
        discover_runs([tmp_path / "empty"])
    with pytest.raises(ReportError, match="no such folder"):
        discover_runs([tmp_path / "missing"])


def test_eval_only_folder_without_config(tmp_path):
    write_eval(tmp_path / "evals" / "base", pass1=0.5, pass2=0.75, per_problem=False)
    run = load_run(tmp_path / "evals" / "base")
    assert run.config == {} and run.train == []
    report = build_report([tmp_path / "evals"])
    by_metric = {row.metric: row.stats for row in report.rows}
    assert by_metric["eval/pass@1"].mean == 0.5 and by_metric["eval/pass@2"].mean == 0.75
    assert report.group_keys == []


# ------------------------------------------------------------------------------------------------ grouping


def test_default_group_keys_leave_out_seed_run_dir_logger_and_own_paths(tmp_path):
    # model.cache_dir points into each run's own folder: per-run, so not a group key
    for i, (lr, seed) in enumerate([(1e-5, 0), (1e-5, 1), (1e-6, 0)]):
        folder = tmp_path / f"r{i}"
        write_run(folder, lr, seed, 1.0, 0.5, extra_config={"model": {"cache_dir": str(folder / "cache")}})
    runs = [load_run(p) for p in discover_runs([tmp_path])]
    assert runs[0].config["trainer.lr"] == 1e-5 and runs[0].config["model.name"] == "tiny"
    assert default_group_keys(runs) == ["trainer.lr"]


def test_a_key_missing_in_some_configs_is_a_group_key(tmp_path):
    write_run(tmp_path / "a", 1e-5, 0, 1.0, 0.5)
    write_run(tmp_path / "b", 1e-5, 0, 1.0, 0.5, extra_config={"reward": {"outcome": {"weight": 1.0}}})
    runs = [load_run(p) for p in discover_runs([tmp_path])]
    assert default_group_keys(runs) == ["reward.outcome.weight"]


# ------------------------------------------------------------------------------------------------ tables


def test_table_csv_two_groups_three_seeds(sweep, tmp_path):
    report = build_report([sweep], metrics=["reward/mean", "eval/pass@1"])
    assert report.group_keys == ["trainer.lr"] and [len(g.runs) for g in report.groups] == [3, 3]
    write_tables(report, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "table.csv")
    assert list(rows[0]) == ["trainer.lr", "metric", "mean", "std", "ci95_low", "ci95_high", "n"]
    assert len(rows) == 4
    assert_stats(find_row(rows, **{"trainer.lr": "1e-05", "metric": "reward/mean"}), 2.0, 1.0, 3, T975_DF2)
    assert_stats(find_row(rows, **{"trainer.lr": "1e-06", "metric": "reward/mean"}), 6.0, 2.0, 3, T975_DF2)
    assert_stats(find_row(rows, **{"trainer.lr": "1e-05", "metric": "eval/pass@1"}), 0.5, 0.25, 3, T975_DF2)
    assert_stats(find_row(rows, **{"trainer.lr": "1e-06", "metric": "eval/pass@1"}), 0.5, 0.0, 3, T975_DF2)


def test_table_md_line(sweep, tmp_path):
    report = build_report([sweep], metrics=["reward/mean"])
    write_tables(report, tmp_path / "out")
    text = (tmp_path / "out" / "table.md").read_text()
    assert text.splitlines()[0] == "| trainer.lr | metric | mean ± 95% CI | n |"
    # 2 ± 4.30265273 / sqrt(3) = 2 ± 2.48414...; 6 ± 4.30265273 * 2 / sqrt(3) = 6 ± 4.96828...
    assert "| 1e-05 | reward/mean | 2.0000 ± 2.4841 | 3 |" in text.splitlines()
    assert "| 1e-06 | reward/mean | 6.0000 ± 4.9683 | 3 |" in text.splitlines()
    assert text == format_markdown(report)


def test_one_run_per_group_has_no_spread(tmp_path):
    write_run(tmp_path / "a", 1e-5, 0, 3.5, 0.5)
    write_run(tmp_path / "b", 1e-6, 0, 7.0, 0.5)
    report = build_report([tmp_path], metrics=["reward/mean"])
    write_tables(report, tmp_path / "out")
    row = find_row(read_csv(tmp_path / "out" / "table.csv"), **{"trainer.lr": "1e-05"})
    assert row["std"] == ""  # undefined with one run
    assert float(row["mean"]) == float(row["ci95_low"]) == float(row["ci95_high"]) == 3.5
    assert row["n"] == "1"
    assert "| 1e-05 | reward/mean | 3.5000 | 1 |" in (tmp_path / "out" / "table.md").read_text().splitlines()


def test_at_step_picks_that_step(sweep, tmp_path):
    report = build_report([sweep], metrics=["reward/mean"], at_step=2)
    assert report.warnings == []
    write_tables(report, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "table.csv")
    assert_stats(find_row(rows, **{"trainer.lr": "1e-05"}), 20.0, 10.0, 3, T975_DF2)
    assert_stats(find_row(rows, **{"trainer.lr": "1e-06"}), 60.0, 20.0, 3, T975_DF2)
    # eval metrics come from eval/step-N: step 0 is the base model of every run
    base = build_report([sweep], metrics=["eval/pass@1"], at_step=0)
    assert [(r.stats.mean, r.stats.n) for r in base.rows] == [(0.125, 3), (0.125, 3)]


def test_at_step_missing_in_a_run_warns_and_leaves_it_out(tmp_path):
    for seed, value in enumerate([1.0, 2.0, 3.0]):
        write_run(tmp_path / f"s{seed}", 1e-5, seed, value, 0.5, steps=(1, 2, 3) if seed < 2 else (1, 3))
    report = build_report([tmp_path], metrics=["reward/mean"], at_step=2)
    assert len(report.warnings) == 1 and "s2" in report.warnings[0] and "step 2" in report.warnings[0]
    (row,) = report.rows
    assert (row.stats.mean, row.stats.n) == (15.0, 2)  # 10 and 20
    with pytest.raises(ReportError, match="at step 7"):
        build_report([tmp_path], metrics=["reward/mean"], at_step=7)


def test_default_metrics_and_eval_naming(sweep):
    report = build_report([sweep])
    assert report.metrics == ["eval/pass@1", "eval/pass@2", "eval/maj@1", "eval/maj@2", "reward/mean", "accuracy"]


def test_group_by_override_and_unknown_names(sweep):
    report = build_report([sweep], group_by=["seed"], metrics=["reward/mean"])
    assert report.group_keys == ["seed"]
    assert [(g.values, r.stats.mean) for g, r in zip(report.groups, report.rows)] == [
        ((0,), 2.5), ((1,), 5.0), ((2,), 4.5)]  # seed 0: 1 and 4; seed 1: 2 and 8; seed 2: 3 and 6
    pooled = build_report([sweep], group_by=[], metrics=["reward/mean"])
    assert len(pooled.rows) == 1 and pooled.rows[0].stats.n == 6 and pooled.rows[0].stats.mean == 4.0
    with pytest.raises(ReportError, match="no run's config has the key 'trainer.nope'"):
        build_report([sweep], group_by=["trainer.nope"])
    with pytest.raises(ReportError, match="unknown metric 'reward/nope'"):
        build_report([sweep], metrics=["reward/nope"])


# ------------------------------------------------------------------------------------------------ plots


def test_plots_are_png(sweep, tmp_path):
    from drox.evaluation.plots import write_plots

    report = build_report([sweep], metrics=["reward/mean", "eval/pass@1"])
    paths = write_plots(report, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["curves_samples.png", "curves_step.png", "curves_time.png", "passk.png"]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_curve_points_mean_and_min_max_band(sweep):
    from drox.evaluation.plots import _group_curve

    report = build_report([sweep], metrics=["reward/mean"])
    (group,) = [g for g in report.groups if g.values == (1e-5,)]
    x, mean, low, high = _group_curve(group.runs, "reward/mean", "time/elapsed")
    # time/elapsed = 1.5 step + seed, seeds 0..2: the mean x at step s is 1.5 s + 1
    assert x == pytest.approx([2.5, 4.0, 5.5])
    assert mean == pytest.approx([0.0, 20.0, 2.0]) and low == [0.0, 10.0, 1.0] and high == [0.0, 30.0, 3.0]


def test_one_seed_passk_band_is_a_bootstrap_over_problems(tmp_path):
    from drox.evaluation.plots import _bootstrap_band, _read_per_problem

    write_run(tmp_path / "r", 1e-5, 0, 1.0, 0.5)
    per_problem = _read_per_problem(tmp_path / "r" / "eval" / "step-000003" / "per_problem.csv", [1, 2])
    assert per_problem[1] == pytest.approx([0.4, 0.6, 0.45, 0.55])
    band = _bootstrap_band(per_problem, [1, 2])
    low, high = band[1]
    assert 0.4 <= low < 0.5 < high <= 0.6
    assert band[2] == (1.0, 1.0)  # every problem has pass@2 = 1
    assert _bootstrap_band(per_problem, [1, 2]) == band  # seeded


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_writes_report(sweep, tmp_path):
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", str(sweep), "--metric", "reward/mean,eval/pass@1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("table.csv", "table.md", "curves_step.png", "passk.png"):
        assert (out / name).is_file(), name
    assert "| 1e-05 | reward/mean | 2.0000 ± 2.4841 | 3 |" in result.output  # the Markdown table is printed
    assert_stats(find_row(read_csv(out / "table.csv"), **{"trainer.lr": "1e-06", "metric": "reward/mean"}),
                 6.0, 2.0, 3, T975_DF2)


def test_cli_default_out_and_options(sweep):
    result = runner.invoke(app, ["report", str(sweep), "--group-by", "trainer.lr", "--metric", "reward/mean",
                                 "--at-step", "2"])
    assert result.exit_code == 0, result.output
    rows = read_csv(sweep / "report" / "table.csv")
    assert [(r["trainer.lr"], float(r["mean"])) for r in rows] == [("1e-06", 60.0), ("1e-05", 20.0)]


@pytest.mark.parametrize("args, message", [
    ([], "no run folders found"),
    (["--metric", "nope"], "unknown metric 'nope'"),
    (["--group-by", "nope.key"], "no run's config has the key 'nope.key'"),
])
def test_cli_errors_are_one_line(sweep, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    target = tmp_path / "empty" if not args else sweep
    result = runner.invoke(app, ["report", str(target), *args])
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert out.startswith("error:") and message in out and "Traceback" not in out
    assert len(out.splitlines()) == 1


# ------------------------------------------------------------------------------------------------ W&B labels


def test_sweep_labels_name_and_tags():
    from drox.cli.hydra_entry import sweep_labels

    name, tags = sweep_labels(["model=tiny", "trainer.lr=1e-5", "seed=1"],
                              ["-m", "model=tiny", "trainer.lr=1e-5,1e-6", "seed=0,1,2"])
    assert name == "trainer.lr=1e-5,seed=1" and tags == ["trainer.lr=1e-5", "seed=1"]
    assert sweep_labels(["model=tiny"], ["-m", "model=tiny"]) == ("model=tiny", [])
