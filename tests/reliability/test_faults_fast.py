"""Faults a run must survive or report in one line (issue 13's list), on the tiny model; the fast part of the
reliability suite (CI). Each test failed before its fix: the old behaviour is named in its docstring."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from drox.errors import ConfigError, NonFiniteError
from drox.trainers import loop
from drox.trainers.checkpoint import damaged, list_checkpoints, save_checkpoint
from drox.trainers.metrics import read_metrics, wandb_run_id

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_trainer import _strip_time, make_cfg  # noqa: E402  (the trainer tests' tiny config and reward)


@pytest.fixture
def compose_cfg():
    from drox.cli.main import compose

    return compose


def _crash_at(step_to_die: int, cfg, run_dir, monkeypatch):
    real_step = loop.train_step

    def dies(trainer, step):
        if step == step_to_die:
            raise KeyboardInterrupt("killed")
        return real_step(trainer, step)

    monkeypatch.setattr(loop, "train_step", dies)
    with pytest.raises(KeyboardInterrupt):
        loop.run_training(cfg, run_dir, progress=False)
    monkeypatch.setattr(loop, "train_step", real_step)


def test_resume_before_the_first_checkpoint_starts_a_clean_record(compose_cfg, tmp_path, monkeypatch):
    """Killed at step 3 with no checkpoint yet: the resumed run starts at step 0 and its metrics.jsonl and
    completions.jsonl hold steps 1..4 once each (before: the old lines were kept, steps 1-2 twice), equal to an
    uninterrupted run's."""
    cfg = make_cfg(compose_cfg, tmp_path / "crash", **{"trainer.save_every": 0})
    _crash_at(3, cfg, tmp_path / "crash", monkeypatch)
    assert list_checkpoints(tmp_path / "crash" / "checkpoints") == []
    assert [r["step"] for r in read_metrics(tmp_path / "crash" / "metrics.jsonl")] == [1, 2]
    cfg.resume = True
    loop.run_training(cfg, tmp_path / "crash", progress=False)
    crashed = read_metrics(tmp_path / "crash" / "metrics.jsonl")
    assert [r["step"] for r in crashed] == [1, 2, 3, 4]
    clean = make_cfg(compose_cfg, tmp_path / "clean", **{"trainer.save_every": 0})
    loop.run_training(clean, tmp_path / "clean", progress=False)
    assert _strip_time(crashed) == _strip_time(read_metrics(tmp_path / "clean" / "metrics.jsonl"))
    completions = read_metrics(tmp_path / "crash" / "completions.jsonl")
    assert sorted({r["step"] for r in completions}) == [1, 2, 3, 4]
    assert completions == read_metrics(tmp_path / "clean" / "completions.jsonl")


@pytest.mark.parametrize("damage", ["truncated weights", "missing state", "truncated state"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_last_whole_one(compose_cfg, tmp_path, monkeypatch, capsys,
                                                                      damage):
    """Before: a traceback from torch.load / safetensors. Now: resume from step 2 (said on the console) and
    end bit-identical to an uninterrupted run."""
    run = tmp_path / "run"
    cfg = make_cfg(compose_cfg, run, **{"trainer.steps": 6, "trainer.save_every": 2, "trainer.keep_checkpoints": 3})
    _crash_at(5, cfg, run, monkeypatch)
    newest = run / "checkpoints" / "step-000004"
    if damage == "truncated weights":
        weights = newest / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "missing state":
        (newest / "trainer_state.pt").unlink()
    else:
        state = newest / "trainer_state.pt"
        state.write_bytes(state.read_bytes()[:1000])
    assert damaged(newest) is not None and damaged(run / "checkpoints" / "step-000002") is None
    cfg.resume = True
    capsys.readouterr()
    loop.run_training(cfg, run, progress=False)
    out = " ".join(capsys.readouterr().out.split())
    assert "step-000004 is damaged" in out and "resuming from step-000002" in out
    clean = make_cfg(compose_cfg, tmp_path / "clean", **{"trainer.steps": 6, "trainer.save_every": 2})
    loop.run_training(clean, tmp_path / "clean", progress=False)
    assert _strip_time(read_metrics(run / "metrics.jsonl")) == _strip_time(read_metrics(tmp_path / "clean" /
                                                                                         "metrics.jsonl"))


def test_no_whole_checkpoint_left_is_one_line_naming_the_folder(compose_cfg, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = make_cfg(compose_cfg, run, **{"trainer.steps": 4, "trainer.save_every": 2})
    _crash_at(3, cfg, run, monkeypatch)
    (run / "checkpoints" / "step-000002" / "trainer_state.pt").unlink()
    cfg.resume = True
    with pytest.raises(ConfigError, match=r"step-000002 is damaged \(trainer_state.pt is missing\).*remove"):
        loop.run_training(cfg, run, progress=False)


def test_a_non_finite_gradient_stops_before_the_optimizer_step(compose_cfg, tmp_path, monkeypatch):
    """Before: NaN gradients were applied, the NaN weights checkpointed, and every later step (and resume)
    died with a raw traceback. Now: NonFiniteError naming the step, weights untouched, nothing saved."""
    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.steps": 2, "trainer.save_every": 1})
    seen = {}
    real_step = loop.train_step

    def spy(trainer, step):
        seen["weights"] = [p.detach().clone() for p in trainer.model.parameters()]
        seen["model"] = trainer.model
        return real_step(trainer, step)

    monkeypatch.setattr(loop, "train_step", spy)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteError, match=r"step 1: NaN in gradient norm"):
        loop.run_training(cfg, tmp_path / "run", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(seen["weights"], seen["model"].parameters()))
    assert list_checkpoints(tmp_path / "run" / "checkpoints") == []


def test_weights_made_non_finite_by_the_step_stop_the_run(compose_cfg, tmp_path):
    """An infinite learning rate turns finite gradients into inf/NaN weights: stopped at step 1, no checkpoint."""
    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.steps": 2, "trainer.save_every": 1,
                                                     "trainer.lr": "inf"})
    with pytest.raises(NonFiniteError, match=r"step 1: non-finite weights after the optimizer step \(trainer.lr=inf"):
        loop.run_training(cfg, tmp_path / "run", progress=False)
    assert list_checkpoints(tmp_path / "run" / "checkpoints") == []


def test_a_checkpoint_is_never_written_with_non_finite_weights(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    model = type(model)(model.config)  # a private copy to poison
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    with pytest.raises(NonFiniteError, match="non-finite weights at checkpoint time"):
        save_checkpoint(tmp_path / "checkpoints", 3, model, tokenizer, {"step": 3}, keep=2)
    assert not (tmp_path / "checkpoints" / "step-000003").exists()


def test_one_sample_per_prompt_with_a_group_baseline_is_refused(compose_cfg, tmp_path):
    from drox.pipeline import build_pipeline

    for estimator in ("grpo", "dr_grpo", "rloo", "none"):
        cfg = make_cfg(compose_cfg, tmp_path / "r", **{"trainer.advantage.estimator": estimator})
        cfg.trainer.samples_per_prompt = 1
        if estimator == "none":  # raw rewards (PSR/NSR) need no group
            build_pipeline(cfg)
            continue
        with pytest.raises(ConfigError, match=rf"samples_per_prompt=1 with trainer.advantage.estimator={estimator}"):
            build_pipeline(cfg)


def test_reusing_a_run_dir_is_refused_unless_resume_or_overwrite(compose_cfg, tmp_path):
    """Before: a second run appended a second "step 1" and overwrote the config."""
    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.steps": 1})
    loop.run_training(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"already holds a run; continue it with `drox train --resume"):
        loop.run_training(cfg, tmp_path / "run", progress=False)
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1]
    cfg.overwrite = True
    loop.run_training(cfg, tmp_path / "run", progress=False)
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1]


def test_a_damaged_metrics_line_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "x": 1 "y": 2}\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON line \(Expecting ',' delimiter"):
        read_metrics(path)


def test_a_partial_last_line_is_dropped_on_resume(tmp_path):
    """A kill in the middle of a write leaves half a line at the end: it belongs after the checkpoint."""
    from drox.trainers.metrics import _truncate_after

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "rew')
    _truncate_after(path, 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_resume_continues_the_same_wandb_run(tmp_path, monkeypatch):
    """Before: --resume started a second W&B run under the same name (no id was passed)."""
    import wandb

    from drox.trainers.metrics import MetricsLogger

    calls = []
    monkeypatch.setattr(wandb, "init", lambda **kw: calls.append(kw) or None)
    logger_cfg = OmegaConf.create({"wandb_mode": "offline", "project": "p", "run_name": None, "group": None,
                                   "tags": []})
    MetricsLogger(tmp_path, logger_cfg, {})
    MetricsLogger(tmp_path, logger_cfg, {}, resume_step=2, resume=True)
    assert calls[0]["id"] == calls[1]["id"] == wandb_run_id(tmp_path) == (tmp_path / "wandb_run_id").read_text().strip()
    assert calls[1]["resume"] == "allow"


@pytest.mark.parametrize("answer, expected", [({"value": 3}, "must be a string or a number .*got dict"),
                                              ([1, 2], "must be a string or a number .*got list"),
                                              ("  ", "is empty"), (None, "is null"),
                                              (True, "must be a string or a number .*got bool")])
def test_a_jsonl_answer_must_be_a_string_or_number(tmp_path, answer, expected):
    """Before: dicts and lists were stringified ("{'value': 3}") and trained on a reward that is never 1."""
    from drox.tasks import TaskError, build_task

    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"prompt": "1+1?", "answer": "2"}) + "\n" + json.dumps({"prompt": "x", "answer": answer}) + "\n")
    from drox.config import TaskConfig

    cfg = OmegaConf.merge(OmegaConf.structured(TaskConfig), {"name": "jsonl", "path": str(path)})
    with pytest.raises(TaskError, match=rf"data.jsonl line 2: field 'answer' {expected}"):
        build_task(cfg, split="train")


def test_checkpoint_weights_only_and_none(compose_cfg, tmp_path, monkeypatch, capsys):
    """trainer.checkpoint=weights drops the AdamW moments (resume warns and restarts them); =none saves nothing."""
    full = make_cfg(compose_cfg, tmp_path / "full", **{"trainer.steps": 2, "trainer.save_every": 2})
    loop.run_training(full, tmp_path / "full", progress=False)
    weights = make_cfg(compose_cfg, tmp_path / "weights", **{"trainer.steps": 2, "trainer.save_every": 2,
                                                             "trainer.checkpoint": "weights"})
    loop.run_training(weights, tmp_path / "weights", progress=False)
    state_full = torch.load(tmp_path / "full" / "checkpoints" / "step-000002" / "trainer_state.pt", weights_only=False)
    state_weights = torch.load(tmp_path / "weights" / "checkpoints" / "step-000002" / "trainer_state.pt",
                               weights_only=False)
    assert "optimizer" in state_full and "optimizer" not in state_weights
    assert set(state_full) - set(state_weights) == {"optimizer"}
    weights.resume, weights.trainer.steps = True, 3
    capsys.readouterr()
    loop.run_training(weights, tmp_path / "weights", progress=False)
    assert "holds no optimizer state" in " ".join(capsys.readouterr().out.split())
    assert [r["step"] for r in read_metrics(tmp_path / "weights" / "metrics.jsonl")] == [1, 2, 3]
    none = make_cfg(compose_cfg, tmp_path / "none", **{"trainer.steps": 1, "trainer.checkpoint": "none"})
    loop.run_training(none, tmp_path / "none", progress=False)
    assert not (tmp_path / "none" / "checkpoints").exists()


def test_one_kill_minus_nine_trial_resumes_bit_identical(tmp_path):
    """The fast part of `make test-reliability`'s kill loop: one real SIGKILL of a `drox train` subprocess."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import kill_loop

    results = kill_loop.run(trials=1, seed=3, out=tmp_path / "RELIABILITY.md")
    assert results[0]["ok"], results
    assert "1/1 trials bit-identical" in (tmp_path / "RELIABILITY.md").read_text()


def _raises(ctx, cfg):
    raise KeyError("no_such_field")


def _hangs(ctx, cfg):
    import time

    time.sleep(60)


def _register_faulty_sources():
    from drox.rewards.base import REWARD_SOURCES, register_reward
    from test_trainer import _Opts

    for name, fn in (("test_raises", _raises), ("test_hangs", _hangs)):
        if name not in REWARD_SOURCES:
            register_reward(name, _Opts)(fn)


def test_a_reward_source_that_raises_is_one_line_naming_it(compose_cfg, tmp_path):
    """Before: the user's exception surfaced as a traceback from inside the trainer."""
    from drox.rewards.base import RewardSourceError

    _register_faulty_sources()
    cfg = make_cfg(compose_cfg, tmp_path / "run", reward="test_raises", **{"trainer.steps": 1})
    with pytest.raises(RewardSourceError, match=r"^step 1: reward source 'test_raises' raised KeyError: 'no_such_field'"):
        loop.run_training(cfg, tmp_path / "run", progress=False)


def test_a_reward_source_that_hangs_is_cut_by_the_timeout(compose_cfg, tmp_path):
    import time

    from drox.rewards.base import RewardSourceError

    _register_faulty_sources()
    cfg = make_cfg(compose_cfg, tmp_path / "run", reward="test_hangs", **{"trainer.steps": 1,
                                                                         "trainer.reward_timeout": 0.5})
    start = time.monotonic()
    with pytest.raises(RewardSourceError, match=r"reward source 'test_hangs' took more than trainer.reward_timeout=0.5"):
        loop.run_training(cfg, tmp_path / "run", progress=False)
    assert time.monotonic() - start < 50  # cut, not slept out


@pytest.mark.parametrize("error, needle", [
    (PermissionError(13, "Permission denied", "/ro/run/checkpoints"), "/ro/run/checkpoints: Permission denied; choose a "
                                                                      "writable run_dir"),
    (OSError(30, "Read-only file system", "/mnt/ro/run"), "/mnt/ro/run: Read-only file system; choose a writable"),
    (OSError(28, "No space left on device", "/data/run"), "/data/run: No space left on device; no space left"),
])
def test_unwritable_folders_are_one_line_with_exit_2(error, needle, capsys):
    """Root ignores permissions, so the OS errors a user gets (a read-only parent, checkpoints/ not writable, a full
    disk) are raised directly here; before, they ended in tracebacks with exit code 1."""
    from drox.cli.hydra_entry import user_errors

    with pytest.raises(SystemExit) as stop:
        with user_errors():
            raise error
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err


def test_other_os_errors_are_not_swallowed():
    from drox.cli.hydra_entry import user_errors

    with pytest.raises(ConnectionResetError):
        with user_errors():
            raise ConnectionResetError(104, "Connection reset by peer")


def test_a_hanging_reward_source_can_be_cut_counted_and_scored_zero(compose_cfg, tmp_path):
    """trainer.reward_on_timeout=zero: the step goes on with the source's scores at 0 and the cut counted."""
    _register_faulty_sources()
    cfg = make_cfg(compose_cfg, tmp_path / "run", reward="test_hangs", **{
        "trainer.steps": 1, "trainer.reward_timeout": 0.5, "trainer.reward_on_timeout": "zero"})
    loop.run_training(cfg, tmp_path / "run", progress=False)
    row = read_metrics(tmp_path / "run" / "metrics.jsonl")[0]
    assert row["reward/test_hangs/timeouts"] == 1.0 and row["reward/test_hangs/mean"] == 0.0


def test_an_evaluation_folder_gets_its_summary_last(tmp_path, monkeypatch):
    """summary.json marks a finished evaluation (the experiment driver keeps such a folder when a table is run again),
    so it is renamed into place after every other file. Before: it came first, and a kill between it and
    per_problem.csv left a "finished" evaluation without its per-problem scores, which the table's bootstrap reads."""
    import os

    import pandas as pd

    from drox.cli.main import compose
    from drox.evaluation.runner import write_eval_folder

    order = []
    real_replace = os.replace

    def recording(src, dst, *args, **kwargs):
        order.append(Path(dst).name)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording)
    cfg = compose(["model=tiny", "eval.pass_at_k=[1,2]"], validate=False)
    per_problem = pd.DataFrame({"problem_id": ["a", "b"], "n": [2, 2], "c": [1, 0], "pass@1": [0.5, 0.0],
                                "pass@2": [1.0, 0.0]})
    write_eval_folder(tmp_path / "eval", cfg, {"pass@1": 0.25, "pass@2": 0.5, "n": 2}, per_problem,
                      [{"problem_id": "a", "correct": True}], title="t")
    assert order[-1] == "summary.json" and {"per_problem.csv", "samples.jsonl", "config.yaml"} <= set(order[:-1])
