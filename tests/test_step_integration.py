"""Gates, group filters (with refill), token filters and multi-objective combiners inside the trainer step."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from drox.rewards.base import REWARD_SOURCES, RewardOutput, register_reward
from drox.trainers import loop
from drox.trainers.metrics import read_metrics


@dataclass
class _Opts:
    weight: float = 1.0


def _alternating_groups(ctx, cfg):
    """Group q of generation batch b: all-equal scores when (b*Q + q) is even, mixed otherwise.

    Step-local call counter in ctx.state, so dynamic sampling sees a known pattern of
    degenerate groups: half of every batch is dropped and must be refilled.
    """
    Q, G = ctx.batch.num_groups, ctx.batch.group_size
    b = ctx.state.get("calls", 0)
    ctx.state["calls"] = b + 1
    seq = torch.zeros(Q, G)
    for q in range(Q):
        if (b * Q + q) % 2:
            seq[q, : G // 2] = 1.0
    return RewardOutput(seq=seq)


def _row_index(ctx, cfg):
    """A second objective with known within-group spread: the rollout's index in its group."""
    Q, G = ctx.batch.num_groups, ctx.batch.group_size
    return RewardOutput(seq=torch.arange(G, dtype=torch.float32).repeat(Q, 1))


for name, fn in (("test_alternating", _alternating_groups), ("test_row_index", _row_index)):
    if name not in REWARD_SOURCES:
        register_reward(name, _Opts)(fn)


def run(compose_cfg, tmp_path, *overrides, reward=None, steps=1):
    cfg = compose_cfg(f"run_dir={tmp_path}", f"trainer.steps={steps}", "trainer.save_every=0",
                      "trainer.prompts_per_step=4", "trainer.samples_per_prompt=4", *overrides)
    if reward is not None:
        cfg.reward = reward
    loop.run_training(cfg, tmp_path, progress=False)
    return read_metrics(tmp_path / "metrics.jsonl")[-1]


def test_dynamic_sampling_refills_to_a_full_batch(compose_cfg, tmp_path):
    m = run(compose_cfg, tmp_path, "+filter=dynamic_sampling", "filter.dynamic_sampling.metric=score",
            reward={"test_alternating": {}})
    # 2 of 4 groups survive per generation batch -> two batches fill Q=4
    assert m["filter/gen_batches"] == 2
    assert m["filter/kept_groups"] == 4
    assert m["filter/kept_frac"] == pytest.approx(0.5)
    assert m["tokens"] == m["loss_tokens"]  # 4 groups x 4 rollouts, all in the loss
    assert m["samples_seen"] == 2 * 4 * 4  # the refill's rollouts count as seen


def test_dynamic_sampling_stops_at_the_cap_with_a_warning(compose_cfg, tmp_path, capsys):
    m = run(compose_cfg, tmp_path, "+filter=dynamic_sampling", "filter.dynamic_sampling.metric=score",
            "filter.dynamic_sampling.max_gen_batches=1", reward={"test_alternating": {}})
    assert m["filter/gen_batches"] == 1 and m["filter/kept_groups"] == 2
    assert "kept 2/4 groups after max_gen_batches=1" in capsys.readouterr().err


def test_all_groups_filtered_skips_the_update(compose_cfg, tmp_path):
    # the tiny model never answers correctly: every group has accuracy 0 and is dropped
    m = run(compose_cfg, tmp_path, "+filter=dynamic_sampling", "filter.dynamic_sampling.max_gen_batches=2")
    assert m["skipped"] == 1.0 and m["filter/kept_groups"] == 0 and m["filter/gen_batches"] == 2


def test_entropy_filter_keeps_ceil_rho_of_loss_tokens(compose_cfg, tmp_path):
    m = run(compose_cfg, tmp_path, "+filter=entropy", "filter.entropy.rho=0.2", reward={"test_row_index": {}})
    import math

    assert m["loss_tokens"] == math.ceil(0.2 * m["tokens"])
    assert m["filter/entropy/kept_frac"] == pytest.approx(m["loss_tokens"] / m["tokens"])


def test_entropy_filter_micro_batch_scope_runs(compose_cfg, tmp_path):
    m = run(compose_cfg, tmp_path, "+filter=entropy", "filter.entropy.scope=micro_batch", "trainer.grad_accum=2",
            reward={"test_row_index": {}})
    assert m["grad_norm"] > 0


def test_rubric_gate_excludes_failing_rollouts_and_drops_all_fail_groups(compose_cfg, tmp_path):
    # the tiny model never writes \boxed{}: every rollout fails format_valid, every group is dropped
    m = run(compose_cfg, tmp_path, "+gate=rubric", "gate.rubric.checks=[format_valid]", reward={"test_row_index": {}})
    assert m["gate/rubric/pass_rate"] == 0.0 and m["skipped"] == 1.0
    # a length check every rollout passes keeps everything
    m = run(compose_cfg, tmp_path / "b", "+gate=rubric", "gate.rubric.checks=[length]", "gate.rubric.min_tokens=1",
            reward={"test_row_index": {}})
    assert m["gate/rubric/pass_rate"] == 1.0 and m["loss_tokens"] == m["tokens"]


def test_dvao_combiner_logs_effective_weights(compose_cfg, tmp_path):
    # row index has spread, outcome (always 0 on the tiny model) has none -> all weight on row index
    m = run(compose_cfg, tmp_path, "trainer.advantage.combine=dvao",
            reward={"outcome": {}, "test_row_index": {}})
    assert m["advantage/weight/outcome"] == 0.0
    assert m["advantage/weight/test_row_index"] == pytest.approx(1.0)
    # A_i = (i - 1.5) / sigma_pop([0,1,2,3]) -> max |A| = 1.5 / sqrt(1.25)
    assert m["advantage/abs_max"] == pytest.approx(1.5 / 1.25 ** 0.5, rel=1e-4)


def test_query_filter_with_variance_reward_runs(compose_cfg, tmp_path):
    m = run(compose_cfg, tmp_path, "+reward=variance", "+filter=query", "task=revise")
    assert 0 < m["filter/kept_frac"] <= 1.0
    assert "reward/variance/mean" in m


def test_offline_query_rounds_choose_the_prompts_sampled(compose_cfg, tmp_path):
    """Offline DRO rounds (before training, then every 2 steps) choose the prompts sampled."""
    over = ["+reward=variance", "+filter=query", "task=revise", "task.n_train=12", "filter.query.mode=offline",
            "filter.query.every=2", "filter.query.samples=2", "filter.query.top_k=null",
            "filter.query.drop_fraction=0.5", "trainer.save_every=2"]
    run(compose_cfg, tmp_path / "a", *over, steps=3)
    rounds = read_metrics(tmp_path / "a" / "filter_query.jsonl")
    assert [r["step"] for r in rounds] == [1, 3]  # before step 1 and before step 3
    # 12 prompts, hardness rule off, the lower half by sigma_max dropped; round 2 adds the carried 10%
    assert rounds[0]["round/scored"] == 12 and rounds[0]["round/kept"] == 6
    assert rounds[1]["round/selected"] == 6
    assert rounds[1]["round/kept"] == 6 + rounds[1]["round/carried_new"]
    samples = [json.loads(x) for x in (tmp_path / "a" / "completions.jsonl").read_text().splitlines()]
    assert samples  # training ran on the kept prompts
    state = torch.load(tmp_path / "a" / "checkpoints" / "step-000003" / "trainer_state.pt", weights_only=False)
    kept = state["sampler"]["indices"]
    assert kept is not None and len(kept) == rounds[1]["round/kept"]
    # the rounds are training cost: their rollouts (12 prompts x 2 traces each) count in samples_seen and their
    # seconds in time/elapsed of the step they precede (a step samples Q x G = 4 x 4 rollouts)
    steps = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["round/generated_rollouts"] for r in rounds] == [24.0, 24.0]
    assert [r["samples_seen"] for r in steps] == [24 + 16, 24 + 32, 24 + 32 + 24 + 16]
    assert steps[0]["time/elapsed"] >= rounds[0]["round/seconds"] + steps[0]["time/step"] - 1e-9
    assert steps[2]["time/elapsed"] - steps[1]["time/elapsed"] >= rounds[1]["round/seconds"] + steps[2]["time/step"] - 1e-9


def test_combiners_see_the_overlong_penalty_as_an_objective(compose_cfg, tmp_path):
    # every tiny-model rollout is truncated at 8 tokens: the same penalty for all -> zero DVAO weight
    m = run(compose_cfg, tmp_path, "trainer.advantage.combine=dvao",
            reward={"outcome": {}, "test_row_index": {}, "overlong": {"buffer": 4}})
    assert m["reward/overlong/mean"] == pytest.approx(-1.0)
    assert m["advantage/weight/overlong"] == 0.0
    assert m["advantage/weight/test_row_index"] == pytest.approx(1.0)


def test_entropy_mask_with_kl_and_several_updates_runs(compose_cfg, tmp_path):
    m = run(compose_cfg, tmp_path, "+filter=entropy", "trainer.kl_coef=0.1", "trainer.mu=2",
            reward={"test_row_index": {}})
    assert m["loss_tokens"] < m["tokens"] and m["kl"] >= 0.0
