"""Effective rank of hidden states (Roy & Vetterli 2007; VERL arXiv 2509.23808; models/effective_rank.py):
hand-computed values, the padded batch equal to each response run alone, and the metric in drox eval and in
training."""

from __future__ import annotations

import math

import pytest
import torch

from drox.models.effective_rank import effective_rank, response_effective_ranks, response_hidden_states


def test_singular_values_3_and_1_by_hand():
    """s = (3, 1): p = (0.75, 0.25), H = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.562335, erank = e^H = 1.754765."""
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(1.754765, abs=1e-6)
    # rotations on either side keep the singular values, so the value: a 5 x 3 matrix with s = (3, 1, 0)
    q_left, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    q_right, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    sigma = torch.zeros(5, 3, dtype=torch.float64)
    sigma[0, 0], sigma[1, 1] = 3.0, 1.0
    assert effective_rank(q_left @ sigma @ q_right.T) == pytest.approx(1.754765, abs=1e-6)


def test_extremes_rank_one_flat_and_empty():
    u, v = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.5, 0.0, 3.0, 1.0])
    assert effective_rank(torch.outer(u, v)) == pytest.approx(1.0, abs=1e-6)  # one direction
    assert effective_rank(torch.eye(4) * 7.0) == pytest.approx(4.0, abs=1e-9)  # four equal singular values
    assert effective_rank(torch.ones(1, 6)) == pytest.approx(1.0)  # a one-token response
    assert math.isnan(effective_rank(torch.zeros(3, 4))) and math.isnan(effective_rank(torch.zeros(0, 4)))
    # sigma-normalised, not sigma^2: s = (2, 1, 1) gives p = (0.5, 0.25, 0.25), H = 1.5 ln 2, erank = 2^1.5
    assert effective_rank(torch.diag(torch.tensor([2.0, 1.0, 1.0]))) == pytest.approx(2 ** 1.5, abs=1e-9)


def test_a_padded_batch_gives_each_response_its_own_rank(tiny_policy):
    """Rows of different prompt and response lengths, left/right padded together, give the ranks of each
    (prompt, response) run alone without padding: positions and masks are handled."""
    model, _ = tiny_policy
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 100, (n,), generator=g) for n in (3, 5)]
    responses = [torch.randint(5, 100, (n,), generator=g) for n in (6, 2)]
    P, T = 5, 6
    prompt_ids = torch.zeros(2, P, dtype=torch.long)
    prompt_mask = torch.zeros(2, P, dtype=torch.long)
    response_ids = torch.zeros(2, T, dtype=torch.long)
    response_mask = torch.zeros(2, T, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        prompt_ids[i, P - len(p):], prompt_mask[i, P - len(p):] = p, 1
        response_ids[i, : len(r)], response_mask[i, : len(r)] = r, 1
    ranks = response_effective_ranks(model, prompt_ids, prompt_mask, response_ids, response_mask, rows_per_pass=2)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids = torch.cat([p, r])[None]
        with torch.no_grad():
            alone = model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state[0, len(p):].float()
        assert ranks[i].item() == pytest.approx(effective_rank(alone), rel=1e-4)
        assert 1.0 <= ranks[i].item() <= len(r)
    hidden = response_hidden_states(model, prompt_ids, prompt_mask, response_ids, response_mask)
    assert hidden.shape == (2, T, model.config.hidden_size) and hidden[1, 2:].abs().sum() == 0  # padding is 0
    # one row per pass gives the same numbers as both rows in one pass
    one_by_one = response_effective_ranks(model, prompt_ids, prompt_mask, response_ids, response_mask,
                                          rows_per_pass=1)
    assert torch.allclose(ranks, one_by_one, rtol=1e-5)


def test_drox_eval_reports_it_per_sample_and_by_correctness(compose_cfg, tiny_policy):
    from drox.evaluation.runner import effective_rank_summary, evaluate_policy, eval_config_record
    from drox.rollout.hf import build_engine
    from drox.tasks import build_task

    cfg = compose_cfg("eval.n=2", "eval.pass_at_k=[1,2]", "eval.effective_rank=true", "eval.max_new_tokens=8")
    model, tokenizer = tiny_policy
    task = build_task(cfg.task, split="test")
    engine = build_engine(cfg.rollout, model, tokenizer, cfg.model)
    summary, _, records = evaluate_policy(cfg, engine, task, model=model, tokenizer=tokenizer, progress=False)
    values = [r["effective_rank"] for r in records]
    assert len(values) == 2 * len(task.dataset) and all(1.0 <= v <= 8.0 for v in values if not math.isnan(v))
    assert summary["effective_rank/mean"] == pytest.approx(sum(values) / len(values))
    assert eval_config_record(cfg)["effective_rank"] is True
    with pytest.raises(ValueError, match="eval.effective_rank reads the policy's hidden states"):
        evaluate_policy(cfg, engine, task, progress=False)
    # the split by correctness, by hand
    split = effective_rank_summary([{"effective_rank": 2.0, "correct": True}, {"effective_rank": 4.0,
                                    "correct": False}, {"effective_rank": 3.0, "correct": False},
                                    {"effective_rank": math.nan, "correct": True}])
    assert split == {"effective_rank/mean": 3.0, "effective_rank/correct": 2.0, "effective_rank/incorrect": 3.5}


def test_training_logs_it_every_step_and_it_changes_nothing_else(compose_cfg, tmp_path):
    """trainer.effective_rank is a metric: the same seed gives the same losses with it on and off."""
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    base = ["trainer.save_every=0", "eval.before_training=false", "trainer.eval_every=0",
            "rollout.max_new_tokens=6"]
    on = compose_cfg(*base, "trainer.effective_rank=true", f"run_dir={tmp_path / 'on'}")
    off = compose_cfg(*base, f"run_dir={tmp_path / 'off'}")
    loop.run_training(on, tmp_path / "on", progress=False)
    loop.run_training(off, tmp_path / "off", progress=False)
    rows_on = read_metrics(tmp_path / "on" / "metrics.jsonl")
    rows_off = read_metrics(tmp_path / "off" / "metrics.jsonl")
    assert [r["step"] for r in rows_on] == [1, 2]
    for a, b in zip(rows_on, rows_off):
        assert 1.0 <= a["effective_rank/mean"] <= 6.0 and a["time/effective_rank"] > 0
        assert "effective_rank/mean" not in b
        assert a["loss"] == b["loss"] and a["reward/mean"] == b["reward/mean"]
