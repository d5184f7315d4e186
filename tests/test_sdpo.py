"""``reward=sdpo`` (SDPO, arXiv 2601.20802; rewards/sdpo.py): the per-token gap between the feedback-conditioned
teacher and the policy, by hand on a position-lookup LM, the teacher prompts, the options, and two training steps
on the tiny model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from doubles import CharTok, PosLM, encode_left_padded, make_batch

from drox.rewards import sdpo as sdpo_mod
from drox.rewards.base import ScoringContext

V = 128


def _row(p_a):
    """log-probs over V: p('a') = p_a, the other 127 characters share the rest equally."""
    p = torch.full((V,), (1.0 - p_a) / (V - 1))
    p[ord("a")] = p_a
    return p.log()


# positions < 8 (the student's short prompt "p"): p('a') = 0.1; positions >= 8 (after the long teacher prompt): 0.8
TABLE = torch.stack([_row(0.1 if pos < 8 else 0.8) for pos in range(80)])


def verifier(texts, rows):
    return SimpleNamespace(correct=[t == "aa" for t in texts], extracted=[t[-1] for t in texts], timeouts=0)


def make_ctx(table=TABLE, reference=None):
    batch = make_batch(CharTok(), ["p"], ["aa", "ab"], 2)
    engine = SimpleNamespace(encode_prompts=encode_left_padded)
    return ScoringContext(batch=batch, rows=[{"prompt": "p", "answer": "7"}], task=SimpleNamespace(
        name="t", verifier=verifier), policy=PosLM(table), tokenizer=CharTok(), engine=engine, reference=reference)


def test_token_gaps_by_hand():
    """"aa": both tokens 0.1 -> 0.8: ln 8 each. "ab": 'a' ln 8; 'b' (0.9/127) -> (0.2/127): ln(2/9)."""
    out = sdpo_mod.sdpo(make_ctx(), sdpo_mod.SDPOConfig())
    ln8, ln29 = math.log(8), math.log(2 / 9)
    assert out.token[0].flatten().tolist() == pytest.approx([ln8, ln8, ln8, ln29], abs=1e-5)
    assert out.token_mask[0].tolist() == [[True, True], [True, True]] and out.seq.tolist() == [[0.0, 0.0]]
    assert out.diagnostics["gap_seq_mean"] == pytest.approx((2 * ln8 + ln8 + ln29) / 2, abs=1e-5)
    assert out.diagnostics["positive_token_frac"] == 0.75
    seq = sdpo_mod.sdpo(make_ctx(), sdpo_mod.SDPOConfig(dense=False))
    assert seq.seq.flatten().tolist() == pytest.approx([2 * ln8, ln8 + ln29], abs=1e-5) and seq.token is None
    clipped = sdpo_mod.sdpo(make_ctx(), sdpo_mod.SDPOConfig(clip=1.0))
    assert clipped.token[0].flatten().tolist() == pytest.approx([1.0, 1.0, 1.0, -1.0], abs=1e-6)


def test_padding_positions_get_no_reward():
    batch = make_batch(CharTok(), ["p"], ["aaa", "a"], 2)
    ctx = make_ctx()
    ctx.batch = batch
    out = sdpo_mod.sdpo(ctx, sdpo_mod.SDPOConfig())
    assert out.token[0, 1].tolist() == pytest.approx([math.log(8), 0.0, 0.0], abs=1e-5)
    assert out.token_mask[0, 1].tolist() == [True, False, False]


def test_teacher_prompts_for_answer_and_verdict_feedback():
    ctx = make_ctx()
    assert sdpo_mod.teacher_prompts(ctx, sdpo_mod.SDPOConfig()) == [
        "p\n\nFeedback: the correct final answer is 7."] * 2
    assert sdpo_mod.teacher_prompts(ctx, sdpo_mod.SDPOConfig(feedback="verdict")) == [
        "p\n\nFeedback: a previous attempt answered a, which is correct.",
        "p\n\nFeedback: a previous attempt answered b, which is incorrect."]


def test_the_initial_policy_can_be_the_teacher():
    """teacher=initial reads the frozen reference: a flat 0.1 table there gives a gap of 0 on 'a' tokens."""
    flat = torch.stack([_row(0.1) for _ in range(80)])
    out = sdpo_mod.sdpo(make_ctx(reference=lambda: PosLM(flat)), sdpo_mod.SDPOConfig(teacher="initial"))
    assert out.token[0].flatten().tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0], abs=1e-5)


@pytest.mark.parametrize("kw, message", [({"clip": 0.0}, "clip must be > 0"),
                                         ({"template": "{prompt} only"}, "must contain {prompt} and {feedback}")])
def test_bad_options(kw, message):
    with pytest.raises(ValueError, match=message):
        sdpo_mod.SDPOConfig(**kw)


def test_sdpo_trains_beside_the_outcome_on_the_tiny_model(compose_cfg, tmp_path):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg("rollout.max_new_tokens=6", f"run_dir={tmp_path}")
    cfg.reward = {"outcome": {}, "sdpo": {"weight": 0.1}}
    loop.run_training(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["reward/sdpo/gap_token_mean"]) and r["scoring/forward_passes"] >= 2
