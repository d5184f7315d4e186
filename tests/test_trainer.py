"""The GRPO trainer on the tiny model: outputs, learning direction, determinism, exact resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from drox.rewards.base import REWARD_SOURCES, RewardOutput, register_reward
from drox.trainers import loop
from drox.errors import NonFiniteError
from drox.trainers.checkpoint import latest_checkpoint, list_checkpoints
from drox.trainers.metrics import read_metrics


@dataclass
class _Opts:
    weight: float = 1.0


def _low_half(ctx, cfg):
    """Fraction of response tokens whose id is in the lower half of the vocabulary.

    A random tiny model scores about 0.5; a policy gradient with the right sign pushes it up.
    """
    ids, mask = ctx.batch.response_ids, ctx.batch.response_mask
    vocab = ctx.tokenizer.vocab_size if hasattr(ctx.tokenizer, "vocab_size") else len(ctx.tokenizer)
    low = ((ids < vocab // 2).float() * mask).sum(-1) / mask.sum(-1).clamp_min(1)
    return RewardOutput(seq=low.view(ctx.batch.num_groups, ctx.batch.group_size))


def _nan_at_step_2(ctx, cfg):
    seq = torch.zeros(ctx.batch.num_groups, ctx.batch.group_size)
    if ctx.step == 2:
        seq[0, 1] = float("nan")
    return RewardOutput(seq=seq)


for name, fn in (("test_low_half", _low_half), ("test_nan", _nan_at_step_2)):
    if name not in REWARD_SOURCES:
        register_reward(name, _Opts)(fn)


@pytest.fixture
def compose_cfg():
    from drox.cli.main import compose

    return compose


def make_cfg(compose_cfg, run_dir: Path, reward: str = "test_low_half", **overrides):
    cfg = compose_cfg([
        "model=tiny", "logger.wandb_mode=disabled", "trainer.steps=4", "trainer.prompts_per_step=2",
        "trainer.samples_per_prompt=4", "rollout.max_new_tokens=6", "trainer.lr=1e-3", "trainer.save_every=2",
        "task.n_train=40", "task.n_test=4", f"run_dir={run_dir}",
        *[f"{k}={v}" for k, v in overrides.items()],
    ])
    cfg.reward = {reward: {}}
    return cfg


def crash_at_step_3_then_resume(cfg, run_dir, monkeypatch):
    """Run ``cfg`` until a simulated kill at the start of step 3, then resume it to the end."""
    real_step = loop.train_step

    def dies_at_3(trainer, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return real_step(trainer, step)

    monkeypatch.setattr(loop, "train_step", dies_at_3)
    with pytest.raises(KeyboardInterrupt):
        loop.run_training(cfg, run_dir, progress=False)
    checkpoints = [p.name for p in list_checkpoints(run_dir / "checkpoints")]
    monkeypatch.setattr(loop, "train_step", real_step)
    cfg.resume = True
    loop.run_training(cfg, run_dir, progress=False)
    return checkpoints


def _strip_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_run_writes_every_output_and_changes_every_parameter(compose_cfg, tmp_path):
    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.steps": 2})
    from drox.models.loading import load_policy

    before, _ = load_policy(cfg.model)
    metrics = loop.run_training(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    assert OmegaConf.load(run / "config.yaml").trainer.steps == 2
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/mean", "reward/std", "reward/test_low_half/mean", "accuracy", "advantage/std", "loss",
                "clip_frac", "entropy", "response_length/mean", "tokens", "time/generate", "time/score",
                "time/update", "samples_seen"):
        assert key in rows[0], key
    assert rows[1]["samples_seen"] == 2 * 2 * 4
    completions = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    assert len(completions) == 2 * 4 and {"prompt", "completion", "reward"} <= set(completions[0])
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt.name == "step-000002"
    assert (ckpt / "config.json").is_file() and (ckpt / "trainer_state.pt").is_file()
    assert (ckpt / "tokenizer.json").is_file() or (ckpt / "tokenizer_config.json").is_file()
    # every parameter tensor moved (TRL's test): the loss reaches all of them
    after, _ = load_policy(OmegaConf.merge(cfg.model, {"name": "hf", "path": str(ckpt)}))
    after_params = dict(after.named_parameters())
    for name, p in before.named_parameters():
        assert not torch.equal(p, after_params[name]), f"{name} did not change"
    assert metrics["reward/mean"] == rows[-1]["reward/mean"]


def test_reward_rises_and_falls_with_flipped_sign(compose_cfg, tmp_path, monkeypatch):
    """The policy gradient must increase the reward; flipping the advantage sign must decrease it.

    A low sampling temperature makes the random tiny model's near-uniform distribution peaked
    enough that reinforcing the sampled tokens moves the reward within a few steps.
    """
    cfg = make_cfg(compose_cfg, tmp_path / "up", **{"trainer.steps": 8, "trainer.lr": 1e-2, "trainer.save_every": 0,
                                                      "rollout.temperature": 0.1})
    loop.run_training(cfg, tmp_path / "up", progress=False)
    up = [r["reward/mean"] for r in read_metrics(tmp_path / "up" / "metrics.jsonl")]

    real = loop.algos.compute_advantages
    monkeypatch.setattr(loop.algos, "compute_advantages", lambda *a, **k: -real(*a, **k))
    cfg.run_dir = str(tmp_path / "down")
    loop.run_training(cfg, tmp_path / "down", progress=False)
    down = [r["reward/mean"] for r in read_metrics(tmp_path / "down" / "metrics.jsonl")]
    assert up[0] == down[0]  # same first batch: only the update differs
    assert sum(up[-3:]) / 3 > 0.9, up  # from about 0.5
    assert sum(down[-3:]) / 3 < 0.2, down


def test_same_seed_same_metrics_different_seed_differs(compose_cfg, tmp_path):
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = make_cfg(compose_cfg, tmp_path / name, **{"trainer.steps": 2, "seed": seed})
        loop.run_training(cfg, tmp_path / name, progress=False)
        runs.append(_strip_time(read_metrics(tmp_path / name / "metrics.jsonl")))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_crash_then_resume_matches_uninterrupted_run(compose_cfg, tmp_path, monkeypatch):
    full = make_cfg(compose_cfg, tmp_path / "full")
    loop.run_training(full, tmp_path / "full", progress=False)

    crashed = make_cfg(compose_cfg, tmp_path / "crash")
    left = crash_at_step_3_then_resume(crashed, tmp_path / "crash", monkeypatch)
    assert left == ["step-000002"]  # what the kill left behind: the step-2 checkpoint only

    a = _strip_time(read_metrics(tmp_path / "full" / "metrics.jsonl"))
    b = _strip_time(read_metrics(tmp_path / "crash" / "metrics.jsonl"))
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a == b
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "full/checkpoints/step-000004/model.safetensors"))
    wb = load_file(str(tmp_path / "crash/checkpoints/step-000004/model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_half_written_checkpoint_is_ignored_and_cleaned(compose_cfg, tmp_path):
    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.steps": 2})
    loop.run_training(cfg, tmp_path / "run", progress=False)
    root = tmp_path / "run" / "checkpoints"
    stale = root / ".tmp-step-000004-abc"  # what a kill during save leaves behind
    stale.mkdir()
    (stale / "config.json").write_text("{")
    assert latest_checkpoint(root).name == "step-000002"
    cfg.resume = True
    cfg.trainer.steps = 3
    loop.run_training(cfg, tmp_path / "run", progress=False)
    assert not stale.exists()
    assert latest_checkpoint(root).name == "step-000003"


def test_nan_reward_stops_with_step_and_source(compose_cfg, tmp_path):
    cfg = make_cfg(compose_cfg, tmp_path / "run", reward="test_nan")
    with pytest.raises(NonFiniteError, match=r"step 2: NaN in rewards \(source 'test_nan'\)"):
        loop.run_training(cfg, tmp_path / "run", progress=False)


def test_kl_is_zero_on_first_step_then_positive(compose_cfg, tmp_path):
    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.steps": 3, "trainer.kl_coef": 0.1})
    loop.run_training(cfg, tmp_path / "run", progress=False)
    kl = [r["kl"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert abs(kl[0]) < 1e-6  # the reference is the initial policy
    assert kl[2] > 1e-6


def test_multiple_updates_per_batch_move_the_ratio(compose_cfg, tmp_path):
    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.steps": 1, "trainer.mu": 2,
                                                       "trainer.mini_batches": 2, "trainer.grad_accum": 2})
    m = loop.run_training(cfg, tmp_path / "run", progress=False)
    # the first mini-batch is on-policy; later ones see an updated policy, so ratios leave 1
    assert m["ratio_max"] > 1.0 + 1e-4


@pytest.mark.parametrize("option", ["trainer.bf16=true", "trainer.gradient_checkpointing=true"])
def test_gpu_options_run_on_cpu(compose_cfg, tmp_path, option):
    key, value = option.split("=")
    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.steps": 1, key: value})
    m = loop.run_training(cfg, tmp_path / "run", progress=False)
    assert m["grad_norm"] > 0


def test_lora_trains_only_adapters_and_saves_a_mergeable_adapter(compose_cfg, tmp_path):
    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.steps": 1, "trainer.lora_r": 4})
    m = loop.run_training(cfg, tmp_path / "run", progress=False)
    assert m["grad_norm"] > 0
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert (ckpt / "adapter_config.json").is_file() and not (ckpt / "model.safetensors").exists()
    from peft import PeftModel

    from drox.models.loading import load_policy

    base, _ = load_policy(cfg.model)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    merged = PeftModel.from_pretrained(base, str(ckpt)).merge_and_unload()
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, base_state[k])]
    assert changed and all("proj" in k for k in changed)
    # `drox eval --checkpoint` on the adapter: base model from the run's config.yaml, adapter merged
    from typer.testing import CliRunner

    from drox.cli.main import app

    result = CliRunner().invoke(app, ["eval", "--pass-at-k", "1", "--num-problems", "2", "--checkpoint", str(ckpt),
                                      "--out", str(tmp_path / "ev"), "eval.max_new_tokens=4"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["num_problems"] == 2


def test_cli_multirun_sweep_gives_one_directory_per_run_and_logs_wandb_offline(tmp_path):
    """`drox train -m seed=0,1` through the real CLI (typer -> @hydra.main), W&B in offline mode."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "drox.cli.main", "train", "-m", "model=tiny", "trainer.steps=1",
           "trainer.prompts_per_step=2", "trainer.samples_per_prompt=2", "rollout.max_new_tokens=4",
           "task.n_train=8", "task.n_test=2", "logger.wandb_mode=offline", "seed=0,1"]
    env = {**os.environ, "WANDB_SILENT": "true"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = sorted(p.parent for p in (tmp_path / "multirun").glob("*/*/*/metrics.jsonl"))
    assert [p.name for p in runs] == ["0", "1"]
    seeds = [OmegaConf.load(p / "config.yaml").seed for p in runs]
    assert seeds == [0, 1]
    for p in runs:
        assert list((p / "wandb").glob("offline-run-*")), "W&B offline run missing"
        assert read_metrics(p / "metrics.jsonl")[0]["step"] == 1


def test_cli_resume_continues_a_finished_run_to_more_steps(compose_cfg, tmp_path):
    """`drox train --resume DIR trainer.steps=3` reuses DIR/config.yaml and continues from step 2."""
    from typer.testing import CliRunner

    from drox.cli.main import app

    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.steps": 2})
    loop.run_training(cfg, tmp_path / "run", progress=False)
    # the reward source is test-only, so the saved config names it; the registry above still has it
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "run"), "trainer.steps=3"])
    assert result.exit_code == 0, result.output
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[2]["samples_seen"] == 3 * 2 * 4  # totals carried over from the checkpoint
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-000003"
    missing = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no config.yaml" in missing.output


@pytest.mark.parametrize("policy", ["lagged", "reference"])
def test_resume_keeps_the_reward_policy_of_the_uninterrupted_run(compose_cfg, tmp_path, monkeypatch, policy):
    """DRO's lagged/reference reward policy survives a crash + resume: same R3 rewards as without it.

    lagged (lag 3): the copy made at step 1 is checkpointed at step 2 and must still score step 3;
    reference: the initial policy, rebuilt from the base config, not a copy of the resumed policy.
    """
    opts = {"variance": {"reward_policy": policy, "lag_steps": 3}}
    results = []
    for name, crash in (("full", False), ("crash", True)):
        cfg = make_cfg(compose_cfg, tmp_path / name, **{"task.name": "revise", "task.verifier": "none",
                                                         "task.prompt_suffix": ""})
        cfg.reward = opts
        if crash:
            crash_at_step_3_then_resume(cfg, tmp_path / name, monkeypatch)
        else:
            loop.run_training(cfg, tmp_path / name, progress=False)
        results.append([r["reward/variance/mean"] for r in read_metrics(tmp_path / name / "metrics.jsonl")])
    assert len(results[0]) == 4
    assert results[0] == results[1]


def test_time_budget_stops_after_the_step_that_spends_it_and_finishes_like_a_last_step(compose_cfg, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
    import driver

    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.time_budget": 1e-6, "trainer.eval_every": 4,
                                                     "eval.n": 2, "eval.pass_at_k": "[1]", "eval.num_problems": 2})
    loop.run_training(cfg, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1] and rows[0]["time/budget_spent"] == 1.0  # any step spends 1 us
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-000001"
    assert (tmp_path / "run" / "eval" / "step-000001" / "summary.json").is_file()  # evaluated as a last step
    assert driver._finished(tmp_path / "run", 4)  # the table driver keeps it on a rerun
    assert not driver._finished(tmp_path / "missing", 4)

    cfg = make_cfg(compose_cfg, tmp_path / "long", **{"trainer.time_budget": 1e9, "trainer.steps": 2})
    loop.run_training(cfg, tmp_path / "long", progress=False)
    rows = read_metrics(tmp_path / "long" / "metrics.jsonl")
    assert [(r["step"], r["time/budget_spent"]) for r in rows] == [(1, 0.0), (2, 0.0)]


def test_negative_time_budget_is_one_line(capsys):
    from conftest import TINY_OVERRIDES
    from doubles import config_error

    assert config_error(capsys, [*TINY_OVERRIDES, "trainer.time_budget=-1"]) == \
        "error: trainer.time_budget=-1.0 must be >= 0"
