"""Sampling in another precision (rollout.dtype) and the truncated importance-sampling correction (trainer.tis_cap)."""

import json
import math

import pytest
import torch

from drox.models.forward import response_logprobs
from drox.rollout.hf import HFRolloutEngine
from drox.trainers import algos


def test_truncated_is_weights_by_hand():
    trainer = torch.tensor([[-1.0, -2.0, -0.5]])
    sampler = torch.tensor([[-1.5, -1.0, -0.7]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w, stats = algos.truncated_is_weights(trainer, sampler, mask, cap=1.5)
    # exp(0.5) = 1.6487 -> capped at 1.5; exp(-1.0) = 0.3679; padding -> 1
    assert w[0].tolist() == pytest.approx([1.5, math.exp(-1.0), 1.0])
    assert stats["tis/weight_mean"] == pytest.approx((1.5 + math.exp(-1.0)) / 2)
    assert stats["tis/truncated_frac"] == pytest.approx(0.5)
    assert stats["tis/mismatch_kl"] == pytest.approx(((-1.5 + 1.0) + (-1.0 + 2.0)) / 2)
    with pytest.raises(ValueError, match="cap"):
        algos.truncated_is_weights(trainer, sampler, mask, cap=0.0)


def test_weighting_a_token_scales_its_gradient_and_keeps_the_clip_branch():
    """Scaling the advantage by w > 0 is the same as scaling the token's loss term by w."""
    logprobs = torch.tensor([[-1.0, -0.3]], requires_grad=True)
    old = torch.tensor([[-1.2, -0.3]])
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    w = torch.tensor([[0.5, 2.0]])
    loss_w, stats_w = algos.policy_loss(logprobs, old, adv * w, mask, agg="seq-mean-token-sum")
    (g_w,) = torch.autograd.grad(loss_w, logprobs)
    loss, stats = algos.policy_loss(logprobs, old, adv, mask, agg="seq-mean-token-sum")
    (g,) = torch.autograd.grad(loss, logprobs)
    assert torch.allclose(g_w, g * w)
    assert stats_w["clip_frac"] == stats["clip_frac"] == 0.5  # token 0: ratio exp(0.2) > 1.2 with A > 0


def test_bf16_sampling_gives_close_but_not_equal_behaviour_logprobs(tiny_policy, compose_cfg):
    model, tok = tiny_policy
    cfg = compose_cfg()
    prompts = ["What is 2 + 3?", "hi"]
    engine = HFRolloutEngine(model, tok, cfg.model, dtype="bfloat16")
    b = engine.generate(prompts, 3, max_new_tokens=6, seed=0)
    with torch.no_grad():
        fp32, _ = response_logprobs(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask)
    diff = (fp32 - b.logprobs).abs()[b.response_mask.bool()]
    assert diff.max() > 0  # another precision: not the trainer's numbers
    assert diff.max() < 0.1  # but the same distribution to bf16 rounding


def test_bf16_sampling_needs_the_static_decode(tiny_policy, compose_cfg):
    model, tok = tiny_policy
    with pytest.raises(ValueError, match="static decode"):
        HFRolloutEngine(model, tok, compose_cfg().model, static_decode=False, dtype="bfloat16")


def test_training_with_bf16_sampling_logs_the_correction(compose_cfg, tmp_path):
    from drox.trainers import loop

    cfg = compose_cfg("rollout.dtype=bfloat16", "trainer.steps=1")
    loop.run_training(cfg, tmp_path / "bf16", progress=False)
    m = [json.loads(x) for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    step = next(x for x in m if "tis/weight_mean" in x)
    assert 0.8 < step["tis/weight_mean"] < 1.2 and step["tis/mismatch_kl"] != 0.0
    # the ratio uses the trainer's own old log-probs: exactly 1 on the first (only) pass
    assert step["ratio_mean"] == pytest.approx(1.0, abs=1e-5)

    cfg = compose_cfg("trainer.steps=1")  # same precision: no correction, no extra pass
    loop.run_training(cfg, tmp_path / "fp32", progress=False)
    m = [json.loads(x) for x in (tmp_path / "fp32" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert not any("tis/weight_mean" in x for x in m)


def test_config_refuses_another_precision_without_the_static_step(compose_cfg, capsys):
    import typer

    with pytest.raises(typer.Exit) as exc:
        compose_cfg("rollout.dtype=bfloat16", "rollout.static_decode=false")
    assert exc.value.exit_code == 2
    assert "set rollout.static_decode=true" in capsys.readouterr().err
    compose_cfg("rollout.dtype=float32", "rollout.static_decode=false")  # the model's own precision: fine
