"""Supervised RL (arXiv 2510.25992): the step-wise rows of ``task.srl=true`` (tasks/srl.py) and the step-similarity
reward (rewards/srl.py), by hand, plus two training steps on the tiny model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from doubles import CharTok, config_error, make_batch

from drox.rewards import srl as srl_mod
from drox.rewards.base import ScoringContext
from drox.tasks import TaskError, build_task


def test_step_similarity_by_hand():
    assert srl_mod.step_similarity("8 + 5 = 13", "8 + 5 = 13") == 1.0
    # "8 + 5 = 1" matches (9 characters of 10 on each side): 2 * 9 / 20
    assert srl_mod.step_similarity("8 + 5 = 12", "8 + 5 = 13") == pytest.approx(0.9)
    assert srl_mod.step_similarity("abc", "xyz") == 0.0
    # "7 - 2 = 5" vs "7 + 2 = 9": "7 " + " 2 = " match (2 + 5 = 7 characters of 9 each): 14 / 18
    assert srl_mod.step_similarity("7 - 2 = 5", "7 + 2 = 9") == pytest.approx(14 / 18)
    assert srl_mod.step_similarity("8 + 5 = 13", "8  +  5 = 13") == 1.0  # the expert's spaces are collapsed too


def test_the_policy_step_is_the_first_line_after_the_monologue():
    assert srl_mod.policy_step("\n  3 +  4 = 7\nthen more") == "3 + 4 = 7"
    assert srl_mod.policy_step("<think>hmm\n1 + 1 = 3</think>\n5 - 1 = 4", "think") == "5 - 1 = 4"
    assert srl_mod.policy_step("<think>only thoughts</think>  \n", "think") == ""
    assert srl_mod.policy_step("") == ""


def test_srl_rows_show_the_expert_prefix_and_keep_the_next_step(compose_cfg):
    cfg = compose_cfg("task.n_ops=2", "task.n_train=2", "task.srl=true")
    plain = build_task(compose_cfg("task.n_ops=2", "task.n_train=2").task, split="train").dataset.to_list()
    rows = build_task(cfg.task, split="train").dataset.to_list()
    assert len(rows) == 4  # two problems x two steps
    first, second = rows[0], rows[1]
    steps = plain[0]["steps"]
    assert first["problem_id"] == plain[0]["problem_id"] + "/step-0" and first["expert_step"] == steps[0]
    assert first["prompt"] == plain[0]["prompt"] + "\n\nWrite only the first step of the solution."
    assert second["prompt"] == (plain[0]["prompt"] + "\n\nThe solution so far:\n" + steps[0]
                                + "\n\nWrite only the next step.")
    assert second["expert_step"] == steps[1] and second["step_index"] == 1 and second["answer"] == plain[0]["answer"]
    test = build_task(cfg.task, split="test").dataset
    assert "expert_step" not in test.column_names  # evaluation stays on whole problems


def test_a_task_without_expert_steps_is_one_clear_error(compose_cfg):
    with pytest.raises(TaskError, match="task.srl=true needs expert steps"):
        build_task(compose_cfg("task=countdown", "task.n_train=4", "task.srl=true").task, split="train")


def test_srl_reward_scores_each_rollout_against_its_rows_expert_step():
    texts = ["8 + 5 = 13\nok", "8 + 5 = 12", "   \n", "3 - 1 = 2"]
    batch = make_batch(CharTok(), ["a", "b"], texts, 2)
    rows = [{"prompt": "a", "answer": "13", "expert_step": "8 + 5 = 13"},
            {"prompt": "b", "answer": "2", "expert_step": "3 - 1 = 2"}]
    ctx = ScoringContext(batch=batch, rows=rows, task=SimpleNamespace(name="t", verifier=None))
    out = srl_mod.srl(ctx, srl_mod.SRLConfig())
    assert out.seq.flatten().tolist() == pytest.approx([1.0, 0.9, -1.0, 1.0])
    assert out.diagnostics["exact_frac"] == 0.5 and out.diagnostics["no_step_frac"] == 0.25
    ctx.rows = [{"prompt": "a", "answer": "13"}, {"prompt": "b", "answer": "2"}]
    with pytest.raises(ValueError, match="task.srl=true"):
        srl_mod.srl(ctx, srl_mod.SRLConfig())


def test_srl_trains_on_the_tiny_model(compose_cfg, tmp_path):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg("task.n_ops=2", "task.srl=true", "rollout.max_new_tokens=8", f"run_dir={tmp_path}")
    cfg.reward = {"srl": {}}
    loop.run_training(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(-1.0 <= r["reward/srl/similarity_mean"] <= 1.0 for r in rows)


# ------------------------------------------------------------------ SRL then RLVR in one run (trainer.srl_steps)


def _curriculum_cfg(compose_cfg, run_dir, *extra):
    return compose_cfg("task.n_ops=2", "task.n_train=12", "trainer.steps=4", "trainer.srl_steps=2",
                       "trainer.prompts_per_step=2", "trainer.samples_per_prompt=2", "rollout.max_new_tokens=6",
                       "trainer.save_every=2", "trainer.lr=1e-3", f"run_dir={run_dir}", *extra)


@pytest.mark.parametrize("extra, message", [
    (("trainer.srl_steps=4",), "trainer.srl_steps=4 leaves no RLVR steps"),
    (("trainer.srl_steps=-1",), "trainer.srl_steps=-1 must be >= 0"),
    (("task.srl=true",), "set task.srl=false"),
])
def test_curriculum_config_errors_are_one_line(compose_cfg, tmp_path, capsys, extra, message):
    from conftest import TINY_OVERRIDES

    overrides = ["task.n_ops=2", "task.n_train=12", "trainer.steps=4", "trainer.srl_steps=2", *extra]
    assert message in config_error(capsys, [*TINY_OVERRIDES, *overrides])


def test_curriculum_pipeline_gives_reward_srl_to_the_first_stage_only(compose_cfg, tmp_path):
    from drox.pipeline import build_pipeline

    cfg = _curriculum_cfg(compose_cfg, tmp_path)
    cfg.reward = {"srl": {"fail_score": -0.5}, "format": {}}
    pipe = build_pipeline(cfg)
    assert list(pipe.srl_rewards) == ["srl"] and pipe.srl_rewards["srl"].fail_score == -0.5
    assert list(pipe.rewards) == ["format"]
    cfg.reward = {}
    pipe = build_pipeline(cfg)  # nothing configured: srl with its defaults, then the outcome reward
    assert pipe.srl_rewards["srl"].fail_score == -1.0 and list(pipe.rewards) == ["outcome"]


def test_curriculum_trains_srl_rows_then_whole_problems(compose_cfg, tmp_path):
    import json

    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = _curriculum_cfg(compose_cfg, tmp_path)
    loop.run_training(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all("reward/srl/mean" in r and "reward/outcome/mean" not in r for r in rows[:2])
    assert all("reward/outcome/mean" in r and "reward/srl/mean" not in r for r in rows[2:])
    shown = {}
    for line in (tmp_path / "completions.jsonl").read_text().splitlines():
        c = json.loads(line)
        shown.setdefault(c["step"], []).append(c["prompt"])
    assert all("Write only" in p for s in (1, 2) for p in shown[s])  # the expert's step-wise rows
    assert not any("Write only" in p for s in (3, 4) for p in shown[s])  # whole problems


def test_curriculum_resume_at_the_switch_matches_the_uninterrupted_run(compose_cfg, tmp_path, monkeypatch):
    from test_trainer import _strip_time, crash_at_step_3_then_resume

    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    loop.run_training(_curriculum_cfg(compose_cfg, tmp_path / "full"), tmp_path / "full", progress=False)
    left = crash_at_step_3_then_resume(_curriculum_cfg(compose_cfg, tmp_path / "crash"), tmp_path / "crash",
                                       monkeypatch)
    assert left == ["step-000002"]  # the kill came right after the last SRL step's checkpoint
    a = _strip_time(read_metrics(tmp_path / "full" / "metrics.jsonl"))
    b = _strip_time(read_metrics(tmp_path / "crash" / "metrics.jsonl"))
    assert [r["step"] for r in b] == [1, 2, 3, 4] and a == b
